#!/usr/bin/env bash
# LOCAL STAND-INS for the two published base images that ./Dockerfile names:
#
#   docker.io/library/rust:<RUST_VERSION>-bookworm   (build stage)
#   gcr.io/distroless/cc-debian12:nonroot            (runtime stage)
#
# No image registry is reachable from our machines, so these are built here
# from Debian 12's packages (and the host's Rust toolchain) and tagged with
# the published names, so that the Dockerfile users build stays unchanged.
# They are NOT the published images: they hold what our build and our
# binaries need from them, laid out the same way.
#
#   scripts/base-images.sh          # build each stand-in that is missing or stale
#   scripts/base-images.sh --force  # rebuild both
#
# Each stand-in carries the label saga-platform.stand-in.recipe=<hash of the
# function that builds it + its inputs>; an image with the current hash is
# kept, and so is an image of that name without the label (the published one,
# where a registry is reachable: it is never replaced; --force replaces it).
# Called by scripts/images.sh (which starts dockerd first); needs root.
#
# rust:<v>-bookworm stand-in: `debootstrap --variant=minbase bookworm` from the
#   Debian mirror apt is configured with, plus gcc, libc6-dev, binutils,
#   pkg-config, make, ca-certificates, git (the parts of buildpack-deps our
#   build can use); the host's rustup toolchain of the same version (rustup
#   cannot download here) copied to /usr/local/rustup/toolchains/<v>-<host>,
#   rustup and its proxies in /usr/local/cargo/bin, with the official image's
#   ENV (RUSTUP_HOME, CARGO_HOME, PATH, RUST_VERSION). No docs (rust-docs).
# distroless cc-debian12:nonroot stand-in: the files of Debian's libc6 and
#   libgcc-s1 (`apt-get download` + `dpkg-deb -x`, docs removed), the CA
#   bundle /etc/ssl/certs/ca-certificates.crt made from Debian's
#   ca-certificates (the Mozilla set, as update-ca-certificates makes it),
#   /etc/passwd and /etc/group with root, nobody and nonroot (65532),
#   /etc/nsswitch.conf, /home/nonroot, /tmp (1777); user 65532, SSL_CERT_FILE
#   as distroless sets it. No shell, no package manager. Unlike distroless cc
#   it has no libssl3, libgomp1 or libstdc++6: nothing of ours links them
#   (scripts/images.sh --check runs every binary on it).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

force=0
for arg in "$@"; do
    case $arg in
        --force) force=1 ;;
        -h | --help) sed -n '2,35p' "$0"; exit 0 ;;
        *) die "unknown argument $arg" ;;
    esac
done

DOCKER=${DOCKER:-/usr/bin/docker}
work=target/base-images
mkdir -p "$work"

# The names come from the Dockerfile's ARG defaults, so the two never drift.
rust_version=$(sed -n 's/^ARG RUST_VERSION=//p' Dockerfile)
runtime_image=$(sed -n 's/^ARG RUNTIME_IMAGE=//p' Dockerfile)
[[ -n $rust_version && -n $runtime_image ]] || die "ARG RUST_VERSION / RUNTIME_IMAGE not found in Dockerfile"
rust_image="docker.io/library/rust:${rust_version}-bookworm"

# The host's toolchain for that version (1.95 → 1.95.0, or an exact 1.95.0).
host_triple=x86_64-unknown-linux-gnu
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
toolchain_src=""
for cand in "$rustup_home/toolchains/${rust_version}-$host_triple" "$rustup_home/toolchains/${rust_version}.0-$host_triple"; do
    [[ -x $cand/bin/rustc ]] && { toolchain_src=$cand; break; }
done
[[ -n $toolchain_src ]] || die "no Rust ${rust_version} toolchain under $rustup_home/toolchains (rustup cannot download here)"
rustc_full=$("$toolchain_src/bin/rustc" -V) # e.g. "rustc 1.95.0 (59807616e 2026-04-14)"
rust_full=$(awk '{print $2}' <<<"$rustc_full")
[[ $rust_full == "$rust_version" || $rust_full == "$rust_version".* ]] ||
    die "$toolchain_src is rustc $rust_full, the Dockerfile wants $rust_version"

