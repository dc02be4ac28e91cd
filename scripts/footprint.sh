#!/usr/bin/env bash
# The footprint of wsprobe on x86_64, glibc and static musl builds side by
# side, as one table on stdout (the steps' own output goes to stderr):
#
#   binary size          bytes of the stripped release binary
#   once, 1 wss://       peak RSS (GNU time %M) of `wsprobe once` with one
#                        wss:// round-trip probe: scripts/peak-rss.sh, the
#                        largest of its runs
#   run, 10 idle         RSS of `wsprobe run` at ~10 s with 10 wss://
#                        round-trip probes at interval 60000 ms, each of
#                        which has run once (agent_load -- idle)
#   run, 1000 waiting    RSS of `wsprobe run` while 1000 wss:// round-trip
#                        probes (timeout 30000 ms) hold their connections to a
#                        server that completes TLS and the upgrade but never
#                        replies; total and divided by 1000
#                        (agent_load -- waiting-wss)
#   CPU per probe        user + system CPU of `wsprobe probe URL --count N
#                        --interval-ms 0` per run, whole process (agent_load
#                        -- cpu: 2000 ws:// round trips, 1000 wss://
#                        handshakes), both builds; and probe_cpu's figure
#                        (cargo bench --bench probe_cpu: in-process, the
#                        probing thread only, glibc bench build)
#
# usage: scripts/footprint.sh [--no-musl]
#
# The musl build is made with scripts/build-arm.sh x86_64-musl when the
# rustup target x86_64-unknown-linux-musl is installed (and not with
# --no-musl). The load scenarios run the glibc-built bench against either
# binary through WSPROBE_BIN; its servers run in the bench process and are
# not counted. Targets (musl): run with 10 probes <= 3 MB, 1000 waiting
# wss:// probes <= 45 MB (MB = 1024 KiB, as /proc and GNU time report
# KiB). The script reports and does not judge: the exit status is 0 unless
# a build or a step failed. Builds run one after the other; the whole
# takes a few minutes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
musl=x86_64-unknown-linux-musl
idle_target_kb=3072
waiting_target_kb=46080

die() { printf 'footprint: %s\n' "$*" >&2; exit 1; }
step() { printf '\nfootprint: %s\n' "$*" >&2; }

with_musl=1
case "${1:-}" in
    '') ;;
    --no-musl) with_musl=0 ;;
    -h | --help) sed -n '2,34p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (usage: $0 [--no-musl])" ;;
