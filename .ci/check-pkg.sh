#!/usr/bin/env bash
# Packaging checks (issue 16), each with the real tool. Needs root on
# Debian 12 and what .ci/install-pkg.sh installs.
#
# usage: bash .ci/check-pkg.sh          the host checks:
#          1. systemd-analyze security --offline=yes on dist/systemd/wsprobe.service:
#             fails above an overall exposure of 2.0
#          2. shellcheck on the procd init script and the packaging scripts;
#             the init script's procd calls, with procd's functions stubbed
#          3. cargo deb (amd64, from scripts/build-arm.sh amd64), dpkg -i; the installed
#             /usr/bin/wsprobe checks /etc/wsprobe/config.json;
#             systemd-analyze verify on the installed unit (verify needs the
#             ExecStart binary to exist, so it runs here); man -l on the page
#          4. dpkg --purge, then nothing of the package is left
#        bash .ci/check-pkg.sh arm      after the ARM builds (.ci/run's ARM
#             stages): the aarch64 and armv7 .ipk packages (scripts/build-ipk.sh)
#             and the arm64 and armhf .deb packages from the same static
#             binaries; checks each one's layout, control fields and files
# Every package must be under 1 MB (1,000,000 bytes), issue 16's figure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Where scripts/build-arm.sh leaves the static binaries.
router_dir="${CARGO_TARGET_DIR:-$(pwd)/target/router}"
MAX_EXPOSURE=2.0
MAX_PACKAGE_BYTES=1000000

say() { printf 'check-pkg: %s\n' "$*"; }
die() { printf 'check-pkg: FAIL: %s\n' "$*" >&2; exit 1; }

# under_budget FILE: a package must be under 1 MB.
under_budget() {
    local size
    size="$(stat -c %s "$1")"
    ((size < MAX_PACKAGE_BYTES)) || die "$1 is $size bytes, not under $MAX_PACKAGE_BYTES"
    say "$(basename "$1"): $size bytes (under $MAX_PACKAGE_BYTES)"
}

check_unit_security() {
    local unit=dist/systemd/wsprobe.service report exposure
    report="$(systemd-analyze security --offline=yes "$unit")" ||
        die "systemd-analyze security failed on $unit"
    exposure="$(sed -n 's/.*Overall exposure level for wsprobe.service: \([0-9.]*\).*/\1/p' <<<"$report")"
    [[ -n $exposure ]] || die "no overall exposure in: $report"
    awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' ||
        die "$unit: exposure $exposure is above $MAX_EXPOSURE:"$'\n'"$(grep '✗' <<<"$report")"
    # The same bound through systemd's own threshold (0-100 scale).
    systemd-analyze security --offline=yes --threshold=20 "$unit" >/dev/null ||
        die "$unit: systemd-analyze --threshold=20 refused it"
    say "$unit: exposure $exposure (at most $MAX_EXPOSURE)"
}

check_shell() {
    shellcheck -x dist/openwrt/wsprobe/files/wsprobe.init dist/openwrt/examples/wsprobe-wan-check.sh \
        dist/debian/postrm \
        scripts/build-ipk.sh .ci/check-pkg.sh .ci/install-pkg.sh
    say "shellcheck: clean"
}

# The init script's start_service under a POSIX sh (dash), with procd's
# functions replaced by stubs that record their calls: it must ask for the
# instance, the config file watch, SIGHUP on reload and respawn.
check_init_script() {
    local calls expected
    calls="$(sh -c '
        procd_open_instance() { echo "open_instance $*"; }
        procd_set_param() { echo "set_param $*"; }
        procd_close_instance() { echo "close_instance $*"; }
        . "$1"
        start_service
    ' sh dist/openwrt/wsprobe/files/wsprobe.init)" || die "the init script failed under sh: $calls"
    expected="open_instance 
set_param command /usr/bin/wsprobe run -c /etc/wsprobe/config.json
set_param file /etc/wsprobe/config.json
set_param reload_signal HUP
set_param respawn
set_param stdout 1
set_param stderr 1
close_instance "
    [[ $calls == "$expected" ]] || die "the init script's procd calls differ:"$'\n'"$calls"
    say "init script: start_service asks procd for respawn, the file watch and SIGHUP"
}

