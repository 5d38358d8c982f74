# shellcheck shell=bash
# The real node of `scripts/cluster.sh up --real-node` (sourced by
# scripts/cluster.sh, whose helpers and variables it uses: state, root, bin,
# api_port, start/pid_of/cert/kubeconfig/kubectl_admin, wait_until, die).
#
# saga-node-0 is this machine, as a Kubernetes node:
#   - containerd (Debian's 1.6, a separate instance: own config, root, state
#     and socket under $state/node/containerd; CRI v1; restrict_oom_score_adj)
#     with runc and the pause image built by `scripts/k8s-build.sh --real-node`;
#   - a CNI bridge network: bridge saga0 at 10.244.1.1/24 (pods 10.244.1.2-254),
#     Debian's containernetworking-plugins (bridge, host-local, portmap, loopback);
#   - kubelet (node IP 10.244.1.1, cgroupfs on cgroup v1, registered with the
#     taint saga.dev/real-node=true:NoSchedule) and kube-proxy (iptables mode);
#   - the API server for pods: the `kubernetes` Service (10.96.0.1:443) has the
#     endpoint 10.244.1.1:$api_port, where a socat relay forwards to the API
#     server on 127.0.0.1 (the API server itself keeps listening on loopback);
#   - PostgreSQL and RabbitMQ of this machine (scripts/lib.sh) for pods on
#     10.244.1.1:5432/5672/15672: iptables DNATs those, from the bridge only, to
#     127.0.0.1 (route_localnet on saga0), so PostgreSQL sees the pod's address
#     and pg_hba admits only the password user saga_node from 10.244.1.0/24
#     (scram-sha-256); RabbitMQ gets a user saga_node (guest is loopback-only);
#   - namespace saga-real whose pods all go to saga-node-0 (PodNodeSelector and
#     PodTolerationRestriction annotations), with the Secrets saga-broker,
#     saga-db and saga-auth that examples/*-real-node.yaml use;
#   - the saga-platform/*:dev images of the local Docker engine, imported into
#     the node's containerd (`docker save | ctr images import`), never pulled.
# Everything stays on this machine: iptables drops forwarded traffic that
# enters or leaves the bridge from or to any other interface, pods' DNS goes
# to 10.244.1.1 only, and the ClusterIP range is routed into the bridge.

rn_name=saga-node-0
rn_bridge=saga0
rn_cidr=10.244.1.0/24
rn_gw=10.244.1.1
rn_ns=saga-real
rn_taint=saga.dev/real-node
rn_images=(saga-operator order-service payment-service inventory-service notification-service)
rn_dir=$state/node
rn_bin=$root/k8s/bin/node
rn_sock=$rn_dir/containerd/containerd.sock
rn_components=(containerd apiserver-relay kubelet kube-proxy)
rn_db_user=saga_node
rn_pg_marker="# saga-platform: real node pods (scripts/real-node.sh)"

rn_ctr() {
    ctr -a "$rn_sock" -n k8s.io "$@"
}

stop_pid() {
    local name=$1 pid
    if pid=$(pid_of "$name"); then
        echo "stopping $name (pid $pid)"
        kill "$pid" 2>/dev/null || true
        wait_until 20 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$state/pids/$name"
}

rn_pki() {
    [[ -f $state/pki/node.crt ]] || cert node "system:node:$rn_name" system:nodes
    [[ -f $state/pki/kube-proxy.crt ]] || cert kube-proxy system:kube-proxy
    [[ -f $state/node.kubeconfig ]] || kubeconfig node node
    [[ -f $state/kube-proxy.kubeconfig ]] || kubeconfig kube-proxy kube-proxy
}