# The mirror apt is configured with (deb822 or one-line format).
debian_mirror() {
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [[ -n $uri ]] || uri=$(awk '$1 == "deb" && $0 ~ /bookworm/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

# A recipe's hash: the text of the function that builds it and its inputs.
recipe_of() {
    { declare -f "$1"; shift; printf '%s\n' "$@"; } | sha256sum | cut -c1-16
}

# Whether image $1 needs no (re)build: it exists with recipe label $2, or it
# exists without any stand-in label (the published image, pulled where a
# registry is reachable: never replaced by a stand-in).
current() {
    local label
    label=$("$DOCKER" image inspect --format '{{ index .Config.Labels "saga-platform.stand-in.recipe" }}' "$1" 2>/dev/null) || return 1
    [[ $label == "$2" || $label == "<no value>" || -z $label ]]
}

build_rust_rootfs() {
    local recipe=$1 root="$work/rust-rootfs" started=$SECONDS
    rm -rf "$root"
    apt_install debootstrap
    local mirror
    mirror=$(debian_mirror)
    echo "debootstrap minbase bookworm from $mirror"
    debootstrap --variant=minbase \
        --include=ca-certificates,gcc,libc6-dev,binutils,pkg-config,make,git,xz-utils \
        bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed (log: $work/debootstrap.log)"; }
    # Like the official image: the toolchain under /usr/local/rustup, rustup
    # and its proxies under /usr/local/cargo/bin, minimal profile (no docs).
    local tc="$root/usr/local/rustup/toolchains/${rust_full}-$host_triple"
    mkdir -p "$tc" "$root/usr/local/cargo/bin"
    echo "copying the host's toolchain $rustc_full (without docs)"
    tar -C "$toolchain_src/" --exclude=./share/doc -c . | tar -C "$tc" -x
    cat >"$root/usr/local/rustup/settings.toml" <<EOT
version = "12"
default_toolchain = "${rust_full}-$host_triple"
profile = "minimal"
auto_self_update = "disable"

[overrides]
EOT
    install -m 0755 "$cargo_home/bin/rustup" "$root/usr/local/cargo/bin/rustup"
    local proxy
    for proxy in cargo rustc rustdoc rust-gdb rust-gdbgui rust-lldb cargo-clippy clippy-driver rustfmt cargo-fmt; do
        [[ -e $tc/bin/$proxy ]] && ln -sf rustup "$root/usr/local/cargo/bin/$proxy"
    done
    chmod -R a+w "$root/usr/local/rustup" "$root/usr/local/cargo" # as the official image
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/dev/*
    echo "docker import $rust_image"
    tar -C "$root" --numeric-owner -c . | "$DOCKER" import \
        --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "ENV RUST_VERSION=$rust_full" \
        --change "LABEL saga-platform.stand-in.recipe=$recipe" \
        --change "LABEL saga-platform.stand-in.of=$rust_image" \
        --change 'CMD ["bash"]' \
        --message "local stand-in for $rust_image (scripts/base-images.sh)" \
        - "$rust_rootfs_image" >/dev/null
    rm -rf "$root"
    "$DOCKER" run --rm --network none "$rust_rootfs_image" sh -c 'cargo --version && rustc --version && cc --version | head -n 1'
    echo "built $rust_rootfs_image in $((SECONDS - started)) s"
}

# The machine's local CAs (/usr/local/share/ca-certificates, where Debian
# keeps them): here, the egress proxy that every HTTPS connection to
# crates.io goes through presents certificates of a local CA, which cargo in
# the build stage must trust. Added on top of the rootfs image as a thin
# layer (seconds), so that a changed CA does not redo debootstrap; without
# local CAs this only retags the rootfs image.
build_rust_local_cas() {
    local recipe=$1 ctx="$work/local-cas"
    rm -rf "$ctx"
    mkdir -p "$ctx/certs"
    cp /usr/local/share/ca-certificates/*.crt "$ctx/certs/" 2>/dev/null || true
    echo "local CAs: $(cd "$ctx/certs" && ls | tr '\n' ' ')"
    printf '%s\n' "FROM $rust_rootfs_image" \
        "COPY certs/ /usr/local/share/ca-certificates/" \
        "RUN update-ca-certificates >/dev/null" \
        "LABEL saga-platform.stand-in.recipe=$recipe" >"$ctx/Dockerfile"
    "$DOCKER" build --network none -q -t "$rust_image" "$ctx" >/dev/null
    rm -rf "$ctx"
}

build_runtime() {
    local recipe=$1 dir="$work/runtime" started=$SECONDS
    rm -rf "$dir"
    mkdir -p "$dir/debs" "$dir/root" "$dir/ca"
    local pkgs=(libc6 libgcc-s1 ca-certificates)
    if ! (cd "$dir/debs" && apt-get download "${pkgs[@]}" >/dev/null 2>&1); then
        flock /tmp/saga-platform-apt.lock apt-get update -qq
        (cd "$dir/debs" && apt-get download "${pkgs[@]}" >/dev/null)
    fi
    local root="$dir/root" deb
    for deb in "$dir"/debs/libc6_*.deb "$dir"/debs/libgcc-s1_*.deb; do
        dpkg-deb -x "$deb" "$root"
    done
    rm -rf "$root"/usr/share/doc "$root"/usr/share/lintian "$root"/usr/share/man "$root"/usr/share/info
    # The CA bundle as update-ca-certificates makes it from the package's
    # default selection (every certificate under mozilla/).
    dpkg-deb -x "$dir"/debs/ca-certificates_*.deb "$dir/ca"
    mkdir -p "$root/etc/ssl/certs"
    local crt
    for crt in "$dir"/ca/usr/share/ca-certificates/mozilla/*.crt; do
        cat "$crt"
        [[ $(tail -c 1 "$crt") == "" ]] || echo
    done >"$root/etc/ssl/certs/ca-certificates.crt"
    chmod 644 "$root/etc/ssl/certs/ca-certificates.crt"
    # Users and groups as distroless's nonroot variant.
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
        'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$root/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' 'nonroot:x:65532:' >"$root/etc/group"
    printf '%s\n' 'passwd: files' 'group: files' 'shadow: files' 'hosts: files dns' \
        'networks: files' 'protocols: files' 'services: files' >"$root/etc/nsswitch.conf"
    printf '%s\n' 'PRETTY_NAME="saga-platform local stand-in for distroless cc (Debian GNU/Linux 12)"' \
        'NAME="Debian GNU/Linux"' 'ID=debian' 'VERSION_ID="12"' 'VERSION_CODENAME=bookworm' >"$root/etc/os-release"
    chmod 644 "$root"/etc/{passwd,group,nsswitch.conf,os-release}
    install -d -m 0700 "$root/root"
    install -d -m 0700 -o 65532 -g 65532 "$root/home/nonroot"
    install -d -m 1777 "$root/tmp"
    ldconfig -r "$root" 2>/dev/null || true
    echo "docker import $runtime_image"
    tar -C "$root" --numeric-owner -c . | "$DOCKER" import \
        --change 'USER 65532' \
        --change 'WORKDIR /home/nonroot' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change "LABEL saga-platform.stand-in.recipe=$recipe" \
        --change "LABEL saga-platform.stand-in.of=$runtime_image" \
        --message "local stand-in for $runtime_image (scripts/base-images.sh)" \
        - "$runtime_image" >/dev/null
    rm -rf "$dir"
    echo "built $runtime_image in $((SECONDS - started)) s"
}

rust_rootfs_image="saga-platform/stand-in-rust-rootfs:${rust_full}-bookworm"
runtime_recipe=$(recipe_of build_runtime "$runtime_image")
rootfs_recipe=$(recipe_of build_rust_rootfs "$rust_image" "$rustc_full" "$(debian_mirror)")
cas_recipe=$(recipe_of build_rust_local_cas "$rootfs_recipe" "$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null)")

if ((force)) || ! current "$runtime_image" "$runtime_recipe"; then
    section "stand-in $runtime_image"
    build_runtime "$runtime_recipe"
else
    echo "stand-in $runtime_image is current"
fi
if ((force)) || ! current "$rust_rootfs_image" "$rootfs_recipe"; then
    section "stand-in $rust_image: rootfs"
    build_rust_rootfs "$rootfs_recipe"
else
    echo "stand-in rootfs $rust_rootfs_image is current"
fi
if ((force)) || ! current "$rust_image" "$cas_recipe"; then
    section "stand-in $rust_image: the machine's local CAs"
    build_rust_local_cas "$cas_recipe"
    "$DOCKER" image inspect --format "built $rust_image ({{.Size}} bytes)" "$rust_image"
else
    echo "stand-in $rust_image is current"
fi
