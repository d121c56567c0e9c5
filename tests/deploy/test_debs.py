"""The Debian packages (install/build-debs.sh) installed, upgraded, removed and purged in a
throwaway root (tests/deploy/rootfs.py: an overlay of this machine's `/`, not a fresh
debootstrap; see docs/operations.md "What was tested").

The packages are built once per session (`bash install/build-debs.sh`, a few minutes) unless
`KALKAN_DEBS_DIR` names a folder that holds them already."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.rootfs import OverlayRoot, available

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.skipif(available() is not None, reason=str(available()))]


def bumped(deb: Path, out_dir: Path) -> Path:
    """The same package with a higher version (an upgrade to install over it)."""
    tree = out_dir / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    text = control.read_text()
    version = re.search(r"^Version: (.*)$", text, re.M).group(1)
    control.write_text(text.replace(f"Version: {version}", f"Version: {version}+upgrade1"))
    out = out_dir / deb.name.replace(version, version + "+upgrade1")
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zzstd", "-z1", "-b", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    return out


def test_agent_package_installs_upgrades_keeps_state_removes_and_purges(debs, tmp_path):
    deb = debs["kalkan-agent"]
    upgrade = bumped(deb, tmp_path)
    root = OverlayRoot(tmp_path / "root")
    binds = (str(tmp_path),)
    host_clamd = Path("/etc/clamav/clamd.conf")
    original_clamd = host_clamd.read_text() if host_clamd.exists() else None
    root.run("getent passwd kalkan-proxy && userdel kalkan-proxy; rm -rf /var/lib/kalkan-agent; true")

    out = root.run(f"dpkg -i {deb}", binds=binds)
    assert "kalkan-agent enroll" in out.stdout
    assert root.run("/usr/bin/kalkan-agent --version").stdout.startswith("kalkan-agent ")
    assert root.run("getent passwd kalkan-proxy").stdout.split(":")[6].strip() == "/usr/sbin/nologin"
    unit = root.read("/lib/systemd/system/kalkan-agent.service")
    assert "ExecStart=/opt/kalkan/venv/bin/kalkan-agent run" in unit
    assert "settings.modify.system" in root.read("/usr/share/polkit-1/rules.d/50-kalkan-networkmanager.rules")
    if original_clamd is not None:
        assert root.read("/etc/clamav/clamd.conf") == (REPO / "install/clamav/clamd.conf").read_text()
    # the environment inside is whole: the agent's modules and its proxy import
    root.run(
        "/opt/kalkan/venv/bin/python -c "
        "'import agent.runtime, agent.proxy, mitmproxy, policy_server.protocol'"
    )

    # an event waiting in the outbox (as the proxy writes it), then an upgrade in place
    emit = (
        '/opt/kalkan/venv/bin/python -c "from agent.outbox import open_sink; '
        "s = open_sink('/var/lib/kalkan-agent'); s.emit('web.report', {'url': 'http://kept.test/'})\""
    )
    root.run(emit)
    depth = (
        '/opt/kalkan/venv/bin/python -c "from agent.outbox import Outbox; '
        "print(Outbox('/var/lib/kalkan-agent/outbox.sqlite').depth())\""
    )
    assert root.run(depth).stdout.strip() == "1"
    root.run(f"dpkg -i {upgrade}", binds=binds)
    assert "+upgrade1" in root.run("dpkg-query -W -f='${Version}' kalkan-agent").stdout
    # the agent says the package's version (what the fleet page and the rollouts show), not the
    # source's, which is the same in every package built from it
    assert root.run("/usr/bin/kalkan-agent --version").stdout.strip().endswith("+upgrade1")
    assert root.run(depth).stdout.strip() == "1", "the upgrade lost the outbox's event"
    assert root.run("getent passwd kalkan-proxy", check=False).returncode == 0

    # remove: no program, unit, rule; clamd.conf as it was; the state and the account stay
    root.run("dpkg -r kalkan-agent")
    for gone in (
        "/opt/kalkan/venv",
        "/usr/bin/kalkan-agent",
        "/lib/systemd/system/kalkan-agent.service",
        "/usr/share/polkit-1/rules.d/50-kalkan-networkmanager.rules",
        "/lib/systemd/system/clamav-daemon.service.d/kalkan.conf",
        "/etc/systemd/system/multi-user.target.wants/kalkan-agent.service",
        "/etc/clamav/clamd.conf.kalkan-saved",
    ):
        assert not root.exists(gone), f"{gone} left after apt remove"
    if original_clamd is not None:
        assert root.read("/etc/clamav/clamd.conf") == original_clamd
    assert root.exists("/var/lib/kalkan-agent/outbox.sqlite")
    assert root.run("getent passwd kalkan-proxy", check=False).returncode == 0

    # purge: the state dir and the account go too
    root.run("dpkg -P kalkan-agent")
    assert not root.exists("/var/lib/kalkan-agent")
    assert root.run("getent passwd kalkan-proxy", check=False).returncode != 0
    assert root.run("getent group kalkan-proxy", check=False).returncode != 0
    assert "kalkan-agent" not in root.run("dpkg -l", check=False).stdout


def test_server_package_installs_runs_upgrades_and_purges(debs, tmp_path):
    deb = debs["kalkan-server"]
    upgrade = bumped(deb, tmp_path)
    root = OverlayRoot(tmp_path / "root")
    binds = (str(tmp_path),)
    root.run(f"dpkg -i {deb}", binds=binds)
    assert root.run("getent passwd kalkan-server").stdout.startswith("kalkan-server:")
    assert root.exists("/etc/systemd/system/multi-user.target.wants/kalkan-server.service")
    assert "KALKAN_BACKUP_DIR" in root.read("/etc/default/kalkan-server")
    # it carries the agent package it serves to the seats (the same bytes as dist/)
    carried = root.run("sha256sum /usr/share/kalkan-server/seat-packages/kalkan-agent_*_amd64.deb").stdout
    assert carried.split()[0] == hashlib.sha256(debs["kalkan-agent"].read_bytes()).hexdigest()
    # the environment inside works: as the service account, migrate, back up and check the backup
    as_server = (
        "runuser -u kalkan-server -- env KALKAN_STATE_DIR=/var/lib/kalkan-server /usr/bin/kalkan-server"
    )
    root.run(f"{as_server} migrate")
    root.run(f"{as_server} backup --out /var/backups/kalkan-server/kalkan-manual.sqlite")
    assert (
        "backup OK"
        in root.run(f"{as_server} check-backup /var/backups/kalkan-server/kalkan-manual.sqlite").stdout
    )
    # a changed conffile survives the upgrade
    root.run("echo KALKAN_PORT=9443 >> /etc/default/kalkan-server")
    root.run(f"dpkg -i --force-confold {upgrade}", binds=binds)
    assert "KALKAN_PORT=9443" in root.read("/etc/default/kalkan-server")
    assert root.exists("/var/lib/kalkan-server/kalkan.sqlite")
    root.run("dpkg -r kalkan-server")
    assert not root.exists("/opt/kalkan-server/venv")
    assert not root.exists("/lib/systemd/system/kalkan-server.service")
    assert not root.exists("/etc/systemd/system/multi-user.target.wants/kalkan-server.service")
    assert root.exists("/var/lib/kalkan-server/kalkan.sqlite")
    root.run("dpkg -P kalkan-server")
    assert not root.exists("/var/lib/kalkan-server")
    assert not root.exists("/etc/default/kalkan-server")
    assert root.run("getent passwd kalkan-server", check=False).returncode != 0
    assert root.exists("/var/backups/kalkan-server/kalkan-manual.sqlite")  # backups are kept