rn_sysctl() {
    local key=$1 value=$2 file=/proc/sys/${1//.//}
    if ! grep -q "^$key=" "$rn_dir/sysctl.saved" 2>/dev/null; then
        echo "$key=$(<"$file")" >>"$rn_dir/sysctl.saved"
    fi
    echo "$value" >"$file"
}

# ipt TABLE RULE…: adds RULE unless it is there.
ipt() {
    local table=$1
    shift
    iptables -w -t "$table" -C "$@" 2>/dev/null || iptables -w -t "$table" -A "$@"
}

rn_network() {
    if ! ip link show "$rn_bridge" >/dev/null 2>&1; then
        ip link add "$rn_bridge" type bridge
    fi
    ip addr replace "$rn_gw/24" dev "$rn_bridge"
    ip link set "$rn_bridge" up
    # ClusterIPs that kube-proxy does not (or not yet) translate go into the
    # bridge, never to the default route.
    ip route replace 10.96.0.0/16 dev "$rn_bridge" src "$rn_gw"
    rn_sysctl net.ipv4.ip_forward 1
    rn_sysctl net.bridge.bridge-nf-call-iptables 1
    rn_sysctl "net.ipv4.conf.$rn_bridge.route_localnet" 1
    # Forwarding only within the bridge: pods reach each other and the host,
    # nothing else, and nothing else reaches them.
    iptables -w -N SAGA-NODE-FORWARD 2>/dev/null || iptables -w -F SAGA-NODE-FORWARD
    iptables -w -A SAGA-NODE-FORWARD -i "$rn_bridge" -o "$rn_bridge" -j ACCEPT
    iptables -w -A SAGA-NODE-FORWARD -i "$rn_bridge" -j DROP
    iptables -w -A SAGA-NODE-FORWARD -o "$rn_bridge" -j DROP
    iptables -w -C FORWARD -j SAGA-NODE-FORWARD 2>/dev/null || iptables -w -I FORWARD 1 -j SAGA-NODE-FORWARD
    # PostgreSQL and RabbitMQ (loopback listeners) for pods, on the bridge address.
    iptables -w -t nat -N SAGA-NODE-HOST 2>/dev/null || iptables -w -t nat -F SAGA-NODE-HOST
    local port
    for port in 5432 5672 15672; do
        iptables -w -t nat -A SAGA-NODE-HOST -i "$rn_bridge" -d "$rn_gw" -p tcp --dport "$port" \
            -j DNAT --to-destination "127.0.0.1:$port"
    done
    iptables -w -t nat -C PREROUTING -j SAGA-NODE-HOST 2>/dev/null || iptables -w -t nat -I PREROUTING 1 -j SAGA-NODE-HOST
    mkdir -p "$rn_dir/cni/net.d" "$rn_dir/cni/ipam"
    cat >"$rn_dir/cni/net.d/10-saga-node.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "saga-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$rn_bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$rn_dir/cni/ipam",
        "ranges": [[{"subnet": "$rn_cidr", "gateway": "$rn_gw"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    printf 'nameserver %s\noptions ndots:5\n' "$rn_gw" >"$rn_dir/resolv.conf"
}

rn_containerd() {
    mkdir -p "$rn_dir/containerd"
    cat >"$rn_dir/containerd/config.toml" <<EOF
# The real node's containerd (scripts/real-node.sh): separate from any other.
version = 2
root = "$rn_dir/containerd/root"
state = "$rn_dir/containerd/state"
plugin_dir = ""
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$rn_sock"
[ttrpc]
  address = "$rn_sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$rn_dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:$PAUSE_VERSION"
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$rn_bin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$rn_dir/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
EOF
    # No registry is ever contacted: any pull (an image that was not imported,
    # with a pull policy that allows pulling) goes to a proxy on 127.0.0.1:9
    # where nothing listens, and fails at once, without even a DNS lookup.
    start_cmd containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
        http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 no_proxy= \
        containerd --config "$rn_dir/containerd/config.toml"
    wait_until 60 rn_ctr version || die "containerd not answering on $rn_sock (see $state/logs/containerd.log)"
    if ! rn_ctr images ls -q | grep -qx "registry.k8s.io/pause:$PAUSE_VERSION"; then
        python3 scripts/oci-image.py "$rn_dir/pause.tar" "registry.k8s.io/pause:$PAUSE_VERSION" /pause 65535:65535 \
            "$rn_bin/pause=/pause"
        rn_ctr images import "$rn_dir/pause.tar" >/dev/null ||
            die "importing the pause image into containerd failed"
    fi
}

# The :dev images of the local Docker engine, when it has them; re-imported
# when Docker's image ID changed.
rn_images() {
    local docker=/usr/bin/docker image ref id
    if ! [[ -x $docker ]] || ! "$docker" info >/dev/null 2>&1; then
        echo "warning: no Docker engine answers: the saga-platform/*:dev images are not imported (scripts/images.sh builds them)" >&2
        return 0
    fi
    mkdir -p "$rn_dir/images"
    for image in "${rn_images[@]}"; do
        local ref=saga-platform/$image:dev
        if ! id=$("$docker" image inspect -f '{{.Id}}' "$ref" 2>/dev/null); then
            echo "warning: $ref is not in Docker (scripts/images.sh builds it): not imported" >&2
            continue
        fi
        if [[ $(cat "$rn_dir/images/$image.id" 2>/dev/null) == "$id" ]] && rn_ctr images ls -q | grep -qx "docker.io/$ref"; then
            continue
        fi
        local t=$SECONDS
        "$docker" save "$ref" | rn_ctr images import - >/dev/null || die "importing $ref into the node's containerd failed"
        echo "$id" >"$rn_dir/images/$image.id"
        echo "imported $ref into the node's containerd ($((SECONDS - t)) s)"
    done
}

# The `kubernetes` Service's endpoint for pods: the relay on the bridge address.
rn_api_endpoint() {
    start_cmd apiserver-relay socat "TCP-LISTEN:$api_port,bind=$rn_gw,reuseaddr,fork" "TCP:127.0.0.1:$api_port"
    kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Endpoints
metadata:
  name: kubernetes
  namespace: default
  labels:
    endpointslice.kubernetes.io/skip-mirror: "true"
subsets:
  - addresses: [{ip: $rn_gw}]
    ports: [{name: https, port: $api_port, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: saga-platform-cluster-sh
addressType: IPv4
endpoints:
  - addresses: [$rn_gw]
    conditions: {ready: true}
ports:
  - {name: https, port: $api_port, protocol: TCP}
EOF
}

rn_kubelet() {
    mkdir -p "$rn_dir/kubelet"
    cat >"$rn_dir/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $rn_gw
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://$rn_sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDNS: [$rn_gw]
clusterDomain: cluster.local
resolvConf: $rn_dir/resolv.conf
podLogsDir: $rn_dir/pod-logs
podCIDR: $rn_cidr
maxPods: 60
evictionHard:
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
registerWithTaints:
  - {key: $rn_taint, value: "true", effect: NoSchedule}
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
EOF
    start_cmd kubelet "$rn_bin/kubelet" --config "$rn_dir/kubelet/config.yaml" \
        --kubeconfig "$state/node.kubeconfig" --root-dir "$rn_dir/kubelet/root" \
        --cert-dir "$rn_dir/kubelet/pki" --hostname-override "$rn_name" --node-ip "$rn_gw" \
        --node-labels "saga.dev/node=real" --v 1
    wait_until 90 kubectl_admin get node "$rn_name" || die "kubelet did not register $rn_name (see $state/logs/kubelet.log)"
    kubectl_admin wait --for=condition=Ready "node/$rn_name" --timeout=120s >/dev/null ||
        die "node $rn_name not Ready after 120 s (see $state/logs/kubelet.log, containerd.log)"
}

rn_kube_proxy() {
    mkdir -p "$rn_dir/kube-proxy"
    cat >"$rn_dir/kube-proxy/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $state/kube-proxy.kubeconfig
hostnameOverride: $rn_name
mode: iptables
clusterCIDR: 10.244.0.0/16
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$rn_gw/32"]
iptables:
  # Pod -> Service -> pod on the same bridge: the reply must come back
  # through the host to be un-NATed.
  masqueradeAll: true
  localhostNodePorts: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
    start_cmd kube-proxy "$rn_bin/kube-proxy" --config "$rn_dir/kube-proxy/config.yaml" --v 1
    wait_until 60 bash -c "iptables -w -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 10.96.0.1/32" ||
        die "kube-proxy programmed no rule for the kubernetes Service (see $state/logs/kube-proxy.log)"
}

rn_secret_value() {
    cat "$rn_dir/credentials/$1" 2>/dev/null
}

# The machine's PostgreSQL and RabbitMQ, with a password user for the pods.
rn_backends() {
    ensure_postgres >/dev/null
    ensure_rabbitmq >/dev/null
    mkdir -p "$rn_dir/credentials"
    chmod 700 "$rn_dir/credentials"
    [[ -f $rn_dir/credentials/password ]] || openssl rand -hex 16 >"$rn_dir/credentials/password"
    [[ -f $rn_dir/credentials/jwt-secret ]] || openssl rand -hex 32 >"$rn_dir/credentials/jwt-secret"
    local pw
    pw=$(rn_secret_value password)
    local psql=(psql "postgres://postgres@127.0.0.1:5432/postgres" -XAtq -v ON_ERROR_STOP=1)
    "${psql[@]}" -c "do \$\$ begin
        if not exists (select 1 from pg_roles where rolname = '$rn_db_user') then
            create role $rn_db_user login createdb;
        end if;
    end \$\$;" -c "alter role $rn_db_user password '$pw'" >/dev/null
    local db
    for db in order payment inventory notification; do
        "${psql[@]}" -c "select 1 from pg_database where datname = 'saga_real_$db'" | grep -qx 1 ||
            "${psql[@]}" -c "create database saga_real_$db owner $rn_db_user" >/dev/null
    done
    local version hba
    version=$(postgres_version)
    hba=/etc/postgresql/$version/main/pg_hba.conf
    if ! grep -qF "$rn_pg_marker" "$hba"; then
        printf '%s\n%s\n' "$rn_pg_marker" "host all $rn_db_user $rn_cidr scram-sha-256" >>"$hba"
        "${psql[@]}" -c "select pg_reload_conf()" >/dev/null
    fi
    if rmqctl -q list_users | grep -q "^$rn_db_user\b"; then
        rmqctl -q change_password "$rn_db_user" "$pw" >/dev/null
    else
        rmqctl -q add_user "$rn_db_user" "$pw" >/dev/null
    fi
    rmqctl -q set_user_tags "$rn_db_user" monitoring >/dev/null
    rmqctl -q set_permissions -p / "$rn_db_user" '.*' '.*' '.*' >/dev/null
}

# Namespace saga-real: every pod goes to the real node; the Secrets of the examples.
rn_namespace() {
    local pw jwt
    pw=$(rn_secret_value password)
    jwt=$(rn_secret_value jwt-secret)
    kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $rn_ns
  annotations:
    scheduler.alpha.kubernetes.io/node-selector: kubernetes.io/hostname=$rn_name
    scheduler.alpha.kubernetes.io/defaultTolerations: '[{"key": "$rn_taint", "operator": "Exists", "effect": "NoSchedule"}]'
---
apiVersion: v1
kind: Secret
metadata: {name: saga-broker, namespace: $rn_ns}
stringData:
  url: amqp://$rn_db_user:$pw@$rn_gw:5672/%2f
---
apiVersion: v1
kind: Secret
metadata: {name: saga-db, namespace: $rn_ns}
stringData:
  order: postgres://$rn_db_user:$pw@$rn_gw:5432/saga_real_order
  payment: postgres://$rn_db_user:$pw@$rn_gw:5432/saga_real_payment
  inventory: postgres://$rn_db_user:$pw@$rn_gw:5432/saga_real_inventory
  notification: postgres://$rn_db_user:$pw@$rn_gw:5432/saga_real_notification
---
apiVersion: v1
kind: Secret
metadata: {name: saga-auth, namespace: $rn_ns}
stringData:
  jwt-secret: $jwt
EOF
}

real_node_up() {
    local t0=$SECONDS
    source k8s/versions.env
    [[ -x $rn_bin/kubelet ]] || die "k8s/bin/node/kubelet missing (scripts/k8s-build.sh --real-node)"
    if [[ ! -d $rn_dir ]] && ip link show "$rn_bridge" >/dev/null 2>&1; then
        die "bridge $rn_bridge exists but $rn_dir does not: another clone's real node? (scripts/cluster.sh down there)"
    fi
    local apiserver
    apiserver=$(pid_of kube-apiserver) || die "kube-apiserver is not running"
    tr '\0' ' ' <"/proc/$apiserver/cmdline" | grep -q -- --kubelet-client-certificate ||
        die "this control plane was started without the real node's API server settings: scripts/cluster.sh down, then up --real-node"
    for cmd in containerd ctr socat conntrack iptables; do
        command -v "$cmd" >/dev/null || apt_install containerd socat conntrack iptables
    done
    [[ -x /usr/lib/cni/bridge ]] || apt_install containernetworking-plugins
    mkdir -p "$rn_dir"
    rn_pki
    rn_network
    rn_containerd
    rn_api_endpoint
    rn_kubelet
    rn_kube_proxy
    rn_backends
    rn_namespace
    rn_images
    echo "real node ready: $rn_name (pods $rn_cidr on bridge $rn_bridge), namespace $rn_ns, in $((SECONDS - t0)) s"
}

real_node_status() {
    local name pid
    for name in "${rn_components[@]}"; do
        if pid=$(pid_of "$name"); then
            echo "$name: running (pid $pid)"
        else
            echo "$name: stopped"
        fi
    done
}

# Network namespaces of the node's pod sandboxes (from containerd's records).
rn_netns_of_sandboxes() {
    local id
    for id in $(rn_ctr containers ls -q 2>/dev/null); do
        rn_ctr containers info "$id" 2>/dev/null | python3 -c '
import json, sys
spec = json.load(sys.stdin).get("Spec") or {}
for ns in (spec.get("linux") or {}).get("namespaces") or []:
    if ns.get("type") == "network" and ns.get("path"):
        print(ns["path"])'
    done | sort -u
}

real_node_down() {
    echo "removing the real node $rn_name"
    stop_pid kubelet
    stop_pid kube-proxy
    stop_pid apiserver-relay
    local netns=() ids=() id
    if pid_of containerd >/dev/null; then
        mapfile -t netns < <(rn_netns_of_sandboxes)
        mapfile -t ids < <(rn_ctr containers ls -q 2>/dev/null)
        for id in $(rn_ctr tasks ls -q 2>/dev/null); do
            rn_ctr tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
        done
        sleep 1
        for id in $(rn_ctr tasks ls -q 2>/dev/null); do
            rn_ctr tasks delete -f "$id" >/dev/null 2>&1 || true
        done
        for id in $(rn_ctr containers ls -q 2>/dev/null); do
            rn_ctr containers delete "$id" >/dev/null 2>&1 || true
        done
    fi
    stop_pid containerd
    # containerd's shims outlive it: those of this containerd name its socket.
    local p
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "-address $rn_sock "; then
            echo "stopping containerd-shim (pid ${p#/proc/})"
            kill -9 "${p#/proc/}" 2>/dev/null || true
        fi
    done
    local ns
    for ns in "${netns[@]}"; do
        [[ -e $ns ]] || continue
        ip netns delete "$(basename "$ns")" 2>/dev/null || { umount "$ns" 2>/dev/null; rm -f "$ns"; }
    done
    # Mounts under the node's directories (kubelet volumes, containerd's
    # rootfs and shm), deepest first.
    local m
    while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(awk -v d="$rn_dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
    # kube-proxy's rules and chains (iptables and ip6tables), then ours.
    if [[ -x $rn_bin/kube-proxy ]]; then
        "$rn_bin/kube-proxy" --cleanup >>"$state/logs/kube-proxy.log" 2>&1 || true
    fi
    # The kubelet's own chains (KUBE-FIREWALL, canaries, the hint), which
    # kube-proxy --cleanup leaves.
    local ipt t chain
    for ipt in iptables ip6tables; do
        $ipt -w -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
        $ipt -w -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
        for t in filter nat mangle; do
            for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
                $ipt -w -t "$t" -F "$chain" 2>/dev/null && $ipt -w -t "$t" -X "$chain" 2>/dev/null || true
            done
        done
    done
    iptables -w -D FORWARD -j SAGA-NODE-FORWARD 2>/dev/null || true
    iptables -w -F SAGA-NODE-FORWARD 2>/dev/null && iptables -w -X SAGA-NODE-FORWARD 2>/dev/null || true
    iptables -w -t nat -D PREROUTING -j SAGA-NODE-HOST 2>/dev/null || true
    iptables -w -t nat -F SAGA-NODE-HOST 2>/dev/null && iptables -w -t nat -X SAGA-NODE-HOST 2>/dev/null || true
    # libcni's cache of the pods' network results (containerd's CRI keeps the default dir).
    rm -f /var/lib/cni/results/saga-node-* 2>/dev/null || true
    for id in "${ids[@]}"; do
        rm -f "/var/lib/cni/results/cni-loopback-$id-lo" 2>/dev/null || true
    done
    # The bridge (its route goes with it) and any veth left on it.
    local veth
    for veth in $(ip -o link show master "$rn_bridge" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
        ip link delete "$veth" 2>/dev/null || true
    done
    ip link delete "$rn_bridge" 2>/dev/null || true
    # sysctls back to what they were.
    if [[ -f $rn_dir/sysctl.saved ]]; then
        while IFS== read -r key value; do
            [[ $key == *"$rn_bridge"* ]] && continue
            echo "$value" >"/proc/sys/${key//.//}" 2>/dev/null || true
        done <"$rn_dir/sysctl.saved"
    fi
    # The kubelet's pod cgroups (cgroup v1, cgroupfs driver).
    local c
    for c in /sys/fs/cgroup/*/kubepods; do
        [[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
    # The pods' user of PostgreSQL and RabbitMQ, and their databases.
    local version hba
    version=$(postgres_version)
    hba=/etc/postgresql/$version/main/pg_hba.conf
    if [[ -n $version ]] && grep -qF "$rn_pg_marker" "$hba" 2>/dev/null; then
        local tmp
        tmp=$(mktemp)
        grep -vF -e "$rn_pg_marker" -e "host all $rn_db_user $rn_cidr scram-sha-256" "$hba" >"$tmp" && cat "$tmp" >"$hba"
        rm -f "$tmp"
    fi
    if pg_isready -q -h 127.0.0.1 2>/dev/null; then
        local psql=(psql "postgres://postgres@127.0.0.1:5432/postgres" -XAtq)
        "${psql[@]}" -c "select pg_reload_conf()" >/dev/null 2>&1 || true
        local db
        for db in $("${psql[@]}" -c "select datname from pg_database d join pg_roles r on r.oid = d.datdba where r.rolname = '$rn_db_user'" 2>/dev/null); do
            "${psql[@]}" -c "drop database \"$db\" with (force)" >/dev/null 2>&1 || true
        done
        "${psql[@]}" -c "drop role if exists $rn_db_user" >/dev/null 2>&1 || true
    fi
    if port_open 5672 2>/dev/null; then
        rmqctl -q delete_user "$rn_db_user" >/dev/null 2>&1 || true
    fi
    echo "real node removed"
}
