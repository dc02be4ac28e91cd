#!/usr/bin/env bash
# Install what scripts/build-arm.sh and .ci/arm-smoke.sh need, on a bare
# Debian 12 machine as root, without Docker. Idempotent: every step is
# skipped when its result is already there, and `apt-get update` runs at
# most once, only when a package is missing.
#
# usage: scripts/install-cross-deps.sh [--armv7]
#
#   (always)  apt: qemu-user clang lld; rustup targets
#             x86_64-unknown-linux-musl aarch64-unknown-linux-musl; rust-src
#             (the router builds compile std from source; for armv7 this
#             registry mirror has no prebuilt std at all)
#   --armv7   also: a venv /opt/zig with ziglang and cargo-zigbuild from PyPI
#             (zig links the armv7 binary). Needs python3-venv (installed
#             here if missing).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Versions pinned so a new upload to PyPI cannot change the armv7 build.
ZIGLANG_VERSION=0.17.0
CARGO_ZIGBUILD_VERSION=0.24.0
ZIG_VENV=/opt/zig

armv7=false
for arg in "$@"; do
    case $arg in
        --armv7) armv7=true ;;
        -h | --help)
            sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "install-cross-deps: unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

say() { printf 'install-cross-deps: %s\n' "$*"; }

# --- Debian packages ---------------------------------------------------------
pkgs=(qemu-user clang lld)
$armv7 && pkgs+=(python3-venv)
missing=()
for pkg in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    say "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
else
    say "apt: ${pkgs[*]} already installed"
fi

# --- Rust targets and components ---------------------------------------------
# For the toolchain active in this directory (rustup honours a
# rust-toolchain file here, if the project ever adds one).
installed_targets="$(rustup target list --installed)"
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    if grep -qx "$target" <<<"$installed_targets"; then
        say "rustup: target $target already installed"
    else
        rustup target add "$target"
    fi
done

# Both router builds compile std from source (scripts/build-arm.sh).
if rustup component list --installed | grep -q '^rust-src'; then
    say "rustup: rust-src already installed"
else
    rustup component add rust-src
fi

if $armv7; then

    zig_ok() {
        "$ZIG_VENV/bin/python" -m ziglang version >/dev/null 2>&1 &&
            "$ZIG_VENV/bin/cargo-zigbuild" --version >/dev/null 2>&1
    }
    if zig_ok; then
        say "zig: $ZIG_VENV already has ziglang $("$ZIG_VENV/bin/python" -m ziglang version)" \
            "and $("$ZIG_VENV/bin/cargo-zigbuild" --version)"
    else
        # Debian's python3 (the one python3-venv serves), not a pyenv shim.
        base_python=/usr/bin/python3
        [[ -x $base_python ]] || base_python="$(command -v python3)"
        "$ZIG_VENV/bin/python" -c '' 2>/dev/null || "$base_python" -m venv --clear "$ZIG_VENV"
        "$ZIG_VENV/bin/python" -m pip install --quiet \
            "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
        zig_ok
        say "zig: installed into $ZIG_VENV"
    fi
fi

say "done"
