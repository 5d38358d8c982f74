#!/usr/bin/env bash
# Reproduces docs/benchmarks.md: a release build, the platform run locally by
# `sagactl up` on fresh `bench_*` databases and its own broker topology, then
#   1. the raw ceilings of RabbitMQ and PostgreSQL plus max throughput
#      (closed loop, CLIENTS clients), and
#   2. a fixed rate of RATE orders/s (open loop) for the latency figures,
# sampling each service's resident memory (RSS) during both.
# Results: target/bench/{throughput,latency}.json and target/bench/rss.txt.
#
#   scripts/bench.sh                          # 60 s each, as in docs/benchmarks.md
#   PROFILE=debug DURATION=3 WARMUP=1 scripts/bench.sh   # the smoke run of scripts/test.sh
#   OVERLOAD_RATE=800 scripts/bench.sh        # and a third run above capacity (target/bench/overload.json)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

DURATION=${DURATION:-60}
WARMUP=${WARMUP:-10}
CLIENTS=${CLIENTS:-96}
RATE=${RATE:-300}
PROFILE=${PROFILE:-release}
out=target/bench
bin=${CARGO_TARGET_DIR:-target}/$PROFILE
mkdir -p "$out"

if [[ $PROFILE == release ]]; then
    section "cargo build --release --bins"
    cargo build --release --bins
fi

section "PostgreSQL and RabbitMQ"
ensure_postgres
ensure_rabbitmq

section "fresh bench databases and broker topology"
for db in bench_order bench_payment bench_inventory bench_notification; do
    psql "postgres://postgres@127.0.0.1:5432/postgres" -XAtqc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null
done
# A fresh broker has no bench.* queue: no match is not an error (pipefail).
rmqctl -q list_queues name | { grep '^bench\.' || true; } | while read -r queue; do
    rmqctl -q delete_queue "$queue" >/dev/null
done

section "sagactl up (platform 'bench')"
export SAGA_PLATFORM=bench DATABASE_PREFIX=bench RUST_LOG=${RUST_LOG:-info}
"$bin/sagactl" up --bin-dir "$bin" >"$out/up.log" 2>&1 &
up_pid=$!
sampler_pid=
cleanup() {
    [[ -n $sampler_pid ]] && kill "$sampler_pid" 2>/dev/null || true
    kill -INT "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
}
trap cleanup EXIT
ready() {
    for port in 8080 8081 8082 8083; do
        curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || return 1
    done
}
wait_until 90 ready || {
    cat "$out/up.log"
    die "the platform did not become ready"
}
echo "ready"

# Peak RSS per service (KiB), sampled every second while the benchmark runs.
: >"$out/rss.samples"
(
    while sleep 1; do
        for svc in order-service payment-service inventory-service notification-service; do
            pid=$(pgrep -f "^$bin/$svc" | head -n 1) || continue
            echo "$svc $(ps -o rss= -p "$pid")"
        done
    done >>"$out/rss.samples"
) &
sampler_pid=$!

section "sagactl bench --raw --clients $CLIENTS --duration $DURATION"
"$bin/sagactl" bench --raw --clients "$CLIENTS" --warmup "$WARMUP" --duration "$DURATION" --json \
    | tee "$out/throughput.json"
section "sagactl bench --rate $RATE --duration $DURATION"
"$bin/sagactl" bench --rate "$RATE" --warmup "$WARMUP" --duration "$DURATION" --json | tee "$out/latency.json"

# Overload: a fixed rate above capacity (e.g. twice the closed-loop maximum);
# the excess must be refused at the edge (429/503), not time out in sagas.
if [[ -n ${OVERLOAD_RATE:-} ]]; then
    section "sagactl bench --rate $OVERLOAD_RATE --duration $DURATION (overload)"
    "$bin/sagactl" bench --rate "$OVERLOAD_RATE" --warmup "$WARMUP" --duration "$DURATION" --json \
        | tee "$out/overload.json"
fi

kill "$sampler_pid" 2>/dev/null || true
sampler_pid=
section "peak RSS during the runs"
awk '{ if ($2 > max[$1]) max[$1] = $2 } END { for (s in max) printf "%s %.1f MiB\n", s, max[s] / 1024 }' \
    "$out/rss.samples" | sort | tee "$out/rss.txt"
