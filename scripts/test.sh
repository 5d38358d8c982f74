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

if cargo nextest --version >/dev/null 2>&1; then
    step="cargo nextest run --workspace --no-fail-fast"
    section "$step"
    cargo nextest run --workspace --no-fail-fast
else
    step="cargo test --workspace"
    section "$step"
    cargo test --workspace
fi

trap - ERR
section "All checks passed"
