#!/usr/bin/env bash
# A clean Debian 12 (bookworm) root for the seat-install test (tests/deploy/test_clean_root.py),
# built once with debootstrap from Debian's packages and cached, keyed by the package list:
#
#   bash install/debian-root.sh            # prints the root's path (.cache/debian-root/<key>/root)
#
# What is in it: Debian's minbase, systemd as init (the test boots it with systemd-nspawn -b),
# curl and sudo (the per-room command), and the Debian packages kalkan-agent depends on
# (clamav, nftables, ...): on a lab PC these come from the school's usual mirror; here they
# are in the image so the timed install fetches nothing from the internet.
# KALKAN_DEBIAN_MIRROR picks the mirror (default: the one this machine's apt uses).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
mirror=${KALKAN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
include=systemd,systemd-sysv,dbus,libpam-systemd,sudo,curl,ca-certificates,iproute2,python3,passwd,nftables,clamav-daemon,clamav-freshclam,libnss3-tools,libpcap0.8,procps
key=$(printf '%s\n' bookworm minbase "$include" "$(sha256sum "$0" | cut -c1-16)" | sha256sum | cut -c1-16)
cache=${KALKAN_ROOT_CACHE:-$repo/.cache/debian-root}
dest=$cache/$key
if [ -f "$dest/ok" ]; then echo "$dest/root"; exit 0; fi
rm -rf "$dest"; mkdir -p "$dest"
began=$(date +%s)
debootstrap --variant=minbase --include="$include" bookworm "$dest/root" "$mirror" >"$dest/debootstrap.log" 2>&1 \
    || { tail -20 "$dest/debootstrap.log" >&2; exit 1; }
r=$dest/root
# a seat as the IT person leaves it: a host name, no root password, apt's cache emptied
echo seat > "$r/etc/hostname"
apt_sources="deb $mirror bookworm main"
echo "$apt_sources" > "$r/etc/apt/sources.list"
chroot "$r" apt-get clean
# don't let units that need hardware or the internet slow the boot in a container
for u in clamav-freshclam.service; do ln -sf /dev/null "$r/etc/systemd/system/$u"; done
echo "$(( $(date +%s) - began ))" > "$dest/build-seconds"
touch "$dest/ok"
echo "$dest/root"
