#!/usr/bin/env bash
# A local Kubernetes control plane on loopback, from the tools that
# scripts/k8s-build.sh builds from official sources (k8s/versions.env):
#   etcd, kube-apiserver (RBAC and Node authorization, a service-account
#   issuer and keys, a CA generated at start), kube-controller-manager,
#   kube-scheduler, and kwok with one simulated node (pods are scheduled and
#   report Ready without containers).
#
#   scripts/cluster.sh up       # idempotent; waits for the API and the node;
#                               # last two lines: export KUBECONFIG=… / export PATH=…
#   scripts/cluster.sh up --real-node
#                               # the same plus a real node saga-node-0 (containerd,
#                               # runc, kubelet, kube-proxy, a bridge CNI network;
#                               # see scripts/real-node.sh and docs/local-control-plane.md)
#   scripts/cluster.sh status   # what runs
#   scripts/cluster.sh down     # stops what `up` started (by pid) and removes its state
#
# State (certificates, etcd data, logs, pids, kubeconfigs) lives in
# .cluster/ inside the clone (git-ignored); CLUSTER_DIR overrides it.
# Ports (loopback only): etcd 23790/23800, API 16443, controller manager
# 20257, scheduler 20259, kwok 20247; CLUSTER_PORT_OFFSET adds to each.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/lib.sh

state=${CLUSTER_DIR:-$root/.cluster}
bin=$root/k8s/bin
# CLUSTER_PORT_OFFSET shifts every port (a second control plane beside the first).
offset=${CLUSTER_PORT_OFFSET:-0}
api_port=$((16443 + offset))
etcd_port=$((23790 + offset))
etcd_peer_port=$((23800 + offset))
kcm_port=$((20257 + offset))
scheduler_port=$((20259 + offset))
kwok_port=$((20247 + offset))
node=kwok-node
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

pid_of() {
    local file=$state/pids/$1
    [[ -f $file ]] || return 1
    local pid
    pid=$(<"$file")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

kubectl_admin() {
    "$bin/kubectl" --kubeconfig "$state/admin.kubeconfig" "$@"
}

# cert NAME CN [O] [SANS]: a key and a certificate signed by the cluster CA.
cert() {
    local name=$1 cn=$2 org=${3:-} sans=${4:-}
    local subject="/CN=$cn"
    [[ -n $org ]] && subject="/O=$org$subject"
    local ext
    ext=$(mktemp)
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        if [[ -n $sans ]]; then
            echo "extendedKeyUsage=serverAuth,clientAuth"
            echo "subjectAltName=$sans"
        else
            echo "extendedKeyUsage=clientAuth"
        fi
    } >"$ext"
    openssl req -new -newkey rsa:2048 -nodes -keyout "$state/pki/$name.key" -subj "$subject" \
        -out "$state/pki/$name.csr" 2>/dev/null
    openssl x509 -req -in "$state/pki/$name.csr" -CA "$state/pki/ca.crt" -CAkey "$state/pki/ca.key" \
        -CAcreateserial -days 30 -extfile "$ext" -out "$state/pki/$name.crt" 2>/dev/null
    rm -f "$ext" "$state/pki/$name.csr"
}

# kubeconfig NAME CERT: a kubeconfig for the cluster with a client certificate.
kubeconfig() {
    local file=$state/$1.kubeconfig cert=$2
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: saga-local
    cluster:
      server: https://127.0.0.1:$api_port
      certificate-authority: $state/pki/ca.crt
users:
  - name: $1
    user:
      client-certificate: $state/pki/$cert.crt
      client-key: $state/pki/$cert.key
contexts:
  - name: saga-local
    context:
      cluster: saga-local
      user: $1
current-context: saga-local
EOF
}

# The API server's serving certificate also names the `kubernetes` Service's
# ClusterIP and the real node's bridge address: pods reach the API through them.
apiserver_sans="DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1,IP:10.244.1.1"

pki() {
    # A state directory from before the kubelet client certificate: add it.
    if [[ -f $state/pki/ca.crt && ! -f $state/pki/apiserver-kubelet-client.crt ]]; then
        cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
    fi
    [[ -f $state/pki/ca.crt ]] && return 0
    mkdir -p "$state/pki"
    openssl req -x509 -new -newkey rsa:2048 -nodes -days 30 -subj "/CN=saga-local-ca" \
        -keyout "$state/pki/ca.key" -out "$state/pki/ca.crt" 2>/dev/null
    cert apiserver kube-apiserver "" "$apiserver_sans"
    # The API server's client certificate towards kubelets (logs, exec, port-forward).
    cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
    cert admin admin system:masters
    cert controller-manager system:kube-controller-manager
    cert scheduler system:kube-scheduler
    # kwok plays the kubelet of its simulated nodes; it manages nodes and
    # pods cluster-wide, so it runs as an administrator.
    cert kwok kwok system:masters
    openssl genrsa -out "$state/pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$state/pki/sa.key" -pubout -out "$state/pki/sa.pub" 2>/dev/null
    kubeconfig admin admin
    kubeconfig controller-manager controller-manager
    kubeconfig scheduler scheduler
    kubeconfig kwok kwok
}

# start_cmd NAME CMD ARGS…: runs CMD in the background under NAME (its pid in
# pids/NAME, its log in logs/NAME.log), unless NAME already runs.
start_cmd() {
    local name=$1
    shift
    if pid_of "$name" >/dev/null; then
        return 0
    fi
    echo "starting $name"
    setsid "$@" >>"$state/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$state/pids/$name"
}

