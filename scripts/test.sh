#!/usr/bin/env bash
# THE test command: formatting, lints, build, and every test of the workspace,
# against the local PostgreSQL and RabbitMQ (started here if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

step="start"
trap 'printf "\n==== FAILED: %s ====\n" "$step" >&2' ERR

step="PostgreSQL and RabbitMQ"
section "$step"
ensure_postgres
ensure_rabbitmq

step="cargo fmt --all --check"
section "$step"
cargo fmt --all --check

step="cargo clippy --workspace --all-targets -- -D warnings"
section "$step"
cargo clippy --workspace --all-targets -- -D warnings

step="cargo build --workspace --bins"
section "$step"
cargo build --workspace --bins

step="CRD drift: crds/sagaplatform.yaml matches saga-operator crd"
section "$step"
target/debug/saga-operator crd | diff -u crds/sagaplatform.yaml -

# After the build: it also compares the chart's CRD with `target/debug/saga-operator crd`.
step="Helm chart, CRD and examples (scripts/check-chart.sh)"
section "$step"
scripts/check-chart.sh

# The real Kubernetes API for operator/tests/cluster.rs (built from official
# sources on first use, see k8s/versions.env). Stopped at the end if started here.
step="local Kubernetes control plane (scripts/cluster.sh up)"
section "$step"
if scripts/cluster.sh status >/dev/null 2>&1; then
    cluster_started=false
else
    cluster_started=true
fi
cluster_out=$(mktemp)
scripts/cluster.sh up | tee "$cluster_out"
eval "$(tail -n 2 "$cluster_out")"
rm -f "$cluster_out"
stop_cluster() {
    if [[ $cluster_started == true ]]; then
        scripts/cluster.sh down >/dev/null 2>&1 || true
    fi
}
trap stop_cluster EXIT

if cargo nextest --version >/dev/null 2>&1; then
    step="cargo nextest run --workspace --no-fail-fast (all but the fault suite)"
    section "$step"
    cargo nextest run --workspace --no-fail-fast -E 'not binary(faults)'
    # It stops and starts RabbitMQ and PostgreSQL, so it runs alone.
    step="fault suite: cargo nextest run -p saga-tests --test faults"
    section "$step"
    cargo nextest run -p saga-tests --test faults --no-capture
else
    # cargo test runs one test binary at a time, so the fault suite runs alone.
    step="cargo test --workspace"
    section "$step"
    cargo test --workspace
fi

# Proves the load generator works end to end; numbers are not asserted
# (docs/benchmarks.md has the real runs).
step="benchmark smoke run (scripts/bench.sh, debug build, a few seconds)"
section "$step"
PROFILE=debug DURATION=3 WARMUP=1 CLIENTS=8 RATE=20 scripts/bench.sh

trap - ERR
section "All checks passed"
