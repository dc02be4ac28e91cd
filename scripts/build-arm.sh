#!/usr/bin/env bash
# Build static release binaries of wsprobe for routers, the way
# shared RECIPES.md says works on Debian 12 without Docker:
#
#   aarch64      aarch64-unknown-linux-musl: clang compiles ring's C/asm,
#                rust-lld links (musl's crt and libc come with the target);
#                std is built from source too, so LTO reaches into it.
#   armv7        armv7-unknown-linux-musleabihf: no prebuilt std here, so std
#                is built from source (-Zbuild-std on stable, through
#                RUSTC_BOOTSTRAP=1) and zig links (cargo-zigbuild).
#   x86_64-musl  x86_64-unknown-linux-musl, static, for comparison and for
#                x86 appliances.
#   amd64        x86_64-unknown-linux-gnu (glibc) for the amd64 .deb: std
#                from source as above, but opt-level "s" and every default
#                feature, as a server-side far end (reflect over wss://)
#                wants; not part of "all".
#   all          aarch64, armv7 and x86_64-musl, one after the other.
#
# usage: scripts/build-arm.sh [aarch64|armv7|x86_64-musl|amd64|all]   (default aarch64)
#
# Prerequisites: scripts/install-cross-deps.sh (add --armv7 for armv7).
# The release profile (Cargo.toml) is opt-level "s", lto, codegen-units 1,
# strip, panic "unwind"; these builds take opt-level "z" instead (ring keeps
# its opt-level 2 from Cargo.toml) and build std from source with the same
# profile: together about 120 KB less on aarch64, for a few per cent more
# CPU outside the cryptography (docs/figures.md has both measured). std is
# built with its `optimize_for_size` feature (smaller sorts and number
# formatting): 164 KB less on aarch64, no CPU difference measured.
# CARGO_PROFILE_RELEASE_* variables override the profile.
# Output goes to $CARGO_TARGET_DIR (default ./target/router)/<triple>/release/wsprobe.
# Prints one line per binary: "<path> <size in bytes>".
# Features: these builds leave out the default cargo feature `reflect-tls`
# (wss:// for `wsprobe reflect`, about 98 KB on aarch64, docs/reflect.md) to
# keep within the 1.8 MB budget; WSPROBE_FEATURES="reflect-tls" (any cargo
# feature list) builds with it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
# A target directory of their own: std built from source for these targets
# failed to link (compiler-builtins' f128 symbols missing) in a directory
# that also held the host's release build, and built fine in a fresh one.
target_dir="${CARGO_TARGET_DIR:-$root/target/router}"
export CARGO_TARGET_DIR="$target_dir"
ZIG_VENV="${ZIG_VENV:-/opt/zig}"

die() { printf 'build-arm: %s\n' "$*" >&2; exit 1; }

features=(--no-default-features)
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-z}"
# No file, line and column in panic messages: some 50 KB of strings (a
# caught panic still becomes a record with its message).
location_flag="-Zlocation-detail=none"
panic="${CARGO_PROFILE_RELEASE_PANIC:-unwind}"
case $panic in
    unwind) std_crates=std,panic_unwind ;;
    abort) std_crates=std,panic_abort ;;
    *) die "CARGO_PROFILE_RELEASE_PANIC=$panic: expected unwind or abort" ;;
esac
std_flags=("-Zbuild-std=$std_crates" -Zbuild-std-features=optimize_for_size)
if [[ -n ${WSPROBE_FEATURES:-} ]]; then
    features+=(--features "$WSPROBE_FEATURES")
fi

report() {
    local bin="$target_dir/$1/release/wsprobe"
    [[ -f $bin ]] || die "expected binary not found: $bin"
    printf '%s %s\n' "$bin" "$(stat -c %s "$bin")"
}

build_aarch64() {
    command -v clang >/dev/null || die "clang not found: run scripts/install-cross-deps.sh"
    CC_aarch64_unknown_linux_musl=clang \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="$location_flag" \
    RUSTC_BOOTSTRAP=1 \
        cargo build --locked --release "${features[@]}" "${std_flags[@]}" --bin wsprobe \
        --target aarch64-unknown-linux-musl
    report aarch64-unknown-linux-musl
}

build_x86_64_musl() {
    command -v clang >/dev/null || die "clang not found: run scripts/install-cross-deps.sh"
    CC_x86_64_unknown_linux_musl=clang \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
        cargo build --locked --release "${features[@]}" --bin wsprobe --target x86_64-unknown-linux-musl
    report x86_64-unknown-linux-musl
}

build_amd64() {
    CARGO_PROFILE_RELEASE_OPT_LEVEL="${WSPROBE_AMD64_OPT_LEVEL:-s}" \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$location_flag" \
    RUSTC_BOOTSTRAP=1 \
        cargo build --locked --release "${std_flags[@]}" --bin wsprobe --target x86_64-unknown-linux-gnu
    report x86_64-unknown-linux-gnu
}

build_armv7() {
    [[ -x $ZIG_VENV/bin/cargo-zigbuild ]] ||
        die "$ZIG_VENV/bin/cargo-zigbuild not found: run scripts/install-cross-deps.sh --armv7"
    # std must be rebuilt with the same panic strategy as the profile:
    # panic_unwind for "unwind" (Cargo.toml), panic_abort when overridden.
    # zig brings its own musl crt objects: do not add Rust's self-contained ones.
    PATH="$ZIG_VENV/bin:$PATH" \
    RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS="-C link-self-contained=no $location_flag" \
        cargo zigbuild --locked "${features[@]}" "${std_flags[@]}" --release --bin wsprobe \
        --target armv7-unknown-linux-musleabihf
    report armv7-unknown-linux-musleabihf
}

what="${1:-aarch64}"
(($# <= 1)) || die "too many arguments (usage: $0 [aarch64|armv7|x86_64-musl|amd64|all])"
case $what in
    aarch64) build_aarch64 ;;
    armv7) build_armv7 ;;
    x86_64-musl) build_x86_64_musl ;;
    amd64) build_amd64 ;;
    all)
        build_aarch64
        build_armv7
        build_x86_64_musl
        ;;
    -h | --help) sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown target $what (usage: $0 [aarch64|armv7|x86_64-musl|amd64|all])" ;;
esac
