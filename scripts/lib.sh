# shellcheck shell=bash
# Helpers shared by scripts/test.sh and scripts/run.sh (sourced, not run):
# section headers, and making sure the local PostgreSQL and RabbitMQ run, with
# TLS listeners that serve a local CA's localhost certificate.

# Prints a section header.
section() {
    printf '\n==== %s ====\n' "$*"
}

# Prints an error line and exits.
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Polls "$@" once a second until it succeeds or $1 seconds have passed.
wait_until() {
    local timeout=$1
    shift
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 1
    done
}

# Installs Debian packages that are missing (root, or sudo when available).
# `apt-get update` runs once per call, only when something must be installed.
apt_install() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    echo "Installing from Debian's packages: ${missing[*]}"
    local started=$SECONDS
    # The test command's background steps install at the same time as the
    # foreground ones: one apt at a time (apt itself fails on a held lock).
    (
        flock 9
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    ) 9>>/tmp/saga-platform-apt.lock
    echo "Installed ${missing[*]} in $((SECONDS - started)) s"
}

# A local certificate authority and a certificate for localhost/127.0.0.1 that
# the local PostgreSQL and RabbitMQ serve on their TLS listeners (what the
# tests of amqps and sslmode=verify-full connect to). Made once; the CA is
# world-readable, each server's key a private copy owned by that server.
SAGA_TLS_DIR=/etc/saga-platform/tls
ensure_tls_material() {
    local dir=$SAGA_TLS_DIR
    [[ -f $dir/ca.pem && -f $dir/server.pem && -f $dir/server-key.pem ]] && return 0
    [[ -w /etc ]] || die "making $dir needs root"
    echo "Making a local CA and a localhost certificate in $dir"
    mkdir -p "$dir"
    chmod 755 /etc/saga-platform "$dir"
    local tmp
    tmp=$(mktemp -d)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=saga-platform local CA" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$tmp/ca-key.pem" -out "$tmp/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$tmp/server-key.pem" -out "$tmp/server.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$tmp/ext"
    openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca-key.pem" \
        -CAcreateserial -days 3650 -extfile "$tmp/ext" -out "$tmp/server.pem" 2>/dev/null
    install -m 644 "$tmp/ca.pem" "$tmp/server.pem" "$dir/"
    install -m 600 "$tmp/server-key.pem" "$dir/"
    rm -rf "$tmp"
}

# Copies the server certificate and key to $dir/$1, owned by user $1 (servers
# refuse or cannot read a key they do not own).
tls_copy_for() {
    local user=$1 dir="$SAGA_TLS_DIR/$1"
    [[ -f $dir/server-key.pem && $dir/server-key.pem -nt $SAGA_TLS_DIR/server-key.pem ]] && return 0
    mkdir -p "$dir"
    install -m 644 -o "$user" "$SAGA_TLS_DIR/server.pem" "$dir/"
    install -m 600 -o "$user" "$SAGA_TLS_DIR/server-key.pem" "$dir/"
}

# The newest PostgreSQL cluster's version (e.g. 15), empty if none.
postgres_version() {
    ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1
}