# start NAME ARGS…: runs k8s/bin/NAME that way.
start() {
    local name=$1
    shift
    start_cmd "$name" "$bin/$name" "$@"
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

api_ready() {
    kubectl_admin get --raw /readyz
}

up() {
    local real_node=false
    [[ ${1:-} == --real-node ]] && real_node=true
    if $real_node; then
        scripts/k8s-build.sh --real-node
    else
        [[ -x $bin/kube-apiserver ]] || scripts/k8s-build.sh
        scripts/k8s-build.sh >/dev/null
    fi
    mkdir -p "$state/logs" "$state/pids" "$state/etcd"
    # Another control plane (another clone's) on our ports would be joined by mistake.
    if ! pid_of etcd >/dev/null && port_in_use "$etcd_port"; then
        die "port $etcd_port is in use by another process (another clone's control plane? scripts/cluster.sh down there)"
    fi
    if ! pid_of kube-apiserver >/dev/null && port_in_use "$api_port"; then
        die "port $api_port is in use by another process (another clone's control plane? scripts/cluster.sh down there)"
    fi
    pki

    start etcd --name saga-local --data-dir "$state/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
        --initial-cluster "saga-local=http://127.0.0.1:$etcd_peer_port" \
        --listen-metrics-urls "" --unsafe-no-fsync --quota-backend-bytes 2147483648 --log-level warn

    start kube-apiserver --bind-address 127.0.0.1 --secure-port "$api_port" --advertise-address 127.0.0.1 \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --tls-cert-file "$state/pki/apiserver.crt" --tls-private-key-file "$state/pki/apiserver.key" \
        --client-ca-file "$state/pki/ca.crt" \
        --authorization-mode Node,RBAC --anonymous-auth=false \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$state/pki/sa.pub" --service-account-signing-key-file "$state/pki/sa.key" \
        --api-audiences https://kubernetes.default.svc.cluster.local \
        --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
        --kubelet-client-certificate "$state/pki/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$state/pki/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types InternalIP \
        --enable-admission-plugins PodNodeSelector,PodTolerationRestriction \
        --allow-privileged=true --profiling=false --v 1

    wait_until 120 api_ready || die "kube-apiserver not ready after 120 s (see $state/logs/kube-apiserver.log)"

    start kube-controller-manager --kubeconfig "$state/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false \
        --service-account-private-key-file "$state/pki/sa.key" --root-ca-file "$state/pki/ca.crt" \
        --use-service-account-credentials=true --cluster-name saga-local \
        --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route,-persistentvolume-binder,-attachdetach,-persistentvolume-expander' \
        --concurrent-gc-syncs 5 --profiling=false --v 1

    start kube-scheduler --kubeconfig "$state/scheduler.kubeconfig" \
        --authentication-kubeconfig "$state/scheduler.kubeconfig" \
        --authorization-kubeconfig "$state/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$scheduler_port" --leader-elect=false --profiling=false --v 1

    start kwok --kubeconfig "$state/kwok.kubeconfig" --server-address "127.0.0.1:$kwok_port" \
        --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
        --cidr 10.244.0.0/24 --node-ip 10.243.0.1 --node-lease-duration-seconds 40

    if ! kubectl_admin get node "$node" >/dev/null 2>&1; then
        kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $node
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $node
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
spec: {}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "500"}
  capacity: {cpu: "32", memory: 256Gi, pods: "500"}
EOF
    fi
    kubectl_admin wait --for=condition=Ready "node/$node" --timeout=120s >/dev/null ||
        die "node $node not Ready after 120 s (see $state/logs/kwok.log)"
    # Namespaces get their `default` ServiceAccount from the controller manager.
    wait_until 60 kubectl_admin -n default get serviceaccount default ||
        die "the controller manager created no ServiceAccount (see $state/logs/kube-controller-manager.log)"
    echo "control plane ready: API https://127.0.0.1:$api_port, node $node (kwok)"
    if $real_node; then
        real_node_up
    fi
    echo "export KUBECONFIG=$state/admin.kubeconfig"
    echo "export PATH=$bin:\$PATH"
}

status() {
    if [[ -d $state/node ]]; then
        real_node_status || true
    fi
    local name pid running=0
    for name in "${components[@]}"; do
        if pid=$(pid_of "$name"); then
            echo "$name: running (pid $pid)"
            running=$((running + 1))
        else
            echo "$name: stopped"
        fi
    done
    if ((running)) && api_ready >/dev/null 2>&1; then
        echo "API: ready at https://127.0.0.1:$api_port (KUBECONFIG=$state/admin.kubeconfig)"
    fi
    ((running == ${#components[@]}))
}

down() {
    local name pid i
    if [[ -d $state/node ]]; then
        real_node_down
    fi
    for ((i = ${#components[@]} - 1; i >= 0; i--)); do
        name=${components[i]}
        if pid=$(pid_of "$name"); then
            echo "stopping $name (pid $pid)"
            kill "$pid" 2>/dev/null || true
            wait_until 20 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$state"
    echo "control plane stopped, $state removed"
}

# The real node (up --real-node): its functions use the helpers above.
source scripts/real-node.sh

case ${1:-} in
    up) up "${2:-}" ;;
    down) down ;;
    status) status ;;
    *)
        echo "usage: scripts/cluster.sh up [--real-node]|down|status" >&2
        exit 2
        ;;
esac
