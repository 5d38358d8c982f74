#!/usr/bin/env bash
# Saga Platform on a local kind cluster, for people with Docker, kind, kubectl
# and helm installed.
#
#   scripts/kind-up.sh            # images + cluster + kind load + chart (dev mode) + SagaPlatform "saga"
#   scripts/kind-up.sh --no-build # reuse images already built
#
# 1. builds the five images with scripts/images.sh (./Dockerfile, tag "dev";
#    on a machine without a registry it builds local stand-ins for the
#    Dockerfile's base images first, see docs/kubernetes.md#images);
# 2. creates the kind cluster "saga" from kind-config.yaml (if missing) and
#    loads the images into it (`kind load docker-image`);
# 3. helm upgrade --install release "saga" in namespace "saga" with
#    examples/values-kind.yaml (operator, dev RabbitMQ + PostgreSQL and their
#    Secrets, the order API on host port 8080);
# 4. kubectl apply -f examples/sagaplatform-kind.yaml, waits for it to be
#    Ready and prints how to call the API.
#
# What runs on our machines (no registry, no internet but package mirrors):
# step 1 only (scripts/images.sh). Steps 2-4 need kind's node image, which
# cannot be obtained here: the script stops after step 1 when kind, kubectl
# or helm is missing, and `kind create cluster` fails when the node image can
# be neither found locally nor pulled. What kind would need
# offline (kind v0.33.0, whose default node image is
# kindest/node:v1.37.0@sha256:a1ed56cf...):
#   - the node image, either as a `docker save` tarball of the published
#     kindest/node made on a connected machine (`docker load -i`), or built
#     with `kind build node-image --type file kubernetes-server-linux-amd64.tar.gz
#     --base-image <base>`, which needs all of:
#       * the base image docker.io/kindest/base:v20260820-69b56db7 (systemd,
#         containerd, runc, crictl, CNI plugins on debian:trixie-slim; its
#         Dockerfile, images/base/ in kind's sources, clones containerd, runc,
#         cri-tools and the CNI plugins from GitHub and downloads Go);
#       * the Kubernetes server tarball (kube-apiserver, -controller-manager,
#         -scheduler and kube-proxy as image tarballs, kubeadm, kubelet,
#         kubectl), made by `make quick-release-images` in the Kubernetes
#         sources, which builds inside registry.k8s.io/build-image/kube-cross
#         and on registry.k8s.io base images;
#       * a registry reachable from the build container serving what it
#         pulls with ctr: registry.k8s.io etcd, coredns and pause at the
#         versions `kubeadm config images list` names, and
#         docker.io/kindest/kindnetd:v20260820-69b56db7,
#         docker.io/kindest/local-path-provisioner:v20260820-69b56db7,
#         docker.io/kindest/local-path-helper:v20260131-7181c60a;
#   - then `kind create cluster --image <that node image>`; `kind load` needs
#     nothing more. The project's real node (scripts/cluster.sh up
#     --real-node) imports the same images into its containerd instead.
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${KIND_CLUSTER:-saga}
# examples/sagaplatform-kind.yaml expects namespace "saga" (its management URL
# names the dev RabbitMQ Service saga-rabbitmq.saga.svc).
namespace=saga
release=saga
tag=dev
build=1
for arg in "$@"; do
    case $arg in
        --no-build) build=0 ;;
        -h | --help) sed -n '2,50p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $arg" >&2; exit 2 ;;
    esac
done

section() { printf '\n==== %s ====\n' "$*"; }

binaries=(saga-operator order-service payment-service inventory-service notification-service)
if ((build)); then
    section "scripts/images.sh"
    scripts/images.sh --tag "$tag"
fi

for tool in kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed (the images are built; see the header of $0)" >&2; exit 1; }
done

section "kind cluster $cluster"
if kind get clusters | grep -qx "$cluster"; then
    echo "cluster $cluster exists"
else
    kind create cluster --name "$cluster" --config kind-config.yaml
fi
kubectl config use-context "kind-$cluster" >/dev/null

section "kind load"
for bin in "${binaries[@]}"; do
    kind load docker-image --name "$cluster" "saga-platform/$bin:$tag"
done

section "helm upgrade --install $release"
helm upgrade --install "$release" charts/saga-platform \
    --namespace "$namespace" --create-namespace \
    -f examples/values-kind.yaml --wait --timeout 5m

section "kubectl apply -f examples/sagaplatform-kind.yaml"
kubectl -n "$namespace" apply -f examples/sagaplatform-kind.yaml

section "waiting for SagaPlatform saga to be Ready"
kubectl -n "$namespace" wait sagaplatform/saga --for=condition=Ready --timeout=5m
kubectl -n "$namespace" get sp saga

secret=$(kubectl -n "$namespace" get secret saga-auth -o jsonpath='{.data.jwt-secret}' | base64 -d)
cat <<EOT

The order API is on http://127.0.0.1:8080 (kind-config.yaml maps host 8080 to node port 30080).
  cargo build -p sagactl
  export AUTH_JWT_SECRET='$secret'
  TOKEN=\$(target/debug/sagactl token --sub alice)
  curl -s -H "Authorization: Bearer \$TOKEN" http://127.0.0.1:8080/api/v1/orders
RabbitMQ management UI: http://127.0.0.1:15672
Tear down: kind delete cluster --name $cluster
EOT
