#!/usr/bin/env bash
# Hostile input from the supply chain and from the wire, offline:
#
#   scripts/supply-chain.sh deny   cargo deny check (advisories, licenses, bans, sources; deny.toml)
#   scripts/supply-chain.sh fuzz   every fuzz target of fuzz/ for a bounded time
#   scripts/supply-chain.sh        both
#
# Installs what is missing first, at pinned versions: cargo-deny and
# cargo-fuzz from crates.io (`cargo install --locked`), and RustSec's
# advisory database from the git bundle ../shared/advisory-db.bundle (the
# folder beside the repository; there is no network for
# github.com/rustsec/advisory-db). The database is cloned afresh on every run
# into target/advisory-dbs, where deny.toml points.
#
# FUZZ_SECONDS (default 30) bounds each target's run; FUZZ_TARGETS (default:
# all of `cargo fuzz list`) picks targets. New inputs found during a run go to
# target/fuzz-corpus/<target>, not to the committed seeds in
# fuzz/corpus/<target>; a crash is saved in fuzz/artifacts/<target>/ and fails
# the run (`cargo fuzz run <target> <file>` replays it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

CARGO_DENY_VERSION=0.20.2
CARGO_FUZZ_VERSION=0.13.2
# The folder cargo-deny 0.20 derives from the advisory-db URL in deny.toml
# (`url_to_db_path`: the URL's last segment and its xxHash64); a new
# cargo-deny version may derive another: the check then fails on a missing
# database, naming the folder it looked for.
ADVISORY_DB_DIR=target/advisory-dbs/advisory-db-3157b0e258782691
ADVISORY_DB_BUNDLE=${ADVISORY_DB_BUNDLE:-../shared/advisory-db.bundle}

# cargo_install CRATE VERSION: `cargo install --locked` unless that version
# answers (the binary itself: cargo's list of what it once installed stays
# behind when the binary is gone).
#
# Built for a short build, not for peak speed: cargo-deny's own release
# profile asks for fat LTO and one codegen unit, which made its install take
# 11 of a cold CI run's minutes; these tools run for seconds, so opt-level 1,
# no LTO and 16 codegen units (overriding the crates' profiles through
# cargo's environment configuration).
cargo_install() {
    local crate=$1 version=$2
    if [[ $(cargo "${crate#cargo-}" --version 2>/dev/null) == "$crate $version" ]]; then
        return 0
    fi
    echo "Installing $crate $version from crates.io"
    local started=$SECONDS
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=off \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=false \
        cargo install --locked --quiet --force "$crate" --version "$version"
    echo "Installed $crate $version in $((SECONDS - started)) s"
}

deny() {
    cargo_install cargo-deny "$CARGO_DENY_VERSION"
    [[ -f $ADVISORY_DB_BUNDLE ]] || die "no advisory database bundle at $ADVISORY_DB_BUNDLE"
    rm -rf "$ADVISORY_DB_DIR"
    mkdir -p "$(dirname "$ADVISORY_DB_DIR")"
    git clone --quiet "$ADVISORY_DB_BUNDLE" "$ADVISORY_DB_DIR"
    echo "advisory database: $(git -C "$ADVISORY_DB_DIR" log -1 --format='%h %s')"
    # cargo-deny reads crates' manifests (licenses) from the local registry.
    cargo fetch --locked --quiet
    cargo deny --offline --color never check --hide-inclusion-graph --show-stats
}

# The toolchain cargo fuzz builds with: nightly (sanitizers, -Z flags), or
# the stable one with RUSTC_BOOTSTRAP=1 when no nightly is installed (rustup
# cannot download one without network).
fuzz_toolchain=+nightly
if ! cargo +nightly --version >/dev/null 2>&1; then
    fuzz_toolchain=+stable
fi

cargo_fuzz() {
    if [[ $fuzz_toolchain == +stable ]]; then
        (cd fuzz && RUSTC_BOOTSTRAP=1 cargo +stable fuzz "$@")
    else
        (cd fuzz && cargo +nightly fuzz "$@")
    fi
}

fuzz() {
    cargo_install cargo-fuzz "$CARGO_FUZZ_VERSION"
    [[ $fuzz_toolchain == +nightly ]] || echo "warning: no nightly toolchain; fuzzing with stable and RUSTC_BOOTSTRAP=1"
    local seconds=${FUZZ_SECONDS:-30} root=$PWD
    local targets=(${FUZZ_TARGETS:-})
    if ((${#targets[@]} == 0)); then
        mapfile -t targets < <(cargo_fuzz list)
    fi
    # The fuzz crate is not a workspace member: `cargo fmt --all` skips it.
    (cd fuzz && cargo fmt --check)
    # 16 codegen units (cargo fuzz's default is 1) and no AddressSanitizer
    # (the fuzzed code is safe Rust: what can go wrong is a panic or a failed
    # property, caught without it) for a shorter cold build in CI; otherwise
    # cargo fuzz's defaults: release mode, debug assertions.
    local build=(--target-dir "$root/target/fuzz" --codegen-units 16 --sanitizer none)
    # One build for every target (they share their dependencies).
    cargo_fuzz build "${build[@]}"
    local target dict
    for target in "${targets[@]}"; do
        section "fuzz $target (${seconds} s)"
        mkdir -p "target/fuzz-corpus/$target"
        dict=()
        [[ -f fuzz/dict/$target.dict ]] && dict=("-dict=$root/fuzz/dict/$target.dict")
        cargo_fuzz run "${build[@]}" "$target" \
            "$root/target/fuzz-corpus/$target" "$root/fuzz/corpus/$target" -- \
            -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${dict[@]}"
    done
}

case ${1:-all} in
    deny) deny ;;
    fuzz) fuzz ;;
    all)
        deny
        fuzz
        ;;
    *) die "usage: $0 [deny|fuzz]" ;;
esac