# Local-development settings for the cluster: passwordless (trust) TCP access
# for the `postgres` superuser on loopback only, and room for the connections
# of many services and tests at once. Written once; returns 0 if it changed
# anything (a restart is then needed).
configure_postgres() {
    local version=$1 dir="/etc/postgresql/$1/main"
    local conf="$dir/conf.d/saga-platform.conf" hba="$dir/pg_hba.conf" marker="# saga-platform: loopback trust"
    local changed=1
    if [[ ! -f $conf ]]; then
        printf '%s
' "# Written by saga-platform scripts/lib.sh (local development and tests)"             "max_connections = 500" "listen_addresses = 'localhost'" >"$conf"
        changed=0
    fi
    # Statement counts for the benchmark's per-saga costs (part of the
    # postgresql package; loaded at start).
    local stats_conf="$dir/conf.d/saga-platform-stats.conf"
    if [[ ! -f $stats_conf && -f /usr/lib/postgresql/$version/lib/pg_stat_statements.so ]]; then
        printf '%s\n' "# Written by saga-platform scripts/lib.sh: statement counts for sagactl bench" \
            "shared_preload_libraries = 'pg_stat_statements'" >"$stats_conf"
        changed=0
    fi
    local tls_conf="$dir/conf.d/saga-platform-tls.conf"
    if [[ ! -f $tls_conf ]]; then
        tls_copy_for postgres
        printf '%s\n' "# Written by saga-platform scripts/lib.sh: TLS with the local CA's localhost certificate" \
            "ssl = on" "ssl_cert_file = '$SAGA_TLS_DIR/postgres/server.pem'" \
            "ssl_key_file = '$SAGA_TLS_DIR/postgres/server-key.pem'" >"$tls_conf"
        changed=0
    fi
    if ! grep -qF "$marker" "$hba"; then
        local tmp
        tmp=$(mktemp)
        printf '%s
' "$marker" "host all postgres 127.0.0.1/32 trust" "host all postgres ::1/128 trust" | cat - "$hba" >"$tmp"
        cat "$tmp" >"$hba" && rm -f "$tmp"
        changed=0
    fi
    return $changed
}

# PostgreSQL on 127.0.0.1:5432, with a working passwordless `postgres`
# superuser connection (what `sagactl up` and the tests use). Installs the
# Debian package when missing and configures the cluster for local use.
ensure_postgres() {
    if ! pg_isready -q -h 127.0.0.1 2>/dev/null; then
        [[ -n $(postgres_version) ]] || apt_install postgresql
        local version
        version=$(postgres_version)
        [[ -n $version ]] || die "no PostgreSQL cluster in /etc/postgresql"
        ensure_tls_material
        configure_postgres "$version" || true
        echo "Starting PostgreSQL $version (cluster main)"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
        wait_until 60 pg_isready -q -h 127.0.0.1 || die "PostgreSQL not ready after 60 s"
        echo "PostgreSQL is up"
    else
        echo "PostgreSQL is up"
        local version
        version=$(postgres_version)
        if [[ -n $version && -w /etc/postgresql/$version/main ]] && ensure_tls_material && configure_postgres "$version"; then
            echo "Restarting PostgreSQL $version to apply the local-development settings"
            pg_ctlcluster --skip-systemctl-redirect "$version" main restart
            wait_until 60 pg_isready -q -h 127.0.0.1 || die "PostgreSQL not ready after 60 s"
        fi
    fi
    psql "postgres://postgres@127.0.0.1:5432/postgres" -XAtqc \
        "select 1 from pg_roles where rolname = current_user and rolsuper" | grep -qx 1 ||
        die "cannot connect to postgres://postgres@127.0.0.1:5432 as a superuser (check pg_hba.conf)"
    echo "PostgreSQL superuser connection works (postgres@127.0.0.1:5432)"
}

# rabbitmqctl bounded in time: seen here once hanging for minutes after
# printing its answer (run as root, it goes through `su rabbitmq`).
rmqctl() {
    timeout --kill-after=5 "${RMQCTL_TIMEOUT:-60}" rabbitmqctl "$@" </dev/null
}

