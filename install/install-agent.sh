#!/bin/sh
# Install the Kalkan workstation agent's system pieces.  Run as root on each lab computer,
# after the code is in /opt/kalkan (docs/proxy.md, "Operating it").
#
#   install/install-agent.sh            # this machine
#   install/install-agent.sh --root DIR # into a staging tree (tests, image building)
#   install/install-agent.sh --account-only  # step 1 only (tests on a developer machine)
#
# What it does (each step is safe to repeat):
#  1. the `kalkan-proxy` system account and group: the filtering proxy runs as it, and the
#     firewall redirect leaves exactly this uid's web traffic alone;
#  2. the state dir /var/lib/kalkan-agent (0755: the proxy reads policy.json there);
#  3. the systemd unit install/systemd/kalkan-agent.service, if shipped;
#  4. the clamd configuration, by running install/clamav/install.sh, if shipped (this root only).
# The agent itself adds the /etc/hosts line for report.kalkan and the nftables table when it runs,
# and `kalkan-agent uninstall` removes them.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=/
ACCOUNT_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
        --account-only) ACCOUNT_ONLY=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (use --root DIR, --account-only or nothing)" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    echo "run as root (it creates a system account and installs a service)" >&2
    exit 1
fi
ROOT=${ROOT%/}
PROXY_USER=kalkan-proxy

# 1. the proxy's account: no home, no login shell, no password
PREFIX=""
[ -n "$ROOT" ] && PREFIX="--prefix $ROOT"
if grep -q "^$PROXY_USER:" "$ROOT/etc/passwd"; then
    echo "account $PROXY_USER exists"
else
    # shellcheck disable=SC2086  # PREFIX is empty or two words on purpose
    useradd $PREFIX --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "Kalkan filtering proxy" "$PROXY_USER"
    echo "account $PROXY_USER created"
fi

[ "$ACCOUNT_ONLY" -eq 1 ] && exit 0

# 2. the agent's state dir
install -d -m 0755 "$ROOT/var/lib/kalkan-agent"

# 3. the service
if [ -f "$HERE/systemd/kalkan-agent.service" ]; then
    install -D -m 0644 "$HERE/systemd/kalkan-agent.service" "$ROOT/etc/systemd/system/kalkan-agent.service"
    echo "systemd unit installed: enrol with kalkan-agent enroll, then systemctl enable --now kalkan-agent"
    if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
fi

# 4. clamd (its own script writes to this machine's /etc only)
if [ -x "$HERE/clamav/install.sh" ] || [ -f "$HERE/clamav/install.sh" ]; then
    if [ -z "$ROOT" ]; then
        sh "$HERE/clamav/install.sh" || echo "clamd not configured (see above); the antivirus reports it" >&2
    else
        echo "clamd: skipped under --root (install/clamav/install.sh configures this machine only)"
    fi
fi
echo "done"