check_deb_host() {
    # std from source with optimize_for_size: the normal release build
    # makes a package just over 1 MB.
    bash scripts/build-arm.sh amd64
    local deb
    # cargo deb prints the package's path last.
    deb="$(CARGO_TARGET_DIR="$router_dir" cargo deb --no-build --locked --target x86_64-unknown-linux-gnu | tail -n 1)"
    [[ $deb == *_amd64.deb && -f $deb ]] || die "cargo deb made no amd64 package: $deb"
    under_budget "$deb"

    # A package left by an earlier run would hide what this one installs.
    if dpkg-query -W -f='${Status}' wsprobe 2>/dev/null | grep -q installed; then
        dpkg --purge wsprobe
    fi
    local files
    files="$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }')"
    dpkg -i "$deb"
    local f
    for f in /usr/bin/wsprobe /etc/wsprobe/config.json /usr/lib/systemd/system/wsprobe.service \
        /usr/share/man/man1/wsprobe.1.gz /usr/share/wsprobe/config.schema.json; do
        [[ -e $f ]] || die "$f is not installed"
    done
    grep -qx /etc/wsprobe/config.json /var/lib/dpkg/info/wsprobe.conffiles ||
        die "/etc/wsprobe/config.json is not a conffile"
    (cd / && /usr/bin/wsprobe check -c /etc/wsprobe/config.json) ||
        die "the installed wsprobe refuses the installed config"
    say "installed: wsprobe check -c /etc/wsprobe/config.json: valid"
    # Offline (PID 1 need not be systemd): --man=no skips looking up
    # Documentation= pages, which is not what is checked here.
    # verify exits 0 on a value it cannot parse ("Failed to parse ...,
    # ignoring"), so anything it prints is a failure too.
    local said
    said="$(systemd-analyze verify --man=no /usr/lib/systemd/system/wsprobe.service 2>&1)" ||
        die "systemd-analyze verify refused the installed unit: $said"
    [[ -z $said ]] || die "systemd-analyze verify complained about the installed unit: $said"
    say "installed: systemd-analyze verify: clean"
    local page
    page="$(MANWIDTH=80 man -l /usr/share/man/man1/wsprobe.1.gz 2>&1)" ||
        die "man -l failed: $page"
    grep -q 'wsprobe - a WebSocket probe agent' <<<"$page" ||
        die "man -l shows no NAME line: $page"
    say "installed: man -l wsprobe.1.gz renders"

    dpkg --purge wsprobe
    ! dpkg-query -W -f='${Status}' wsprobe 2>/dev/null | grep -q 'installed' ||
        die "wsprobe is still installed after dpkg --purge"
    local left=()
    while IFS= read -r f; do
        [[ -z $f || ! -e $f ]] || left+=("$f")
    done <<<"$files"
    [[ ! -e /etc/wsprobe ]] || left+=(/etc/wsprobe)
    [[ ! -e /usr/share/wsprobe ]] || left+=(/usr/share/wsprobe)
    ((${#left[@]} == 0)) || die "left after dpkg --purge: ${left[*]}"
    say "purged: nothing of the package is left"
}

# check_ipk FILE ARCH: the outer format opkg reads and what is inside.
check_ipk() {
    local ipk=$1 arch=$2 work
    under_budget "$ipk"
    gzip -t "$ipk" || die "$ipk is not gzip'd"
    local members
    members="$(tar -tzf "$ipk" | tr '\n' ' ')"
    [[ $members == "./debian-binary ./data.tar.gz ./control.tar.gz " ]] ||
        die "$ipk holds: $members"
    work="$(mktemp -d /tmp/wsprobe-ipk-check.XXXXXX)"
    tar -xzf "$ipk" -C "$work"
    [[ "$(cat "$work/debian-binary")" == 2.0 ]] || die "$ipk: debian-binary is not 2.0"
    local control data
    control="$(tar -xzOf "$work/control.tar.gz" ./control)"
    grep -qx "Package: wsprobe" <<<"$control" || die "$ipk: no Package: wsprobe"
    grep -qx "Architecture: $arch" <<<"$control" || die "$ipk: Architecture is not $arch"
    grep -q '^Version: ' <<<"$control" || die "$ipk: no Version"
    [[ "$(tar -xzOf "$work/control.tar.gz" ./conffiles)" == /etc/wsprobe/config.json ]] ||
        die "$ipk: conffiles is not /etc/wsprobe/config.json"
    data="$(tar -tvzf "$work/data.tar.gz")"
    grep -q '^-rwxr-xr-x 0/0 .* ./usr/bin/wsprobe$' <<<"$data" || die "$ipk: no /usr/bin/wsprobe: $data"
    grep -q '^-rwxr-xr-x 0/0 .* ./etc/init.d/wsprobe$' <<<"$data" || die "$ipk: no init script: $data"
    grep -q '^-rw------- 0/0 .* ./etc/wsprobe/config.json$' <<<"$data" || die "$ipk: no config: $data"
    mkdir "$work/root"
    tar -xzf "$work/data.tar.gz" -C "$work/root"
    cmp -s "$work/root/etc/init.d/wsprobe" dist/openwrt/wsprobe/files/wsprobe.init ||
        die "$ipk: the init script differs from dist/openwrt/wsprobe/files/wsprobe.init"
    local qemu="qemu-aarch64"
    [[ $arch == aarch64* ]] || qemu="qemu-arm"
    "$qemu" "$work/root/usr/bin/wsprobe" check -c "$work/root/etc/wsprobe/config.json" ||
        die "$ipk: the packaged wsprobe (under $qemu) refuses its config"
    rm -rf "$work"
    say "$(basename "$ipk"): layout, control, conffiles, files: OK"
}

# check_arm_deb TRIPLE DEBARCH: cargo deb from the static binary.
check_arm_deb() {
    local triple=$1 debarch=$2 deb
    [[ -x $router_dir/$triple/release/wsprobe ]] || die "no $triple binary: run the ARM builds first"
    deb="$(CARGO_TARGET_DIR="$router_dir" cargo deb --no-build --no-strip --locked --target "$triple" | tail -n 1)"
    [[ $deb == *_"$debarch".deb && -f $deb ]] || die "cargo deb made no $debarch package: $deb"
    under_budget "$deb"
    [[ "$(dpkg-deb -f "$deb" Architecture)" == "$debarch" ]] || die "$deb: Architecture is not $debarch"
    dpkg-deb -c "$deb" | grep -q ' ./usr/bin/wsprobe$' || die "$deb: no /usr/bin/wsprobe"
}

case "${1:-host}" in
    host)
        check_unit_security
        check_shell
        check_init_script
        check_deb_host
        ;;
    arm)
        mapfile -t built < <(scripts/build-ipk.sh all)
        ((${#built[@]} == 2)) || die "build-ipk.sh made ${#built[@]} packages, not 2"
        check_ipk "${built[0]% *}" aarch64_cortex-a53
        check_ipk "${built[1]% *}" arm_cortex-a7_neon-vfpv4
        check_arm_deb aarch64-unknown-linux-musl arm64
        check_arm_deb armv7-unknown-linux-musleabihf armhf
        ;;
    *) die "usage: $0 [host|arm]" ;;
esac
say "done"
