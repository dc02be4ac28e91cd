#!/bin/sh
# Checks a WebSocket backend through each WAN of a multi-WAN (mwan3) router
# and logs when one stops or starts working through a WAN. mwan3 cannot run
# wsprobe as a tracker (its track methods are fixed: ping, arping, httping,
# nping, nslookup), so this runs beside it, from cron:
#
#   echo '* * * * * /usr/bin/wsprobe-wan-check.sh' >>/etc/crontabs/root
#   /etc/init.d/cron restart
#
# or from /etc/mwan3.user on ACTION=connected for the interface that came up.
# Edit URL and WANS (the logical interface names of /etc/config/network).
URL="wss://stream.example.com/socket"
WANS="wan wanb"
STATE=/tmp/wsprobe-wan-check

# OpenWrt's helpers: network_get_device sets a variable by name.
# shellcheck source=/dev/null
. /lib/functions/network.sh

mkdir -p "$STATE"
for wan in $WANS; do
	dev=""
	network_get_device dev "$wan" || continue
	# Exit 0: the socket opened; 1: it did not (the record says why).
	if wsprobe probe "$URL" --interface "$dev" --timeout-ms 5000 \
		--label "wan=$wan" >"$STATE/$wan.json" 2>/dev/null; then
		if [ -e "$STATE/$wan.down" ]; then
			rm -f "$STATE/$wan.down"
			logger -t wsprobe "$URL works again through $wan ($dev)"
		fi
	elif [ ! -e "$STATE/$wan.down" ]; then
		touch "$STATE/$wan.down"
		reason="$(jsonfilter -i "$STATE/$wan.json" -e '@.reason' 2>/dev/null)"
		logger -p daemon.warn -t wsprobe "$URL fails through $wan ($dev): ${reason:-no record}"
	fi
done
