#!/usr/bin/env bash
# Debian's Prometheus server (which ships promtool) and node_exporter, for
# tests/prometheus.rs. Idempotent and pinned to Debian 12's versions.
# Neither may run as a system service: the tests start their own on
# 127.0.0.1 with configs written at test time, so policy-rc.d (exit 101)
# forbids the postinst to start them, and they are stopped and disabled
# if a service manager started them anyway.
set -euo pipefail
# shellcheck source=.ci/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROMETHEUS_VERSION='2.42.0+ds-5+deb12u1'
NODE_EXPORTER_VERSION='1.5.0-1+b6'

installed_version() {
    dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null |
        sed -n 's/^install ok installed //p'
}

wanted=()
[[ $(installed_version prometheus) == "$PROMETHEUS_VERSION" ]] ||
    wanted+=("prometheus=$PROMETHEUS_VERSION")
[[ $(installed_version prometheus-node-exporter) == "$NODE_EXPORTER_VERSION" ]] ||
    wanted+=("prometheus-node-exporter=$NODE_EXPORTER_VERSION")

if ((${#wanted[@]})); then
    echo "installing: ${wanted[*]}"
    apt-get -o DPkg::Lock::Timeout=900 update
    apt_install "${wanted[@]}"
else
    echo "already installed: prometheus $PROMETHEUS_VERSION, prometheus-node-exporter $NODE_EXPORTER_VERSION"
fi
# Where systemd runs, make sure no packaged service holds the ports.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    for unit in prometheus prometheus-node-exporter; do
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
fi
promtool --version | head -n 1
prometheus-node-exporter --version 2>&1 | head -n 1
