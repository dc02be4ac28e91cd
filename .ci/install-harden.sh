#!/usr/bin/env bash
# Installs what the fuzz targets (fuzz/, .ci/check-harden.sh) need: a pinned
# nightly toolchain (libFuzzer's sanitizer flags are nightly-only) and a
# pinned cargo-fuzz. Idempotent: each step is skipped when its result is
# there. Exports nothing; the versions are read by check-harden.sh from
# here (FUZZ_TOOLCHAIN, CARGO_FUZZ_VERSION).
set -euo pipefail

FUZZ_TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly-2026-05-19}"
CARGO_FUZZ_VERSION="${CARGO_FUZZ_VERSION:-0.13.2}"

if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
    return 0 # sourced for the versions only
fi

if rustup run "$FUZZ_TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    echo "already installed: $FUZZ_TOOLCHAIN"
else
    rustup toolchain install "$FUZZ_TOOLCHAIN" --profile minimal
fi

if cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    echo "already installed: cargo-fuzz $CARGO_FUZZ_VERSION"
else
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
rustup run "$FUZZ_TOOLCHAIN" rustc --version
cargo fuzz --version
