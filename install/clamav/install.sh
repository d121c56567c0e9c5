#!/bin/sh
# Install the clamd configuration Kalkan's agent expects.  Run as root on a workstation.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
if [ ! -x /usr/sbin/clamd ]; then
    echo "clamd is missing: apt-get install clamav-daemon clamav-freshclam" >&2
    exit 1
fi
install -m 0644 "$HERE/clamd.conf" /etc/clamav/clamd.conf
install -d /etc/systemd/system/clamav-daemon.service.d
install -m 0644 "$HERE/kalkan-clamd.conf" /etc/systemd/system/clamav-daemon.service.d/kalkan.conf
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now clamav-freshclam.service 2>/dev/null || true
    systemctl restart clamav-daemon.service
fi
echo "clamd configured for Kalkan (socket /run/clamav/clamd.ctl)"
