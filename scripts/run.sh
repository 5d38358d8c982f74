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

# The demo's e-mail goes to a real SMTP server on this machine (PyPI aiosmtpd,
# tests/smtp_sink.py), which keeps each message under .sagactl/mail/; an
# SMTP_URL of your own replaces it.
if [[ -z ${SMTP_URL:-} ]]; then
    section "SMTP server for the demo's e-mail"
    scripts/smtp-sink.sh
    mail_dir=$PWD/.sagactl/mail
    mkdir -p "$mail_dir"
    port=${SMTP_SINK_PORT:-2525}
    ! port_open "$port" || die "port $port is in use (set SMTP_SINK_PORT)"
    # Ends with the platform: Ctrl-C reaches the whole process group.
    .venv-smtp/bin/python tests/smtp_sink.py "$port" "$mail_dir" >"$mail_dir/server.log" 2>&1 &
    wait_until 20 grep -q ready "$mail_dir/server.log" || die "the SMTP server did not start: $(cat "$mail_dir/server.log")"
    export SMTP_URL=smtp://127.0.0.1:$port SMTP_FROM=${SMTP_FROM:-"Saga Shop <orders@shop.example>"}
    echo "e-mail is kept in $mail_dir (one .eml and one .json per message)"
fi

section "sagactl up --demo"
exec "${CARGO_TARGET_DIR:-target}/debug/sagactl" up --demo "$@"
