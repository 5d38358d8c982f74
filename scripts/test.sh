#!/usr/bin/env bash
# THE test command: formatting, lints, build, and every test of the workspace,
# against the local PostgreSQL and RabbitMQ and a local Kubernetes control
# plane (installed, built and started here if needed). Each step's duration is
# printed, and a summary at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

step="start"
step_started=$SECONDS
timings=()
# begin NAME: ends the current step (records its time) and starts NAME.
begin() {
    if [[ $step != start ]]; then
        timings+=("$(printf '%5d s  %s' $((SECONDS - step_started)) "$step")")
    fi
    step=$1
    step_started=$SECONDS
    section "$step"
}
trap 'printf "\n==== FAILED: %s (after %d s) ====\n" "$step" $((SECONDS - step_started)) >&2' ERR

begin "PostgreSQL and RabbitMQ"
ensure_postgres
ensure_rabbitmq
# The SMTP server of tests/tests/notifications.rs (PyPI aiosmtpd in .venv-smtp).
scripts/smtp-sink.sh

# Long builds run in the background, each in its own session and at the
# lowest CPU priority (nice 19): the foreground steps run as fast as if alone,
# and the background ones take the cycles the foreground leaves idle (the
# tail of a compile, the waits of the tests). `background NAME CMD...` starts
# one; `await NAME` waits for it, prints its log and fails the step if it did.
mkdir -p target
declare -A bg_pid=() bg_log=()
background() {
    local name=$1
    shift
    bg_log[$name]=target/bg-$name.log
    setsid nice -n 19 "$@" >"${bg_log[$name]}" 2>&1 &
    bg_pid[$name]=$!
    echo "started in the background: $* (log: ${bg_log[$name]})"
}
await() {
    local name=$1 status=0
    wait "${bg_pid[$name]}" || status=$?
    cat "${bg_log[$name]}"
    unset "bg_pid[$name]"
    ((status == 0)) || die "background step $name failed (exit $status; log: ${bg_log[$name]})"
}

# The Go builds (long on a cold machine): the control plane, Prometheus and
# promtool (the alert tests and operator/tests/prometheus.rs), Jaeger
# (tests/tests/tracing.rs).
background k8s scripts/k8s-build.sh --real-node
background prometheus scripts/prometheus-build.sh
background jaeger scripts/jaeger-build.sh
# Supply chain and fuzzing (docs/reliability.md): installs cargo-deny and
# cargo-fuzz when missing, then checks offline and fuzzes each target.
background supply-chain scripts/supply-chain.sh
# The five images from ./Dockerfile on local stand-ins of its base images
# (docs/kubernetes.md, "Images"): a Docker engine, the stand-ins, one release
# compile of the workspace inside the build stage. For the real node's tests.
background images scripts/images.sh --check
cluster_started=false
cleanup() {
    # Each background step runs in its own session (setsid): end its go,
    # cargo and compile processes too, not only the script.
    local pid
    for pid in "${bg_pid[@]}"; do
        kill -- "-$pid" 2>/dev/null || true
    done
    if [[ $cluster_started == true ]]; then
        scripts/cluster.sh down >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

begin "cargo fmt --all --check"
cargo fmt --all --check

begin "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

begin "cargo build --workspace --bins"
cargo build --workspace --bins

# The OpenAPI documents against the running services (docs/usage.md): a
# platform of its own, every service as a customer and as an admin.
begin "schemathesis against every service's /api/openapi.json (scripts/schemathesis.sh)"
scripts/schemathesis.sh

# The saga explorer in headless Chromium (docs/explorer.md): installs Debian's
# chromium, fonts and playwright-core when missing, then the browser test on a
# platform of its own (cold: about 1 min, 32 s of it installs, 23 s the test).
begin "saga explorer in headless Chromium (scripts/explorer-test.sh)"
scripts/explorer-test.sh

begin "CRD drift: crds/sagaplatform.yaml matches saga-operator crd"
target/debug/saga-operator crd | diff -u crds/sagaplatform.yaml -

# After the build: it also compares the chart's CRD with `target/debug/saga-operator crd`.
begin "Helm chart, CRD and examples (scripts/check-chart.sh)"
scripts/check-chart.sh

# The real Kubernetes API for operator/tests/cluster.rs (see
# docs/local-control-plane.md). Stopped at the end if started here.
begin "local Kubernetes control plane (scripts/k8s-build.sh, scripts/cluster.sh up)"
await k8s
scripts/cluster.sh status >/dev/null 2>&1 || cluster_started=true
cluster_out=$(mktemp)
scripts/cluster.sh up | tee "$cluster_out"
eval "$(tail -n 2 "$cluster_out")"
rm -f "$cluster_out"

# The chart's alerts as rendered: promtool check rules, promtool test rules
# (prometheus/alerts.test.yml). Prometheus itself scrapes a platform under load
# in operator/tests/prometheus.rs, among the tests below.
begin "Prometheus built (scripts/prometheus-build.sh); promtool check + test rules (scripts/prometheus-rules.sh)"
await prometheus
scripts/prometheus-rules.sh

# tests/tests/tracing.rs runs observability/bin/jaeger.
begin "Jaeger (scripts/jaeger-build.sh, built in the background)"
await jaeger

# Started at the beginning, in the background.
begin "cargo deny check and fuzz targets, ${FUZZ_SECONDS:-30} s each (scripts/supply-chain.sh)"
await supply-chain

if cargo nextest --version >/dev/null 2>&1; then
    begin "cargo nextest run --workspace --no-fail-fast (all but the fault suite)"
    SAGA_REAL_NODE_TESTS=skip cargo nextest run --workspace --no-fail-fast -E 'not binary(faults) and not binary(real_node)'
    # It stops and starts RabbitMQ and PostgreSQL, so it runs alone.
    begin "fault suite: cargo nextest run -p saga-tests --test faults"
    cargo nextest run -p saga-tests --test faults --no-capture
else
    # cargo test runs one test binary at a time, so the fault suite runs alone.
    begin "cargo test --workspace (real-node tests apart, below)"
    SAGA_REAL_NODE_TESTS=skip cargo test --workspace
fi

# Real pods (docs/local-control-plane.md, "A real node"): the images built in
# the background, the real node added to the control plane above, then the
# chart, the operator and the four services as containers on it.
begin "images (scripts/images.sh, built in the background)"
await images

begin "real node saga-node-0 (scripts/cluster.sh up --real-node)"
cluster_out=$(mktemp)
scripts/cluster.sh up --real-node | tee "$cluster_out"
eval "$(tail -n 2 "$cluster_out")"
rm -f "$cluster_out"

begin "real pods: cargo test -p saga-operator --test real_node"
cargo test -p saga-operator --test real_node -- --test-threads 1

# Proves the load generator works end to end; numbers are not asserted
# (docs/benchmarks.md has the real runs).
begin "benchmark smoke run (scripts/bench.sh, debug build, a few seconds)"
PROFILE=debug DURATION=3 WARMUP=1 CLIENTS=8 RATE=20 scripts/bench.sh

begin "done"
trap - ERR
section "Time per step"
printf '%s\n' "${timings[@]}"
printf '%5d s  in all\n' "$SECONDS"
section "All checks passed"