# Whether something accepts connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# RabbitMQ on the local node with the management plugin (HTTP API on 15672),
# the application fully started. Installs the Debian package when missing.
ensure_rabbitmq() {
    apt_install rabbitmq-server
    if [[ ! -f /etc/rabbitmq/enabled_plugins ]] || ! grep -q rabbitmq_management /etc/rabbitmq/enabled_plugins; then
        # --offline: written to the file, loaded when the node (re)starts.
        rabbitmq-plugins -q enable --offline rabbitmq_management >/dev/null </dev/null
        if port_open 5672; then
            timeout --kill-after=5 60 rabbitmq-plugins -q enable rabbitmq_management >/dev/null </dev/null
        fi
    fi
    # Started by hand, the node runs under `su rabbitmq`, whose PAM limits give
    # it 1024 file handles; ~250 queues exhausted them here and the broker
    # stopped completing AMQP handshakes. rabbitmq-env.conf is sourced by the
    # node's start script as the rabbitmq user: raise the soft limit there.
    local env_conf=/etc/rabbitmq/rabbitmq-env.conf marker="# saga-platform: file handles"
    if [[ -w /etc/rabbitmq ]] && ! grep -qF "$marker" "$env_conf" 2>/dev/null; then
        printf '%s\n%s\n' "$marker" 'ulimit -n "$(ulimit -Hn)" 2>/dev/null || true' >>"$env_conf"
    fi
    # The broker shares two cores with PostgreSQL, the services and the load
    # generator: Erlang's schedulers must not busy-wait for work (they do by
    # default, burning CPU the others need). Read when the node starts.
    local sbwt_marker="# saga-platform: no scheduler busy-waiting" restart=false
    if [[ -w /etc/rabbitmq ]] && ! grep -qF "$sbwt_marker" "$env_conf" 2>/dev/null; then
        printf '%s\n%s\n' "$sbwt_marker" 'SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none"' >>"$env_conf"
        restart=true
    fi
    # TLS listeners beside the plain ones: amqps on 5671, the management API
    # over https on 15671 (read when the node starts).
    local tls_conf=/etc/rabbitmq/conf.d/20-saga-platform-tls.conf
    if [[ -w /etc/rabbitmq && ! -f $tls_conf ]]; then
        ensure_tls_material
        tls_copy_for rabbitmq
        mkdir -p /etc/rabbitmq/conf.d
        local d="$SAGA_TLS_DIR/rabbitmq"
        printf '%s\n' "# Written by saga-platform scripts/lib.sh: TLS with the local CA's localhost certificate" \
            "listeners.ssl.default = 5671" "ssl_options.cacertfile = $SAGA_TLS_DIR/ca.pem" \
            "ssl_options.certfile = $d/server.pem" "ssl_options.keyfile = $d/server-key.pem" \
            "ssl_options.verify = verify_none" "ssl_options.fail_if_no_peer_cert = false" \
            "management.tcp.port = 15672" "management.ssl.port = 15671" \
            "management.ssl.cacertfile = $SAGA_TLS_DIR/ca.pem" "management.ssl.certfile = $d/server.pem" \
            "management.ssl.keyfile = $d/server-key.pem" >"$tls_conf"
        restart=true
    fi
    if port_open 5672 && $restart; then
        echo "Restarting RabbitMQ to apply the local settings"
        rmqctl stop >/dev/null || true
        wait_until 60 bash -c '! (exec 3<>/dev/tcp/127.0.0.1/5672)' || die "RabbitMQ did not stop"
    fi
    if port_open 5672; then
        echo "RabbitMQ is up"
    else
        echo "Starting RabbitMQ"
        rabbitmq-server -detached </dev/null
        # The node name (and so its pid file) depends on the local
        # configuration, so poll the port instead of `rabbitmqctl wait PIDFILE`.
        wait_until 90 port_open 5672 || die "RabbitMQ not listening on 5672 after 90 s"
    fi
    RMQCTL_TIMEOUT=90 rmqctl -q await_startup --timeout 60 >/dev/null || die "RabbitMQ did not finish starting within 60 s"
    wait_until 60 port_open 15672 || die "the RabbitMQ management API is not listening on 15672"
    if [[ -f /etc/rabbitmq/conf.d/20-saga-platform-tls.conf ]]; then
        wait_until 30 port_open 5671 || die "RabbitMQ's amqps listener is not listening on 5671"
    fi
    echo "RabbitMQ is ready"
}
