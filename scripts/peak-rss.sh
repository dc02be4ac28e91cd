#!/usr/bin/env bash
# Peak resident memory of one `wsprobe once` run: one wss:// round-trip probe
# against a local echo server (Python `websockets`, TLS with a CA and a
# 127.0.0.1 leaf made here with openssl), measured by GNU time (`%M`, KB).
#
#   glibc        `cargo build --release` (target/release/wsprobe)
#   musl         x86_64-unknown-linux-musl, static, through
#                scripts/build-arm.sh x86_64-musl; only when that rustup
#                target is installed (and not with --no-musl)
#
# usage: scripts/peak-rss.sh [--no-musl]
#
# Each binary runs RUNS times (default 5, env WSPROBE_RSS_RUNS); the script
# prints every figure and the largest beside the budget (4 MB = 4096 KB).
# It reports and does not judge: the exit status is 0 unless a build, the
# server or a probe failed. Builds run one after the other.
# The server's Python is ${WSPROBE_TEST_PYTHON:-/opt/wsprobe-test/bin/python}
# (websockets 15, as .ci/run installs it).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
python="${WSPROBE_TEST_PYTHON:-/opt/wsprobe-test/bin/python}"
runs="${WSPROBE_RSS_RUNS:-5}"
budget_kb=4096
musl=x86_64-unknown-linux-musl

die() { printf 'peak-rss: %s\n' "$*" >&2; exit 1; }

with_musl=1
case "${1:-}" in
    '') ;;
    --no-musl) with_musl=0 ;;
    -h | --help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (usage: $0 [--no-musl])" ;;
esac
(($# <= 1)) || die "too many arguments (usage: $0 [--no-musl])"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "WSPROBE_RSS_RUNS=$runs: expected a positive integer"
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (apt-get install time)"
command -v openssl >/dev/null || die "openssl not found"
"$python" -c 'import websockets' 2>/dev/null ||
    die "$python cannot import websockets (set WSPROBE_TEST_PYTHON, or see .ci/run)"

work="$(mktemp -d "${TMPDIR:-/tmp}/wsprobe-rss.XXXXXX")"
server_pid=
cleanup() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# --- builds, one at a time -------------------------------------------------
builds=()
cargo build --locked --release --bin wsprobe
builds+=("glibc:$target_dir/release/wsprobe")
if ((with_musl)); then
    if rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
        scripts/build-arm.sh x86_64-musl >/dev/null
        builds+=("musl:$target_dir/$musl/release/wsprobe")
    else
        echo "peak-rss: $musl is not installed (rustup target add $musl); glibc only" >&2
    fi
fi

# --- certificates and the wss:// echo server (scripts/wss-echo.sh) ---------
# shellcheck source=scripts/wss-echo.sh
. scripts/wss-echo.sh
wss_echo_certs "$work"
wss_echo_start "$python" "$work"

cat >"$work/config.json" <<EOF
{
  "probes": [
    { "name": "rss", "url": "wss://127.0.0.1:$port/",
      "interpretation": "round_trip_latency", "send_message": "ping",
      "timeout_ms": 5000, "tls": { "ca_file": "$work/ca.pem" } }
  ]
}
EOF

# --- measure ----------------------------------------------------------------
echo "peak RSS of \`wsprobe once\` (one wss:// round_trip_latency probe), $runs runs per build:"
for build in "${builds[@]}"; do
    name="${build%%:*}"
    bin="${build#*:}"
    [[ -x $bin ]] || die "no binary at $bin"
    figures=()
    for _ in $(seq "$runs"); do
        if ! /usr/bin/time -f %M -o "$work/rss" "$bin" once -c "$work/config.json" \
            >"$work/record" 2>"$work/stderr"; then
            die "$name: the probe failed: $(cat "$work/record" "$work/stderr")"
        fi
        grep -q '"reason":null' "$work/record" || die "$name: unexpected record: $(cat "$work/record")"
        figures+=("$(tail -n 1 "$work/rss")")
    done
    peak="$(printf '%s\n' "${figures[@]}" | sort -n | tail -n 1)"
    verdict=met
    ((peak <= budget_kb)) || verdict=MISSED
    printf '  %-6s %s KB peak (runs: %s)  target <= %s KB  %s  [binary %s bytes]\n' \
        "$name" "$peak" "${figures[*]}" "$budget_kb" "$verdict" "$(stat -c %s "$bin")"
done
