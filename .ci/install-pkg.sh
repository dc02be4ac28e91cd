#!/usr/bin/env bash
# Installs what packaging needs (issue 16), on a bare Debian 12 machine as
# root. Idempotent: each step is skipped when its result is already there.
#
#   apt      shellcheck (the procd init script), man-db (`man -l` on the
#            page), systemd (`systemd-analyze verify/security --offline`),
#            zopfli (the .ipk's gzip members, smaller than gzip -9)
#   cargo    cargo-deb, pinned, into cargo's own bin directory
#   rustup   rust-src (the amd64 .deb's binary builds std from source:
#            scripts/build-arm.sh amd64)
#   venv     jsonschema, pinned, into the shared test venv
#            /opt/wsprobe-test (tests/schema.rs runs it; created by .ci/run)
#
# Exports nothing. usage: bash .ci/install-pkg.sh
set -euo pipefail
# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CARGO_DEB_VERSION=3.8.0
JSONSCHEMA_VERSION=4.26.0
VENV=/opt/wsprobe-test

say() { printf 'install-pkg: %s\n' "$*"; }

# --- Debian packages ---------------------------------------------------------
pkgs=(shellcheck man-db systemd zopfli)
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
    # systemd's postinst must not start anything here: policy-rc.d (exit
    # 101) forbids it while the packages install.
    apt_install "${missing[@]}"
else
    say "apt: ${pkgs[*]} already installed"
fi

# --- cargo-deb ---------------------------------------------------------------
if [[ "$(cargo deb --version 2>/dev/null)" == *" $CARGO_DEB_VERSION"* ]]; then
    say "cargo-deb $CARGO_DEB_VERSION already installed"
else
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

# --- rust-src, for std built from source --------------------------------------
if rustup component list --installed | grep -q '^rust-src'; then
    say "rustup: rust-src already installed"
else
    rustup component add rust-src
fi

# --- jsonschema in the test venv ---------------------------------------------
has_jsonschema() {
    "$VENV/bin/python" -c "import sys; from importlib.metadata import version; \
sys.exit(version('jsonschema') != '$JSONSCHEMA_VERSION')" 2>/dev/null
}
if has_jsonschema; then
    say "jsonschema $JSONSCHEMA_VERSION already in $VENV"
else
    [[ -x $VENV/bin/python ]] || { say "$VENV is missing (.ci/run creates it)"; exit 1; }
    "$VENV/bin/python" -m pip install --quiet "jsonschema==$JSONSCHEMA_VERSION"
    has_jsonschema
    say "installed jsonschema $JSONSCHEMA_VERSION into $VENV"
fi

say "done"
