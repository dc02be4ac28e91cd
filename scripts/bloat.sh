#!/usr/bin/env bash
# What the aarch64 release binary is made of: `cargo bloat --crates` on the
# static aarch64 musl build (docs/figures.md, "What the binary is made of").
#
# usage: scripts/bloat.sh [N] [-- extra cargo args, e.g. --features reflect-tls]
#   N: how many crates to list (default 10)
#
# The build is the router build's (scripts/build-arm.sh aarch64): opt-level
# "z", std from source with optimize_for_size, no panic locations, no
# default features. cargo-bloat needs the symbols that the release profile
# strips, so this builds with CARGO_PROFILE_RELEASE_STRIP=false into its own target dir
# ($CARGO_TARGET_DIR or ./target, under bloat/); the sizes it reports are
# those of the code and data in .text, the same in the stripped binary.
# Installs cargo-bloat (pinned) when it is missing. Needs what
# scripts/build-arm.sh aarch64 needs (scripts/install-cross-deps.sh).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CARGO_BLOAT_VERSION=0.12.1

n=10
if (($#)) && [[ $1 != -- ]]; then n=$1; shift; fi
[[ ${1:-} != -- ]] || shift

if [[ "$(cargo bloat --version 2>/dev/null)" != *"$CARGO_BLOAT_VERSION"* ]]; then
    cargo install cargo-bloat --version "$CARGO_BLOAT_VERSION" --locked
fi

CC_aarch64_unknown_linux_musl=clang \
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-Zlocation-detail=none" \
CARGO_PROFILE_RELEASE_OPT_LEVEL=z \
CARGO_PROFILE_RELEASE_STRIP=false \
RUSTC_BOOTSTRAP=1 \
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(pwd)/target}/bloat" \
    cargo bloat --locked --release --bin wsprobe --target aarch64-unknown-linux-musl \
    --no-default-features -Zbuild-std=std,panic_unwind -Zbuild-std-features=optimize_for_size \
    --crates -n "$n" "$@"
