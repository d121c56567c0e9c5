#!/bin/sh
# Remove the Kalkan workstation agent's system pieces: the mirror of install-agent.sh.
#
#   install/uninstall-agent.sh            # this machine
#   install/uninstall-agent.sh --root DIR # a staging tree (tests, image building)
#   install/uninstall-agent.sh --keep-state  # keep /var/lib/kalkan-agent (logs, quarantine)
#
# What it does (each step is safe to repeat):
#  1. on this machine: stops the service and runs `kalkan-agent uninstall` (the firewall table,
#     the hosts line, the school CA in the system store, Firefox and NSS; each collector's own);
#  2. the systemd unit;
#  3. the state dir /var/lib/kalkan-agent, unless --keep-state (the antivirus quarantine is in it:
#     keep it if a quarantined file may still have to be restored);
#  4. the `kalkan-proxy` account and group, last: nothing runs as it any more.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=""
KEEP_STATE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
        --keep-state) KEEP_STATE=1; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (use --root DIR, --keep-state or nothing)" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    echo "run as root (it removes a system account and a service)" >&2
    exit 1
fi
ROOT=${ROOT%/}
PROXY_USER=kalkan-proxy

# 1. what the running agent installed (this machine only: it acts on the live system)
if [ -z "$ROOT" ]; then
    if [ -d /run/systemd/system ] && systemctl is-active --quiet kalkan-agent 2>/dev/null; then
        systemctl disable --now kalkan-agent || true
    fi
    AGENT="$HERE/../.venv/bin/kalkan-agent"
    if [ -x "$AGENT" ]; then
        "$AGENT" uninstall || echo "kalkan-agent uninstall reported a problem (see above); going on" >&2
    else
        echo "no $AGENT: skipped the agent's own clean-up (firewall table, hosts line, CA)" >&2
    fi
else
    echo "agent clean-up: skipped under --root (it acts on this machine's firewall and stores)"
fi

# 2. the service
if [ -f "$ROOT/etc/systemd/system/kalkan-agent.service" ]; then
    rm -f "$ROOT/etc/systemd/system/kalkan-agent.service"
    echo "systemd unit removed"
    if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
fi

# 3. the state dir
if [ "$KEEP_STATE" -eq 0 ] && [ -d "$ROOT/var/lib/kalkan-agent" ]; then
    rm -rf "$ROOT/var/lib/kalkan-agent"
    echo "state dir removed"
fi

# 4. the proxy's account
PREFIX=""
[ -n "$ROOT" ] && PREFIX="--prefix $ROOT"
if grep -q "^$PROXY_USER:" "$ROOT/etc/passwd"; then
    # shellcheck disable=SC2086  # PREFIX is empty or two words on purpose
    userdel $PREFIX "$PROXY_USER"
    echo "account $PROXY_USER removed"
else
    echo "account $PROXY_USER not present"
fi
echo "done"
