#!/usr/bin/env bash
# The saga explorer in a real browser (docs/explorer.md): installs what the
# test needs when it is missing — Debian's chromium and fonts (apt), Node.js
# (apt, if the machine has none), playwright-core at the version pinned by
# tests/browser/package-lock.json (npm ci; it downloads no browser) — then
# runs tests/tests/explorer_browser.rs, which starts a platform of the debug
# binaries and drives Chromium through tests/browser/explorer.mjs. The test
# rewrites the screenshots in docs/explorer/. Needs the debug build
# (`cargo build --workspace --bins`) and the local PostgreSQL and RabbitMQ
# (started here if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

started=$SECONDS
# fonts-liberation is what Chromium recommends; DejaVu for everything else.
apt_install chromium fonts-liberation fonts-dejavu-core
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
[[ -x /usr/bin/chromium ]] || die "/usr/bin/chromium is missing after installing chromium"
/usr/bin/chromium --version 2>/dev/null

lock_version=$(python3 -c 'import json; print(json.load(open("tests/browser/package-lock.json"))["packages"]["node_modules/playwright-core"]["version"])')
installed_version=$(python3 -c 'import json; print(json.load(open("tests/browser/node_modules/playwright-core/package.json"))["version"])' 2>/dev/null || true)
if [[ $installed_version != "$lock_version" ]]; then
    echo "Installing playwright-core $lock_version (npm ci, tests/browser)"
    # No browser download: playwright-core has none, and this makes sure.
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
echo "browser test prerequisites ready in $((SECONDS - started)) s"

ensure_postgres
ensure_rabbitmq
cargo test -p saga-tests --test explorer_browser -- --ignored --nocapture
