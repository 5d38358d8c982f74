#!/usr/bin/env bash
# Builds `prometheus` and `promtool` from the official Go module
# github.com/prometheus/prometheus at the release pinned in
# prometheus/versions.env, into prometheus/bin/ (git-ignored), under `nice`.
#
# Modelled on scripts/k8s-build.sh: a throw-away module of ours in
# prometheus/.build/ (git-ignored) requires the upstream module at its tag;
# sources come from the Go module proxy and are checked against the Go
# checksum database; no code of theirs is copied here and no prebuilt binary
# is used. The web UI's compiled assets are not in the Go module (upstream
# embeds them with the `builtinassets` tag after an npm build), so this
# Prometheus serves no UI pages; its HTTP API (/api/v1/...), which the tests
# use, is complete.
#
# Built with upstream's `remove_all_sd` tag: only static and file service
# discovery, which is all the tests use (static_configs); the cloud
# providers' SDKs (AWS, Azure, GCE, Kubernetes, ...) are not compiled, which
# takes most of a cold build's CPU off CI.
#
# Nothing is rebuilt when prometheus/bin/.versions matches
# prometheus/versions.env and both binaries are there.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source prometheus/versions.env

out=$root/prometheus/bin
work=$root/prometheus/.build
stamp=$out/.versions
tools=(prometheus promtool)

# What the stamp records: the pinned versions and the build tags.
build_tags=remove_all_sd
stamp_content() {
    cat prometheus/versions.env
    echo "# go build -tags $build_tags"
}

up_to_date() {
    cmp -s <(stamp_content) "$stamp" || return 1
    local t
    for t in "${tools[@]}"; do
        [[ -x $out/$t ]] || return 1
    done
}

if up_to_date; then
    echo "prometheus/bin is up to date with prometheus/versions.env"
    exit 0
fi

command -v go >/dev/null || {
    echo "error: go is not installed (needed to build Prometheus)" >&2
    exit 1
}
mkdir -p "$out"
rm -rf "$work"
mkdir -p "$work"
export GOFLAGS="-buildvcs=false -trimpath"
started=$SECONDS

module=github.com/prometheus/prometheus
version_pkg=github.com/prometheus/common/version
# The module's v0.3xx.y tag is Prometheus 3.xx.y.
release=${PROMETHEUS_VERSION#v0.}
release=3.${release#3}
ldflags="-s -w -X $version_pkg.Version=$release -X $version_pkg.Revision=$PROMETHEUS_VERSION"
ldflags+=" -X $version_pkg.Branch=module -X $version_pkg.BuildUser=saga-platform"
ldflags+=" -X $version_pkg.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"

echo "building Prometheus $PROMETHEUS_VERSION (prometheus, promtool)"
log=$work.log
if ! (
    cd "$work"
    go mod init saga-platform.local/prometheus-build
    go get "$module/cmd/prometheus@$PROMETHEUS_VERSION" "$module/cmd/promtool@$PROMETHEUS_VERSION"
    nice -n 10 go build -tags "$build_tags" -ldflags "$ldflags" -o "$out/" "$module/cmd/prometheus" "$module/cmd/promtool"
) >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "error: building Prometheus failed (full log: $log)" >&2
    exit 1
fi

stamp_content >"$stamp"
"$out/promtool" --version | head -n 1
echo "built ${tools[*]} into prometheus/bin in $((SECONDS - started)) s"
