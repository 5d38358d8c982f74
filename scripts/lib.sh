# shellcheck shell=bash
# Helpers shared by scripts/test.sh and scripts/run.sh (sourced, not run):
# section headers, and making sure the local PostgreSQL and RabbitMQ run.

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

# PostgreSQL on 127.0.0.1:5432, with a working passwordless `postgres`
# superuser connection (what `sagactl up` and the tests use).
ensure_postgres() {
    if pg_isready -q -h 127.0.0.1; then
        echo "PostgreSQL is up"
    else
        command -v pg_ctlcluster >/dev/null || die "PostgreSQL is not running on 127.0.0.1 and pg_ctlcluster is not installed"
        local version
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        [[ -n $version ]] || die "no PostgreSQL cluster in /etc/postgresql"
        echo "Starting PostgreSQL $version (cluster main)"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start
        wait_until 60 pg_isready -q -h 127.0.0.1 || die "PostgreSQL not ready after 60 s"
        echo "PostgreSQL is up"
    fi
    psql "postgres://postgres@127.0.0.1:5432/postgres" -XAtqc \
        "select 1 from pg_roles where rolname = current_user and rolsuper" | grep -qx 1 ||
        die "cannot connect to postgres://postgres@127.0.0.1:5432 as a superuser (check pg_hba.conf)"
    echo "PostgreSQL superuser connection works (postgres@127.0.0.1:5432)"
}

# RabbitMQ on the local node, with the application fully started.
ensure_rabbitmq() {
    if rabbitmqctl -q status >/dev/null 2>&1; then
        echo "RabbitMQ is up"
    else
        command -v rabbitmq-server >/dev/null || die "RabbitMQ is not running and rabbitmq-server is not installed"
        echo "Starting RabbitMQ"
        rabbitmq-server -detached
        # The node name (and so its pid file) depends on the local
        # configuration, so poll the node instead of `rabbitmqctl wait PIDFILE`.
        wait_until 60 rabbitmqctl -q status || die "RabbitMQ not reachable after 60 s"
    fi
    rabbitmqctl -q await_startup --timeout 60 >/dev/null || die "RabbitMQ did not finish starting within 60 s"
    echo "RabbitMQ is ready"
}
