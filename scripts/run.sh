#!/usr/bin/env bash
# THE run command: builds the binaries, makes sure PostgreSQL and RabbitMQ run,
# then runs the platform locally with `sagactl up --demo` (Ctrl-C stops it).
# Extra arguments go to `sagactl up`, e.g. `scripts/run.sh --platform dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

section "cargo build --bins"
cargo build --bins

section "PostgreSQL and RabbitMQ"
ensure_postgres
ensure_rabbitmq

section "sagactl up --demo"
exec "${CARGO_TARGET_DIR:-target}/debug/sagactl" up --demo "$@"
