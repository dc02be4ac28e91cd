#!/usr/bin/env bash
# HTTP CONNECT proxies for tests/proxy.rs: tinyproxy and squid from Debian 12.
# The tests start them on 127.0.0.1 with configs written at test time; no
# system service may run, so policy-rc.d (exit 101) forbids the packages'
# postinst from starting one. Idempotent; versions are pinned to Debian 12's
# upstream releases (the Debian revision follows security updates).
# Exports nothing: the tests find the binaries at /usr/bin/tinyproxy and
# /usr/sbin/squid (or WSPROBE_TEST_TINYPROXY / WSPROBE_TEST_SQUID).
set -euo pipefail
# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export DEBIAN_FRONTEND=noninteractive

# package=upstream version the tests were written against
declare -A want=([tinyproxy]=1.11.1 [squid]=5.7)

version_of() {
    dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null |
        sed -n 's/^install ok installed \(.*\)$/\1/p'
}

missing=()
for pkg in "${!want[@]}"; do
    [[ -n $(version_of "$pkg") ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=900 update
    install=()
    for pkg in "${missing[@]}"; do
        # The newest Debian revision of the pinned upstream release.
        revision=$(apt-cache madison "$pkg" | awk -v v="${want[$pkg]}-" '
            index($3, v) == 1 { print $3; exit }')
        if [[ -z $revision ]]; then
            echo "no $pkg ${want[$pkg]} in the apt sources" >&2
            exit 1
        fi
        install+=("$pkg=$revision")
    done
    apt_install "${install[@]}"
fi
for pkg in "${!want[@]}"; do
    version=$(version_of "$pkg")
    if [[ $version != "${want[$pkg]}"-* ]]; then
        echo "$pkg is $version, not ${want[$pkg]}" >&2
        exit 1
    fi
    echo "$pkg $version"
done
