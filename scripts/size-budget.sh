#!/usr/bin/env bash
# The size budget for routers: the stripped, static aarch64 musl release
# binary must not be larger than 1.8 MB.
#
# Definition used: 1.8 MB = 1,800,000 bytes (decimal megabytes, SI; not
# MiB, which would be 1,887,436 bytes), compared with the binary's file
# size in bytes (`stat -c %s`), i.e. what it takes on the router's flash
# before any compression by the firmware image.
#
# usage: scripts/size-budget.sh [--binary PATH]
#   without --binary: build it with scripts/build-arm.sh aarch64 (release
#   profile: stripped, lto, opt-level "s") and check that.
#   --binary PATH: check an existing binary instead (must be a stripped
#   64-bit ARM ELF file).
# Exit 0 within budget, 1 over budget (or not a stripped aarch64 ELF),
# 2 usage error.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUDGET_BYTES=1800000

fail() { printf 'size-budget: FAIL: %s\n' "$*" >&2; exit 1; }

bin=""
while (($#)); do
    case $1 in
        --binary)
            (($# >= 2)) || { echo "size-budget: --binary needs a path" >&2; exit 2; }
            bin="$2"
            shift 2
            ;;
        -h | --help)
            sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "size-budget: unknown argument: $1 (try --help)" >&2
            exit 2
            ;;
    esac
done

if [[ -z $bin ]]; then
    # build-arm.sh prints "<path> <bytes>" as its last line.
    line="$(scripts/build-arm.sh aarch64 | tail -n 1)" || fail "the aarch64 build failed"
    bin="${line% *}"
fi

[[ -f $bin ]] || fail "no such file: $bin"

# ELF, 64-bit, little endian, e_machine 183 (EM_AARCH64).
magic="$(od -An -N4 -tx1 "$bin" | tr -d ' \n')"
class="$(od -An -j4 -N1 -tu1 "$bin" | tr -d ' ')"
machine="$(od -An -j18 -N2 -tu2 --endian=little "$bin" | tr -d ' ')"
[[ $magic == 7f454c46 && $class == 2 && $machine == 183 ]] ||
    fail "$bin is not a 64-bit ARM (aarch64) ELF binary"
# Stripped: no symbol table. The budget is about the shipped binary.
if command -v readelf >/dev/null && readelf -S -W "$bin" | grep -q ' \.symtab '; then
    fail "$bin is not stripped (has .symtab); the budget applies to the stripped binary"
fi

size="$(stat -c %s "$bin")"
pct=$((size * 100 / BUDGET_BYTES))
if ((size > BUDGET_BYTES)); then
    fail "$bin is $size bytes, over the budget of $BUDGET_BYTES bytes (1.8 MB) by $((size - BUDGET_BYTES)) bytes"
fi
printf 'size-budget: OK: %s is %s bytes, budget %s bytes (1.8 MB): %s%% used, %s bytes to spare\n' \
    "$bin" "$size" "$BUDGET_BYTES" "$pct" "$((BUDGET_BYTES - size))"
