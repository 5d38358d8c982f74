#!/usr/bin/env bash
# Builds the local control plane's tools from their official Go modules, at the
# releases pinned in k8s/versions.env, into k8s/bin/ (git-ignored):
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, helm.
# With --real-node, also what the real node of `scripts/cluster.sh up --real-node`
# runs (k8s/bin/node/): kubelet and kube-proxy (same k8s.io/kubernetes module and
# release), runc (github.com/opencontainers/runc, cgo + libseccomp), and the
# pause image's binary compiled with `gcc -static` from Kubernetes' own
# build/pause/linux/pause.c (in the same module). Stamp: k8s/bin/node/.versions.
#
# Each tool is built from a throw-away module of ours in k8s/.build/<tool>/
# (git-ignored) that requires the upstream module at its release tag; for
# k8s.io/kubernetes every staging module (k8s.io/api, apimachinery, apiserver,
# client-go, …) is pinned with a `replace` to its matching v0.x release, read
# from the kubernetes go.mod itself. Sources come from the Go module proxy and
# are checked against the Go checksum database; no code of theirs is copied
# into this repository and no prebuilt binary is used.
#
# Nothing is rebuilt when k8s/bin/.versions matches k8s/versions.env and every
# binary is there. The Go module and build caches (~/go, ~/.cache/go-build)
# speed up a rebuild but are not required.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source k8s/versions.env

out=$root/k8s/bin
work=$root/k8s/.build
stamp=$out/.versions
tools=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm)
node_out=$out/node
node_stamp=$node_out/.versions
node_tools=(kubelet kube-proxy runc pause)
real_node=false
[[ ${1:-} == --real-node ]] && real_node=true

# built STAMP DIR TOOL…: STAMP matches k8s/versions.env and every TOOL is in DIR.
built() {
    local stamp=$1 dir=$2 t
    shift 2
    cmp -s k8s/versions.env "$stamp" || return 1
    for t in "$@"; do
        [[ -x $dir/$t ]] || return 1
    done
}
up_to_date() { built "$stamp" "$out" "${tools[@]}"; }
node_up_to_date() { built "$node_stamp" "$node_out" "${node_tools[@]}"; }

cp_done=false
if up_to_date; then
    echo "k8s/bin is up to date with k8s/versions.env"
    cp_done=true
    if ! $real_node || node_up_to_date; then
        $real_node && echo "k8s/bin/node is up to date with k8s/versions.env"
        exit 0
    fi
fi

command -v go >/dev/null || {
    echo "error: go is not installed (needed to build the control plane)" >&2
    exit 1
}
mkdir -p "$out" "$work"
export GOFLAGS="-buildvcs=false -trimpath"
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# new_module DIR NAME: an empty module of ours to build upstream packages from.
new_module() {
    rm -rf "$1"
    mkdir -p "$1"
    (cd "$1" && go mod init "saga-platform.local/k8s-build/$2" >/dev/null 2>&1)
}

# build DIR LDFLAGS PACKAGE... : resolves the packages in DIR's module and
# builds them into k8s/bin.
build() {
    local dir=$1 ldflags=$2
    shift 2
    local log=$dir.log started=$SECONDS
    if ! (
        cd "$dir"
        go get "$@"
        go build -ldflags "-s -w $ldflags" -o "$out/" "${@%@*}"
    ) >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "error: building ${*%@*} failed (full log: $log)" >&2
        exit 1
    fi
    echo "  built in $((SECONDS - started)) s"
}

started=$SECONDS

# kube_module DIR NAME: a module of ours requiring k8s.io/kubernetes, with every
# staging module replaced by its matching v0.x release; sets kube_ldflags.
kube_module() {
    local dir=$1
    new_module "$dir" "$2"
    staging_version=v0.${KUBERNETES_VERSION#v1.}
    kube_gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
    # `k8s.io/api => ./staging/src/k8s.io/api` in upstream's go.mod becomes
    # `k8s.io/api => k8s.io/api v0.34.x` in ours.
    replaces=$(sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\1#p' "$kube_gomod")
    [[ -n $replaces ]] || {
        echo "error: no staging replace directives found in $kube_gomod" >&2
        exit 1
    }
    (
        cd "$dir"
        for m in $replaces; do
            go mod edit -replace "$m=$m@$staging_version"
        done
    )
    minor=${KUBERNETES_VERSION#v1.}
    minor=${minor%%.*}
    kube_ldflags=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        kube_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
    done
}

build_node() {
    mkdir -p "$node_out"
    local node_started=$SECONDS
    # --- kubelet, kube-proxy: the same module and release as the control plane
    echo "building Kubernetes $KUBERNETES_VERSION node binaries (kubelet, kube-proxy)"
    kube_module "$work/kubernetes-node" kubernetes-node
    out=$node_out build "$work/kubernetes-node" "$kube_ldflags" \
        "k8s.io/kubernetes/cmd/kubelet@$KUBERNETES_VERSION" \
        "k8s.io/kubernetes/cmd/kube-proxy@$KUBERNETES_VERSION"

    # --- runc (cgo, libseccomp: Debian's libseccomp-dev)
    echo "building runc $RUNC_VERSION"
    if [[ ! -f /usr/include/seccomp.h ]]; then
        source scripts/lib.sh
        apt_install libseccomp-dev
    fi
    new_module "$work/runc" runc
    CGO_ENABLED=1 GOFLAGS="$GOFLAGS -tags=seccomp" out=$node_out build "$work/runc" \
        "-X main.version=${RUNC_VERSION#v}" "github.com/opencontainers/runc@$RUNC_VERSION"

    # --- pause: Kubernetes' own pause.c, static
    echo "compiling pause from k8s.io/kubernetes@$KUBERNETES_VERSION build/pause/linux/pause.c"
    local src
    src=$(cd "$work/kubernetes-node" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
    [[ -f $src ]] || {
        echo "error: $src not found" >&2
        exit 1
    }
    gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION" -o "$node_out/pause" "$src"
    strip "$node_out/pause"
    cp k8s/versions.env "$node_stamp"
    echo "built ${node_tools[*]} into k8s/bin/node in $((SECONDS - node_started)) s"
}

if $cp_done; then
    build_node
    exit 0
fi

# --- Kubernetes: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
echo "building Kubernetes $KUBERNETES_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)"
dir=$work/kubernetes
kube_module "$dir" kubernetes
build "$dir" "$kube_ldflags" \
    "k8s.io/kubernetes/cmd/kube-apiserver@$KUBERNETES_VERSION" \
    "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBERNETES_VERSION" \
    "k8s.io/kubernetes/cmd/kube-scheduler@$KUBERNETES_VERSION" \
    "k8s.io/kubernetes/cmd/kubectl@$KUBERNETES_VERSION"

# --- etcd
echo "building etcd $ETCD_VERSION"
dir=$work/etcd
new_module "$dir" etcd
build "$dir" "" "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
# go names the binary after the last path element that is not a major version.
for name in server v3; do
    if [[ -x $out/$name ]]; then mv "$out/$name" "$out/etcd"; fi
done

# --- kwok
echo "building kwok $KWOK_VERSION"
dir=$work/kwok
new_module "$dir" kwok
build "$dir" "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"

# --- helm
echo "building helm $HELM_VERSION"
dir=$work/helm
new_module "$dir" helm
build "$dir" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"

cp k8s/versions.env "$stamp"
echo "built ${tools[*]} into k8s/bin in $((SECONDS - started)) s"
if $real_node; then
    build_node
fi
