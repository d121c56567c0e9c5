#!/usr/bin/env bash
# Install the Debian packages listed in install/apt-packages.txt that are missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$here/apt-packages.txt" | grep -v '^$')
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "kalkan: these Debian packages are missing: ${missing[*]}" >&2
  echo "kalkan: run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "kalkan: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Debian starts a package's services on install (clamd, freshclam, PostgreSQL, E2Guardian…).
# Kalkan starts its own instances when it needs them, so keep them from starting: the
# standard policy-rc.d switch, removed again afterwards (only if we made it).
made_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=yes
fi
trap 'if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for svc in clamav-daemon clamav-freshclam postgresql e2guardian; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
done
