#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time, from its committed
# seeds; fails on any crash, hang, leak or property failure (libFuzzer
# exits non-zero and leaves the input in fuzz/artifacts/<target>/).
#
# usage: bash .ci/check-harden.sh [SECONDS_PER_TARGET]   (default 45)
# Needs what .ci/install-harden.sh installs. Each target runs alone, one
# job, so the whole check takes the build plus 5 x SECONDS.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=install-harden.sh disable=SC1091
source .ci/install-harden.sh
SECONDS_PER_TARGET="${1:-45}"

cd fuzz
# Release with debug assertions and overflow checks (cargo-fuzz's default).
cargo "+$FUZZ_TOOLCHAIN" fuzz build
failed=()
for target in $(cargo "+$FUZZ_TOOLCHAIN" fuzz list); do
    extra=()
    options=(-max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    case "$target" in
        config_load)
            extra=(../tests/fixtures/config)
            options+=(-dict=dict/config_load.dict)
            ;;
    esac
    echo "==> fuzz $target for ${SECONDS_PER_TARGET}s"
    # A scratch corpus: the committed seeds (and fixtures) are read only.
    scratch="$(mktemp -d)"
    if ! cargo "+$FUZZ_TOOLCHAIN" fuzz run "$target" "$scratch" "corpus/$target" \
        "${extra[@]}" -- "${options[@]}"; then
        failed+=("$target")
    fi
    rm -rf "$scratch"
done
if ((${#failed[@]})); then
    echo "fuzz targets failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "all fuzz targets ran ${SECONDS_PER_TARGET}s without a failure"
