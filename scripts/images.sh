#!/usr/bin/env bash
# Builds every image of the workspace from ./Dockerfile with `docker build`,
# tagged saga-platform/<binary>:dev, on a Debian 12 machine with nothing done
# by hand (root or sudo needed for the first run):
#
#   scripts/images.sh           # engine + base images + the five images, then a table
#   scripts/images.sh --check   # the same, then runs each image once (read-only,
#                               # uid 65532, no capabilities) and checks it exits 0
#   scripts/images.sh --tag T   # tag T instead of dev
#
# 1. installs Debian's docker.io (and debootstrap) when missing and starts
#    dockerd when it is not running, with --iptables=false --ip-masq=false
#    --bridge=none: the engine changes no iptables rule and adds no bridge
#    (a real node on this machine has its own); builds use --network host.
#    Log: target/dockerd.log. Debian's client /usr/bin/docker with
#    DOCKER_BUILDKIT=1 (the engine's own BuildKit; no buildx plugin needed).
# 2. scripts/base-images.sh: LOCAL STAND-INS for the Dockerfile's base images
#    (rust:<v>-bookworm and distroless cc-debian12:nonroot), built from
#    Debian's packages when missing or when their recipe changed.
# 3. docker build --target <binary> for each of the five: the first compiles
#    the workspace once (cache mounts for the registry and target/), the
#    others reuse that build stage from BuildKit's cache.
# 4. prints each image's size and the time of each phase.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

check=0
tag=dev
while (($#)); do
    case $1 in
        --check) check=1 ;;
        --tag) tag=${2:?--tag needs a value}; shift ;;
        -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
    shift
done

binaries=(saga-operator order-service payment-service inventory-service notification-service)
export DOCKER=/usr/bin/docker # Debian's 20.10 client: BuildKit without buildx
export DOCKER_BUILDKIT=1

section "Docker engine"
t0=$SECONDS
[[ -x $DOCKER ]] || apt_install docker.io
command -v debootstrap >/dev/null || apt_install debootstrap
if ! "$DOCKER" info >/dev/null 2>&1; then
    ((EUID == 0)) || die "dockerd is not running and starting it needs root"
    mkdir -p target
    log=$PWD/target/dockerd.log
    echo "Starting dockerd (no iptables rules, no bridge; log $log)"
    # containerd from the docker.io package is started by dockerd itself.
    setsid dockerd --iptables=false --ip-masq=false --bridge=none >>"$log" 2>&1 </dev/null &
    wait_until 60 "$DOCKER" info || die "dockerd did not answer within 60 s (log: $log)"
fi
"$DOCKER" version --format 'Docker engine {{.Server.Version}}, client {{.Client.Version}}'
t_engine=$((SECONDS - t0))

t0=$SECONDS
scripts/base-images.sh
t_base=$((SECONDS - t0))

# The first target runs the build stage (the one compile); the others find
# it in BuildKit's cache and only assemble their runtime image.
declare -A t_build
for bin in "${binaries[@]}"; do
    section "docker build --target $bin -t saga-platform/$bin:$tag"
    t0=$SECONDS
    "$DOCKER" build --network host --progress plain --target "$bin" -t "saga-platform/$bin:$tag" . 2>&1 |
        grep --line-buffered -v '^#[0-9]* sha256:' || die "docker build of $bin failed"
    t_build[$bin]=$((SECONDS - t0))
done

if ((check)); then
    section "check: each image runs (read-only, uid 65532, no capabilities)"
    # The subcommand each binary accepts without any backing service.
    declare -A probe=([saga-operator]="crd" [order-service]="--help" [payment-service]="--help"
        [inventory-service]="--help" [notification-service]="--help")
    failed=()
    mkdir -p target/images-check
    for bin in "${binaries[@]}"; do
        # The shared libraries it needs: all must be in the runtime image
        # (distroless cc: libc, libm, libgcc_s...; no libssl, no libstdc++).
        cid=$("$DOCKER" create "saga-platform/$bin:$tag")
        "$DOCKER" cp "$cid:/usr/local/bin/$bin" "target/images-check/$bin" >/dev/null
        "$DOCKER" rm "$cid" >/dev/null
        needed=$(LC_ALL=C readelf -d "target/images-check/$bin" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
        printf '%-22s links %s(%s)\n' "$bin" "$needed" "$(du -h "target/images-check/$bin" | cut -f1)"
        # shellcheck disable=SC2086
        if out=$("$DOCKER" run --rm --network host --read-only --user 65532:65532 --cap-drop ALL \
            "saga-platform/$bin:$tag" ${probe[$bin]} 2>&1); then
            printf '%-22s ok   (%s: %s)\n' "$bin" "${probe[$bin]}" "$(head -n 1 <<<"$out")"
        else
            printf '%-22s FAIL (%s)\n%s\n' "$bin" "${probe[$bin]}" "$out"
            failed+=("$bin")
        fi
    done
fi

section "images"
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1000000 }'; }
printf '%-44s %10s %10s\n' image size build
for bin in "${binaries[@]}"; do
    size=$("$DOCKER" image inspect --format '{{.Size}}' "saga-platform/$bin:$tag")
    printf '%-44s %10s %8s s\n' "saga-platform/$bin:$tag" "$(mb "$size")" "${t_build[$bin]}"
done
runtime=$(sed -n 's/^ARG RUNTIME_IMAGE=//p' Dockerfile)
printf '%-44s %10s\n' "$runtime (stand-in)" "$(mb "$("$DOCKER" image inspect --format '{{.Size}}' "$runtime")")"
echo
echo "phases: engine ${t_engine} s, stand-ins ${t_base} s, compile + first image ${t_build[${binaries[0]}]} s," \
    "other images $(( $(IFS=+; echo "${t_build[*]}") - t_build[${binaries[0]}] )) s"
if ((check)) && ((${#failed[@]})); then
    die "images that did not run: ${failed[*]}"
fi
