#!/usr/bin/env bash
# Checks that each service's OpenAPI document tells the truth: runs
# schemathesis (all checks; the examples, coverage, fuzzing and stateful
# phases; a fixed seed and a bounded number of examples) against the
# `/api/openapi.json` of every service of a platform started here from the
# debug binaries (`sagactl up`), with an admin and a customer token.
# Exits non-zero on any failure. See docs/usage.md#what-the-api-documents-guarantee.
#
#   scripts/schemathesis.sh            all four services
#   scripts/schemathesis.sh order      one (order, payment or inventory)
#
# Installs schemathesis from PyPI, at the pinned version, into
# .tools/schemathesis (a git-ignored virtualenv inside the clone) when it is
# missing. Needs the debug build (`cargo build --workspace --bins`) and the
# local PostgreSQL and RabbitMQ (started here if needed, as scripts/test.sh
# does). Environment: SCHEMATHESIS_EXAMPLES (examples per operation, default
# 100), SCHEMATHESIS_SEED (default 20260715), SCHEMATHESIS_PORT_BASE (the four
# services listen on BASE to BASE+3; default 18480),
# SCHEMATHESIS_PLATFORM (platform name and database prefix; default
# schemathesis; its databases are dropped and made afresh on every run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

SCHEMATHESIS_VERSION=4.32.5
VENV=.tools/schemathesis
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-100}
SEED=${SCHEMATHESIS_SEED:-20260715}
PORT_BASE=${SCHEMATHESIS_PORT_BASE:-18480}
PLATFORM=${SCHEMATHESIS_PLATFORM:-schemathesis}
SECRET=schemathesis-check-secret-0123456789abcdef
BIN=target/debug
WORK=target/schemathesis

