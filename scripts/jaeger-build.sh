#!/usr/bin/env bash
# Builds Jaeger (the all-in-one `jaeger` binary: OTLP receivers, in-memory
# storage, query API) from its official Go module at the release pinned in
# observability/versions.env, into observability/bin/jaeger (git-ignored).
#
# Modelled on scripts/k8s-build.sh: a throw-away module of ours in
# observability/.build/jaeger (git-ignored) requires
# github.com/jaegertracing/jaeger at the release tag, with upstream's own
# `replace` directives copied from its go.mod (a dependency's replaces are
# otherwise ignored), and builds ./cmd/jaeger. Sources come from the Go
# module proxy and are checked against the Go checksum database; no code of
# theirs is copied into this repository and no prebuilt binary is used.
#
# The Go module does not hold Jaeger's web UI: its embedded assets folder
# (cmd/query/app/ui/actual) is empty there and the binary serves a
# placeholder page at /. The query API (/api/traces/...) is complete.
#
# Nothing is rebuilt when the binary exists and observability/bin/.jaeger.version
# names the pinned release. Runs under `nice`: the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source observability/versions.env

out=$root/observability/bin
work=$root/observability/.build/jaeger
stamp=$out/.jaeger.version
module=github.com/jaegertracing/jaeger

if [[ -x $out/jaeger ]] && [[ "$(cat "$stamp" 2>/dev/null)" == "$JAEGER_VERSION" ]]; then
    echo "observability/bin/jaeger is up to date ($JAEGER_VERSION)"
    exit 0
fi

command -v go >/dev/null || {
    echo "error: go is not installed (needed to build Jaeger)" >&2
    exit 1
}
# The machine is shared: the whole build runs at a lower priority.
renice -n 10 $$ >/dev/null
mkdir -p "$out"
rm -rf "$work"
mkdir -p "$work"
export GOFLAGS="-buildvcs=false -trimpath"
started=$SECONDS
log=$work.log
echo "building Jaeger $JAEGER_VERSION ($module/cmd/jaeger)"
if ! (
    cd "$work"
    go mod init saga-platform.local/observability-build/jaeger
    upstream_gomod=$(go mod download -json "$module@$JAEGER_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
    [[ -f $upstream_gomod ]] || { echo "no go.mod downloaded for $module@$JAEGER_VERSION"; exit 1; }
    # `replace a => b v1.2.3` lines of upstream's go.mod, as ours.
    sed -n 's#^replace[[:space:]]\+\([^ ]*\)[[:space:]]*=>[[:space:]]*\([^ ]*\)[[:space:]]\+\(v[^ ]*\)$#\1=\2@\3#p' "$upstream_gomod" |
        while read -r replacement; do go mod edit -replace "$replacement"; done
    go get "$module/cmd/jaeger@$JAEGER_VERSION"
    go build \
        -ldflags "-s -w -X $module/internal/version.latestVersion=$JAEGER_VERSION -X $module/internal/version.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        -o "$out/jaeger" "$module/cmd/jaeger"
) >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "error: building Jaeger failed (full log: $log)" >&2
    exit 1
fi
echo "$JAEGER_VERSION" >"$stamp"
echo "built observability/bin/jaeger ($JAEGER_VERSION) in $((SECONDS - started)) s"
