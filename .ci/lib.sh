# shellcheck shell=bash
# Shared by .ci/run and the .ci/install-*.sh scripts (sourced, not run).

# apt_install PKG...: installs Debian packages (names, or name=version)
# without starting any service they bring: the tests start their own on
# 127.0.0.1. policy-rc.d (exit 101) forbids every postinst to start one
# while they install, and is removed again however apt ends. Run
# `apt-get update` first where the package lists may be missing or old.
apt_install() {
    local policy=/usr/sbin/policy-rc.d made=0 rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        made=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y \
        --no-install-recommends "$@" || rc=$?
    if ((made)); then
        rm -f "$policy"
    fi
    return "$rc"
}