services=("$@")
[[ ${#services[@]} -gt 0 ]] || services=(order payment inventory notification)

# --- schemathesis, pinned, in a virtualenv inside the clone -----------------
if [[ ! -x $VENV/bin/schemathesis ]] || [[ $("$VENV/bin/schemathesis" --version 2>/dev/null) != *" $SCHEMATHESIS_VERSION" ]]; then
    echo "Installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        # Debian's python3 needs python3-venv (ensurepip) to make one.
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$VENV/bin/schemathesis" --version

for binary in sagactl order-service payment-service inventory-service notification-service; do
    [[ -x $BIN/$binary ]] || die "$BIN/$binary is missing: run 'cargo build --workspace --bins' first"
done
ensure_postgres
ensure_rabbitmq

# --- a platform of its own: own name, databases and ports -------------------
order_url=http://127.0.0.1:$PORT_BASE
payment_url=http://127.0.0.1:$((PORT_BASE + 1))
inventory_url=http://127.0.0.1:$((PORT_BASE + 2))
notification_url=http://127.0.0.1:$((PORT_BASE + 3))
for url in "$order_url" "$payment_url" "$inventory_url" "$notification_url"; do
    ! port_open "${url##*:}" || die "port ${url##*:} is in use (set SCHEMATHESIS_PORT_BASE)"
done
# Fresh databases, so every run starts from the same state.
for db in order payment inventory notification; do
    psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS ${PLATFORM}_$db WITH (FORCE)" >/dev/null
done
rm -rf "$WORK"
mkdir -p "$WORK"
export AUTH_JWT_SECRET=$SECRET ORDER_URL=$order_url PAYMENT_URL=$payment_url INVENTORY_URL=$inventory_url \
    NOTIFICATION_URL=$notification_url
# Long polls and step timeouts stay short next to schemathesis' request timeout.
export SAGA_STEP_TIMEOUT=5s RUST_LOG=warn
up_pid=
stop_platform() {
    if [[ -n $up_pid ]] && kill -0 "$up_pid" 2>/dev/null; then
        kill -TERM "$up_pid" 2>/dev/null || true
        wait "$up_pid" 2>/dev/null || true
    fi
}
trap stop_platform EXIT
sagactl=$PWD/$BIN/sagactl
(cd "$WORK" && exec "$sagactl" up --platform "$PLATFORM" --database-prefix "$PLATFORM" --bin-dir "$OLDPWD/$BIN") \
    >"$WORK/up.log" 2>&1 &
up_pid=$!
# `sagactl up` prints this once every /readyz answered 200 and the demo data is in.
deadline=$((SECONDS + 90))
until grep -q "Seeded demo data" "$WORK/up.log"; do
    if ! kill -0 "$up_pid" 2>/dev/null || ((SECONDS >= deadline)); then
        cat "$WORK/up.log"
        die "the platform did not come up (sagactl up, log above)"
    fi
    sleep 1
done
echo "platform '$PLATFORM' up: order $order_url, payment $payment_url, inventory $inventory_url," \
    "notification $notification_url (logs: $WORK/.sagactl/logs)"

admin=$("$sagactl" token --sub schemathesis-admin --admin --ttl 1h)
customer=$("$sagactl" token --sub alice --ttl 1h)

# One order placed and settled before the runs, so that the admin reads of a
# payment and a reservation have something to find besides drawn ids.
order_id=$(ORDER=$order_url TOKEN=$customer python3 - <<'PY'
import json, os, urllib.request
base, token = os.environ["ORDER"], os.environ["TOKEN"]
headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
body = json.dumps({"items": [{"sku": "SKU-1", "quantity": 1}]}).encode()
placed = json.load(urllib.request.urlopen(urllib.request.Request(f"{base}/api/v1/orders", body, headers)))
order = json.load(urllib.request.urlopen(urllib.request.Request(f"{base}/api/v1/orders/{placed['id']}?wait=20", headers=headers)))
assert order["status"] == "COMPLETED", order
print(order["id"])
PY
)
# Half of the drawn order ids are that order's.
# No cache of earlier runs' crashes (schemathesis keeps one in .schemathesis/
# by default and replays it): each run starts from nothing.
cat >"$WORK/schemathesis.toml" <<TOML
[cache]
enabled = false

[dictionaries.orders]
values = ["$order_id"]

[parameters]
"path.order_id" = { dictionary = "orders", probability = 0.5 }
TOML

# --- the runs -----------------------------------------------------------------
# Each service as an admin and as a customer: orders are placed by customers
# (an admin sees every order), the catalogue and the accounts are written by
# admins (a customer gets 403 there, or 404 for another's account).
failed=()
for service in "${services[@]}"; do
    case $service in
    order) url=$order_url ;;
    payment) url=$payment_url ;;
    inventory) url=$inventory_url ;;
    notification) url=$notification_url ;;
    *) die "unknown service '$service' (order, payment, inventory or notification)" ;;
    esac
    for role in customer admin; do
        token=$customer
        [[ $role == admin ]] && token=$admin
        section "schemathesis: $service-service as $role ($url/api/openapi.json)"
        started=$SECONDS
        if SCHEMATHESIS_HOOKS=scripts/schemathesis_hooks.py "$VENV/bin/schemathesis" \
            --config-file "$WORK/schemathesis.toml" run "$url/api/openapi.json" \
            --checks all \
            --phases examples,coverage,fuzzing,stateful \
            --seed "$SEED" \
            --max-examples "$EXAMPLES" \
            --workers 1 \
            --request-timeout 40 \
            --generation-database none \
            --header "Authorization: Bearer $token" \
            --report junit --report-dir "$WORK/reports/$service-$role" \
            --no-color; then
            echo "$service-service as $role: no failure ($((SECONDS - started)) s)"
        else
            echo "$service-service as $role: FAILED ($((SECONDS - started)) s)"
            failed+=("$service as $role")
        fi
    done
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "service logs: $WORK/.sagactl/logs/" >&2
    die "schemathesis found failures: ${failed[*]}"
fi
echo "schemathesis: no failure in ${services[*]}"
