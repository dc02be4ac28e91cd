#!/usr/bin/env bash
# Build OpenWrt .ipk packages of wsprobe from the static musl binaries,
# without the OpenWrt SDK, in the layout OpenWrt's scripts/ipkg-build
# writes for opkg (OpenWrt 23.05 and 24.10): a gzip'd tar holding
# ./debian-binary ("2.0"), ./data.tar.gz and ./control.tar.gz.
#
# usage: scripts/build-ipk.sh [aarch64|armv7|all] [--arch ARCH]   (default all)
#
#   aarch64   Architecture aarch64_cortex-a53 (MediaTek Filogic, MT7622,
#             IPQ807x...); the binary runs on any aarch64 CPU
#   armv7     Architecture arm_cortex-a7_neon-vfpv4 (IPQ40xx, ...); the
#             binary needs ARMv7 with VFPv3-D16 or better
#   --arch    another opkg architecture (`opkg print-architecture` on the
#             router lists its own), for one target only
#
# The binaries come from scripts/build-arm.sh (built if missing; cargo does
# nothing when they are current). Output: $CARGO_TARGET_DIR (default
# ./target)/ipk/wsprobe_<version>-1_<arch>.ipk, one line per package:
# "<path> <size in bytes>". SOURCE_DATE_EPOCH (default: the last commit's
# time) fixes every timestamp, so the same binary gives the same .ipk.
# Needs GNU tar, gzip and zopfli (Debian package zopfli): zopfli writes
# plain gzip some 2.5 % smaller than gzip -9, which keeps the aarch64
# package under 1 MB. OpenWrt 25.12 moved to apk: no .apk is built here.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out_dir="$target_dir/ipk"
feed="$root/dist/openwrt/wsprobe"

die() { printf 'build-ipk: %s\n' "$*" >&2; exit 1; }

what=all
arch_override=""
while (($#)); do
    case $1 in
        aarch64 | armv7 | all) what=$1; shift ;;
        --arch) (($# >= 2)) || die "--arch needs a value"; arch_override=$2; shift 2 ;;
        -h | --help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
done
[[ -z $arch_override || $what != all ]] || die "--arch applies to one target: name aarch64 or armv7"

version="$(sed -n 's/^PKG_VERSION:=//p' "$feed/Makefile")"
release="$(sed -n 's/^PKG_RELEASE:=//p' "$feed/Makefile")"
cargo_version="$(sed -n '0,/^version = /s/^version = "\(.*\)"/\1/p' Cargo.toml)"
[[ $version == "$cargo_version" ]] ||
    die "dist/openwrt/wsprobe/Makefile says PKG_VERSION $version, Cargo.toml $cargo_version"
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

command -v zopfli >/dev/null || die "zopfli not found (apt-get install zopfli, or bash .ci/install-pkg.sh)"

# tar_gz DIR OUT: a reproducible gzip'd tar of DIR's contents, as ipkg-build
# makes, compressed by zopfli (gzip format; no name, mtime 0).
tar_gz() {
    (cd "$1" && tar --format=gnu --sort=name --numeric-owner --owner=0 --group=0 \
        --mtime="@$epoch" -cf - .) >"$2.tar"
    zopfli -c "$2.tar" >"$2"
    rm -f "$2.tar"
}

build_one() {
    local target=$1 arch=$2 line bin
    line="$(scripts/build-arm.sh "$target" | tail -n 1)" || die "the $target build failed"
    bin="${line% *}"
    [[ -x $bin ]] || die "no binary at $bin"

    local work
    work="$(mktemp -d /tmp/wsprobe-ipk.XXXXXX)"
    # shellcheck disable=SC2064 # expand now: the trap must remove this $work
    trap "rm -rf '$work'" RETURN

    # data: what the feed Makefile's Package/wsprobe/install puts on the router.
    local data="$work/data"
    install -D -m 0755 "$bin" "$data/usr/bin/wsprobe"
    install -D -m 0600 "$feed/files/config.json" "$data/etc/wsprobe/config.json"
    install -D -m 0755 "$feed/files/wsprobe.init" "$data/etc/init.d/wsprobe"

    local control="$work/control" size
    mkdir -p "$control"
    size="$(du -sb --apparent-size "$data" | cut -f1)"
    cat >"$control/control" <<CONTROL
Package: wsprobe
Version: $version-$release
Source: dist/openwrt/wsprobe
SourceName: wsprobe
License: Apache-2.0 MIT
Section: net
SourceDateEpoch: $epoch
Maintainer: wsprobe developers <wsprobe@invalid>
Architecture: $arch
Installed-Size: $size
Description: WebSocket probe agent: one JSON line per run with how long a
 ws:// or wss:// socket took to open or to answer, or a reason code. Records
 go to the system log (logread -e wsprobe). Static musl binary.
CONTROL
    printf '/etc/wsprobe/config.json\n' >"$control/conffiles"
    # OpenWrt's standard maintainer scripts, as the SDK writes them: they
    # enable the init script on install and stop it on removal.
    cat >"$control/postinst" <<'SCRIPT'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
default_postinst "$0" "$@"
SCRIPT
    cat >"$control/prerm" <<'SCRIPT'
#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
default_prerm "$0" "$@"
SCRIPT
    chmod 0755 "$control/postinst" "$control/prerm"

    local outer="$work/outer"
    mkdir -p "$outer" "$out_dir"
    printf '2.0\n' >"$outer/debian-binary"
    tar_gz "$data" "$outer/data.tar.gz"
    tar_gz "$control" "$outer/control.tar.gz"
    local ipk="$out_dir/wsprobe_${version}-${release}_${arch}.ipk"
    (cd "$outer" && tar --format=gnu --numeric-owner --owner=0 --group=0 --mtime="@$epoch" \
        -cf - ./debian-binary ./data.tar.gz ./control.tar.gz) | gzip -n -9 >"$ipk"
    printf '%s %s\n' "$ipk" "$(stat -c %s "$ipk")"
}

case $what in
    aarch64) build_one aarch64 "${arch_override:-aarch64_cortex-a53}" ;;
    armv7) build_one armv7 "${arch_override:-arm_cortex-a7_neon-vfpv4}" ;;
    all)
        build_one aarch64 aarch64_cortex-a53
        build_one armv7 arm_cortex-a7_neon-vfpv4
        ;;
esac