esac
(($# <= 1)) || die "too many arguments (usage: $0 [--no-musl])"
# The table's rows name their probe counts: no overrides.
unset WSPROBE_LOAD_PROBES WSPROBE_LOAD_RUNS WSPROBE_LOAD_SECS WSPROBE_BENCH_N WSPROBE_BIN

work="$(mktemp -d "${TMPDIR:-/tmp}/wsprobe-footprint.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Runs a step with its output on stderr and in $work/NAME.
logged() {
    local name=$1
    shift
    "$@" 2>&1 | tee "$work/$name" >&2
}

# The value of KEY on the `result: SCENARIO ...` line of a log, or n/a.
result() {
    local value
    value="$(grep "^result: $2 " "$work/$1" 2>/dev/null | tail -n 1 | tr ' ' '\n' |
        sed -n "s/^$3=//p")"
    printf '%s' "${value:-n/a}"
}

# --- builds, one at a time -------------------------------------------------
step "building the benches (cargo bench --no-run) and the glibc binary (cargo build --release)"
cargo bench --locked --bench agent_load --bench probe_cpu --no-run >&2
# A bench build writes target/release/wsprobe too, with the features the
# dev-dependencies switch on (tungstenite's server handshake): the copy
# measured here is the binary that ships, made after it.
cargo build --locked --release --bin wsprobe >&2
glibc_bin="$work/wsprobe-glibc"
cp "$target_dir/release/wsprobe" "$glibc_bin" || die "no binary at $target_dir/release/wsprobe"
builds=("glibc:$glibc_bin")
if ((with_musl)); then
    if rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
        step "building the musl binary (scripts/build-arm.sh x86_64-musl)"
        scripts/build-arm.sh x86_64-musl >&2
        builds+=("musl:$target_dir/$musl/release/wsprobe")
    else
        echo "footprint: $musl is not installed (rustup target add $musl); glibc only" >&2
    fi
fi

# --- measurements ------------------------------------------------------------
step "peak RSS of \`wsprobe once\` (scripts/peak-rss.sh)"
peak_args=()
((${#builds[@]} > 1)) || peak_args=(--no-musl)
if ! logged peak-rss scripts/peak-rss.sh "${peak_args[@]}"; then
    echo "footprint: scripts/peak-rss.sh failed; its row shows n/a" >&2
fi

for build in "${builds[@]}"; do
    name="${build%%:*}"
    bin="${build#*:}"
    step "$name: cargo bench --bench agent_load -- idle waiting-wss cpu (WSPROBE_BIN=$bin)"
    logged "load-$name" env WSPROBE_BIN="$bin" \
        cargo bench --locked --bench agent_load -- idle waiting-wss cpu ||
        die "$name: the agent_load bench failed"
done

step "cargo bench --bench probe_cpu"
logged probe-cpu cargo bench --locked --bench probe_cpu || die "the probe_cpu bench failed"
probe_cpu() { # "ws://" or "wss://": CPU/run in us
    sed -n "s|^  $1 *[a-z_]* *CPU/run *\([0-9.]*\) us.*|\1|p" "$work/probe-cpu" | head -n 1
}

# --- the table -------------------------------------------------------------
verdict() { # value target
    if [[ $1 =~ ^[0-9]+$ ]]; then
        if (($1 <= $2)); then echo met; else echo MISSED; fi
    else
        echo '?'
    fi
}

names=()
for build in "${builds[@]}"; do names+=("${build%%:*}"); done

row() { # label, then one cell per build, then the target column
    local label=$1
    shift
    printf '%-50s' "$label"
    local i
    for ((i = 0; i < ${#names[@]}; i++)); do printf ' %14s' "$1"; shift; done
    printf '   %s\n' "${*:-}"
}

declare -A size peak idle idle_hwm wait_kb wait_per wait_held cpu_ws cpu_wss
# shellcheck disable=SC2034 # the arrays are read through namerefs (cells, target_for)
for build in "${builds[@]}"; do
    n="${build%%:*}"
    bin="${build#*:}"
    size[$n]="$(stat -c %s "$bin")"
    peak[$n]="$(sed -n "s/^  $n *\([0-9]*\) KB peak.*/\1/p" "$work/peak-rss" 2>/dev/null)"
    peak[$n]="${peak[$n]:-n/a}"
    idle[$n]="$(result "load-$n" idle rss_kb)"
    idle_hwm[$n]="$(result "load-$n" idle hwm_kb)"
    wait_kb[$n]="$(result "load-$n" waiting-wss rss_kb)"
    wait_per[$n]="$(result "load-$n" waiting-wss per_probe_kb)"
    wait_held[$n]="$(result "load-$n" waiting-wss held)"
    cpu_ws[$n]="$(result "load-$n" cpu ws_us)"
    cpu_wss[$n]="$(result "load-$n" cpu wss_us)"
done

cells() { # array name, unit: one cell per build
    local -n values=$1
    local n
    for n in "${names[@]}"; do printf '%s\n' "${values[$n]} $2"; done
}
target_for() { # array name, target KB: the verdict for the musl build (else the last)
    local -n values=$1
    local judged="${names[-1]}"
    printf '<= %s KB (musl), %s: %s' "$2" "$judged" "$(verdict "${values[$judged]}" "$2")"
}

echo
echo "wsprobe footprint, x86_64 ($(date -u +%Y-%m-%dT%H:%MZ); KB = KiB, MB = 1024 KiB)"
row "" "${names[@]}" "target"
mapfile -t c < <(cells size bytes)
row "binary size (stripped)" "${c[@]}"
mapfile -t c < <(cells peak KB)
row "peak RSS, \`once\` with 1 wss:// probe" "${c[@]}" "(peak-rss.sh: <= 4096 KB)"
mapfile -t c < <(cells idle KB)
row "RSS, \`run\` with 10 idle wss:// probes, at 10 s" "${c[@]}" "$(target_for idle $idle_target_kb)"
mapfile -t c < <(cells idle_hwm KB)
row "  (its peak, VmHWM)" "${c[@]}"
mapfile -t c < <(cells wait_kb KB)
row "RSS, \`run\` with 1000 waiting wss:// probes" "${c[@]}" \
    "$(target_for wait_kb $waiting_target_kb)"
mapfile -t c < <(cells wait_per KB)
row "  per probe (RSS / 1000)" "${c[@]}"
mapfile -t c < <(cells wait_held "")
row "  connections held open at the server" "${c[@]}"
mapfile -t c < <(cells cpu_ws us)
row "CPU per ws:// round trip, \`probe --count 2000\`" "${c[@]}" "(whole process)"
mapfile -t c < <(cells cpu_wss us)
row "CPU per wss:// handshake, \`probe --count 1000\`" "${c[@]}" "(whole process)"
printf '%-50s %14s   %s\n' "CPU per ws:// round trip, probe_cpu bench" "$(probe_cpu 'ws://') us" \
    "(glibc, in-process, probing thread; target <= 150 us)"
printf '%-50s %14s   %s\n' "CPU per wss:// handshake, probe_cpu bench" "$(probe_cpu 'wss://') us" \
    "(glibc, in-process, probing thread; target <= 550 us)"
