#!/usr/bin/env bash
# Saga Platform on a local kind cluster, for people with Docker, kind, kubectl
# and helm installed. NOT run in this project's CI (no Docker engine there).
#
#   scripts/kind-up.sh            # cluster + images + chart (dev mode) + SagaPlatform "saga"
#   scripts/kind-up.sh --no-build # reuse images already built
#
# 1. creates the kind cluster "saga" from kind-config.yaml (if missing);
# 2. builds the four images from ./Dockerfile (tag "dev") and loads them into kind;
# 3. helm upgrade --install release "saga" in namespace "saga" with
#    examples/values-kind.yaml (operator, dev RabbitMQ + PostgreSQL and their
#    Secrets, the order API on host port 8080);
# 4. kubectl apply -f examples/sagaplatform-kind.yaml, waits for it to be
#    Ready and prints how to call the API.
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
        -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $arg" >&2; exit 2 ;;
    esac
done

for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done

section() { printf '\n==== %s ====\n' "$*"; }

section "kind cluster $cluster"
if kind get clusters | grep -qx "$cluster"; then
    echo "cluster $cluster exists"
else
    kind create cluster --name "$cluster" --config kind-config.yaml
fi
kubectl config use-context "kind-$cluster" >/dev/null

binaries=(saga-operator order-service payment-service inventory-service notification-service)
if ((build)); then
    for bin in "${binaries[@]}"; do
        section "docker build $bin"
        docker build --build-arg BIN="$bin" -t "saga-platform/$bin:$tag" .
    done
fi
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
