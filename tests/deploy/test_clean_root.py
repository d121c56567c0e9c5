"""The issue's first "must show", on a clean Debian 12 machine (tests/deploy/cleanroot.py):
a bookworm root made by debootstrap from Debian's packages (cached by its package list under
`.cache/debian-root/`), booted with systemd as PID 1 (`systemd-nspawn -b`), in a network
namespace where a real kalkan-server listens.  In it, in order:

1. the per-room command exactly as the console shows it (read from the enrolment page in real
   Chromium; `operations.install_command`) installs the package, enrols with the room's code and
   seat name, starts the agent (systemd), and the server receives the seat's heartbeat;
2. with the server down, an event waits in the outbox; the agent is upgraded to a newer package
   from the server's own apt repository (`apt-get update && apt-get install --only-upgrade`),
   the outbox keeps the event and, with the server back, it arrives;
3. the console's rollout of a third version: the agent upgrades itself (its runner in a transient
   unit, apt-get restarting the service) and the server records "upgraded";
4. a rollout of a version whose postinst fails: the agent goes back to the third version, runs
   again, and the server records "rolled back" with the reason;
5. `apt-get remove` leaves no unit, nftables table, CA, running process, apt source (the account
   and the state stay), `apt-get purge` removes the state and the account.

One test, about 5–8 minutes on the shared 2-core machine with the root cached (building the root
the first time: about 2 minutes more).  Timings: test-artifacts/deploy/clean-root-timings.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from unittest import mock

import pytest
from sqlalchemy import select

from policy_server.db.models import Event, Workstation
from policy_server.operations.seat import pubkey_pin
from policy_server.operations.service import install_command
from tests.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.deploy.cleanroot import BootedRoot, NamespacedServer, SeatNamespace, available, debian_root
from tests.deploy.test_debs import bumped

pytestmark = [pytest.mark.root, pytest.mark.timeout(1800),
              pytest.mark.skipif(available() is not None, reason=str(available()))]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "deploy"
KALKAN_ONLY = "-o Dir::Etc::sourcelist=/etc/apt/sources.list.d/kalkan.list -o Dir::Etc::sourceparts=-"
PASSWORD = "deploy-pass-9"
OUTBOX_DEPTH = ('/opt/kalkan/venv/bin/python -c "from agent.outbox import Outbox; '
                "print(Outbox('/var/lib/kalkan-agent/outbox.sqlite').depth())\"")


def wait_for(what, predicate, timeout: float = 90.0, step: float = 0.5, seat=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    journal = seat.sh("journalctl -b --no-pager -n 80 -u kalkan-agent", check=False).stdout if seat else ""
    raise AssertionError(f"timed out waiting for {what}\n{journal}")


def room_in_console(server, name: str) -> int:
    from policy_server.school.service import ensure_room, ensure_school, get_school

    with server.db() as db:
        if get_school(db) is None:
            ensure_school(db, name="Test School", actor="test")
        room = ensure_room(db, name=name, actor="test")
        db.commit()
        return room.id


def command_from_the_console(server, ns, tmp_path, room_id: int) -> tuple[str, str]:
    """Log in as the responsible person in real Chromium (run inside the seat's network namespace,
    where the server is), make the room's code and read the one command the page shows; ky/ru/en
    screenshots at 1366×768 and 390 px.  Returns (command, code) of the last (English) page."""
    from playwright.sync_api import sync_playwright

    wrapper = tmp_path / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns.name} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    server.create_user("admin", "rp.deploy", PASSWORD, full_name="Responsible Person")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(wrapper), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 1366, "height": 768})
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto(server.url + "/login?lang=en")
            page.fill("#username", "rp.deploy")
            page.fill("#password", PASSWORD)
            page.click("form.card button[type=submit]")
            for language in ("ky", "ru", "en"):
                context.add_cookies([{"name": "lang", "value": language, "url": server.url}])
                page.goto(f"{server.url}/rooms/{room_id}")
                page.fill("#f-uses", "30")
                page.click(f"form[action='/rooms/{room_id}/codes'] button[type=submit]")
                command = page.inner_text("#install-command").strip()
                code = page.inner_text("#enrolment-code").strip()
                assert page.locator("html").get_attribute("lang") == language
                for width, height in ((1366, 768), (390, 844)):
                    page.set_viewport_size({"width": width, "height": height})
                    page.screenshot(path=str(ARTIFACTS / f"enrolment-command-{language}-{width}.png"),
                                    full_page=True)
                page.set_viewport_size({"width": 1366, "height": 768})
        finally:
            browser.close()
    return command, code


BROKEN = "kalkan test: this version cannot configure"


def cannot_configure(deb: Path, out_dir: Path) -> Path:
    """The package again, a version higher, with a postinst that fails on configure."""
    tree = out_dir / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    version = re.search(r"^Version: (.*)$", control.read_text(), re.M).group(1)
    control.write_text(control.read_text().replace(f"Version: {version}", f"Version: {version}+broken1"))
    postinst = tree / "DEBIAN" / "postinst"
    lines = postinst.read_text().split("\n")
    lines.insert(1, f'[ "$1" = configure ] && {{ echo "{BROKEN}" >&2; exit 1; }}')
    postinst.write_text("\n".join(lines))
    out = out_dir / deb.name.replace(version, version + "+broken1")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zzstd", "-z1", "-b", str(tree), str(out)],
                   check=True, capture_output=True)
    return out


def start_rollout_of(server, version: str) -> int:
    from policy_server.operations import apt_repo
    from policy_server.settings import Settings
    from policy_server.upgrades.service import start_rollout

    with server.db() as db:
        rollout = start_rollout(db, actor="test", version=version, batch_size=3,
                                available=apt_repo.versions(Settings(state_dir=server.state_dir)))
        db.commit()
        return rollout.id


def rollout_row(server, rollout_id: int, seat: str):
    from policy_server.upgrades.models import RolloutSeat

    with server.db() as db:
        return db.scalar(select(RolloutSeat).join(Workstation, Workstation.id == RolloutSeat.agent_id).where(
            RolloutSeat.rollout_id == rollout_id, Workstation.seat == seat))


def events_of(server, seat: str, type_: str) -> list[Event]:
    with server.db() as db:
        ws = db.scalar(select(Workstation).where(Workstation.seat == seat,
                                                 Workstation.token_revoked.is_(False)))
        if ws is None:
            return []
        return list(db.scalars(select(Event).where(Event.agent_id == ws.id, Event.type == type_)))


def test_room_command_on_a_clean_debian_root_installs_reports_upgrades_removes_purges(debs, tmp_path):
    timings: dict[str, float] = {}
    began = time.monotonic()
    lower = debian_root()
    timings["root_ready_s"] = time.monotonic() - began
    deb = debs["kalkan-agent"]
    (tmp_path / "newer").mkdir()
    newer = bumped(deb, tmp_path / "newer")
    ns_name = f"dp-seat-{os.getpid() % 10000}"
    with SeatNamespace(ns_name) as ns:
        state = tmp_path / "server"
        (state / "packages").mkdir(parents=True)
        shutil.copy(deb, state / "packages" / deb.name)
        with mock.patch.dict(os.environ, {"KALKAN_CHECKS_FIRST_DELAY_S": "600"}):
            server = NamespacedServer(state, ns).start()
        try:
            with BootedRoot(lower, tmp_path / "seat", ns, hostname="lab7-pc05") as seat:
                timings["boot_s"] = seat.boot_seconds
                assert seat.sh("cat /proc/1/comm").stdout.strip() == "systemd"
                assert not seat.exists("/opt/kalkan"), "the clean root already has the agent"

                # 1. the command the console shows for room lab-7 (real Chromium), pasted as is:
                #    it is the one operations.install_command builds with the server's pinned key
                room_id = room_in_console(server, "lab-7")
                command, code = command_from_the_console(server, ns, tmp_path, room_id)
                assert command == install_command("lab-7", code, server.url, pubkey_pin(server.cert_path))
                t0 = time.monotonic()
                out = seat.sh(command, timeout=300)
                timings["seat_install_s"] = time.monotonic() - t0
                assert "enrolled as lab7-pc05" in out.stdout, out.stdout + out.stderr
                assert timings["seat_install_s"] < 120, timings
                assert seat.sh("systemctl is-active kalkan-agent").stdout.strip() == "active"
                assert seat.sh("systemctl is-enabled kalkan-agent").stdout.strip() == "enabled"
                with server.db() as db:
                    ws = db.scalar(select(Workstation).where(Workstation.seat == "lab7-pc05"))
                    assert ws is not None and ws.room is not None and ws.room.name == "lab-7"
                    assert ws.hostname == "lab7-pc05"
                wait_for("the seat's heartbeat on the server",
                         lambda: events_of(server, "lab7-pc05", "agent.heartbeat"))
                timings["first_report_s"] = time.monotonic() - t0
                # what the running agent put on the machine (and remove must take away)
                wait_for("the agent's nftables table", lambda: "kalkan" in seat.sh(
                    "nft list tables", check=False).stdout, timeout=60, seat=seat)
                wait_for("the school CA in the system store", lambda: seat.exists(
                    "/usr/local/share/ca-certificates/kalkan-school-ca.crt"), timeout=60, seat=seat)
                rss_kb = int(seat.sh("ps -o rss= -C kalkan-agent | head -1 || true").stdout.strip() or 0)
                if not rss_kb:
                    pid = seat.sh("systemctl show -p MainPID --value kalkan-agent").stdout.strip()
                    rss_kb = int(seat.sh(f"ps -o rss= -p {pid}").stdout.strip())
                timings["agent_rss_mb"] = rss_kb / 1024

                # 2. a newer agent in the server's apt repository: the seat sees it (apt-get update,
                #    only the school server's source: the root has no internet) and fetches it
                assert seat.exists("/etc/apt/sources.list.d/kalkan.list")
                shutil.copy(newer, state / "packages" / newer.name)
                version = newer.name.split("_")[1]
                seat.sh(f"apt-get update {KALKAN_ONLY}")
                policy = seat.sh("apt-cache policy kalkan-agent").stdout
                assert f"Candidate: {version}" in policy, policy
                seat.sh("apt-get install -y --download-only kalkan-agent")
                #    the server is away: an event waits in the outbox while the agent is upgraded
                server.stop()
                seat.sh('/opt/kalkan/venv/bin/python -c "from agent.outbox import open_sink; '
                        "s = open_sink('/var/lib/kalkan-agent'); "
                        "s.emit('web.report', {'url': 'http://kept-over-upgrade.test/'})\"")
                assert int(seat.sh(OUTBOX_DEPTH).stdout) >= 1
                t0 = time.monotonic()
                upgrade = seat.sh("apt-get install -y --only-upgrade kalkan-agent", check=False)
                timings["upgrade_s"] = time.monotonic() - t0
                assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
                assert seat.sh("dpkg-query -W -f='${Version}' kalkan-agent").stdout == version
                assert int(seat.sh(OUTBOX_DEPTH).stdout) >= 1, "the upgrade lost the outbox"
                config = json.loads(seat.sh("cat /var/lib/kalkan-agent/config.json").stdout)
                assert config["seat"] == "lab7-pc05"
                wait_for("the upgraded agent running", lambda: seat.sh(
                    "systemctl is-active kalkan-agent", check=False).stdout.strip() == "active", timeout=30)
                with mock.patch.dict(os.environ, {"KALKAN_CHECKS_FIRST_DELAY_S": "600"}):
                    server.start()
                kept = wait_for("the kept event on the server", lambda: [
                    e for e in events_of(server, "lab7-pc05", "web.report")
                    if e.data.get("url") == "http://kept-over-upgrade.test/"], timeout=90)
                assert len(kept) == 1

                # 3. the console's rollout: the agent upgrades itself (kalkan-agent upgrade in a
                #    transient unit of its own, apt-get installs the package fetched from the server,
                #    prerm stops the agent, postinst starts the new one) and reports the result
                (tmp_path / "third").mkdir()
                third = bumped(newer, tmp_path / "third")
                shutil.copy(third, state / "packages" / third.name)
                third_version = third.name.split("_")[1]
                dropin = "/etc/systemd/system/kalkan-agent.service.d"  # the test's: ask every 2 s
                seat.sh(f"mkdir -p {dropin} && printf '[Service]\\nEnvironment=KALKAN_UPGRADE_POLL_S=2\\n' "
                        f"> {dropin}/poll.conf && systemctl daemon-reload && systemctl restart kalkan-agent")
                rid = start_rollout_of(server, third_version)
                t0 = time.monotonic()
                row = wait_for("the seat's upgrade result", lambda: (
                    r if (r := rollout_row(server, rid, "lab7-pc05")) is not None and r.state != "offered"
                    else None), timeout=400, seat=seat)
                timings["console_upgrade_s"] = time.monotonic() - t0
                assert row.state == "upgraded", (row.state, row.reason_code, row.reason)
                assert row.from_version == version
                assert seat.sh("dpkg-query -W -f='${Version}' kalkan-agent").stdout == third_version
                assert seat.sh("systemctl is-active kalkan-agent", check=False).stdout.strip() == "active"
                wait_for("the agent.upgrade event", lambda: [
                    e for e in events_of(server, "lab7-pc05", "agent.upgrade")
                    if e.data.get("rollout") == rid])

                # 4. a version that cannot configure: the agent goes back to the one it had, under
                #    systemd, and the server says why
                (tmp_path / "broken").mkdir()
                broken = cannot_configure(third, tmp_path / "broken")
                shutil.copy(broken, state / "packages" / broken.name)
                rid = start_rollout_of(server, broken.name.split("_")[1])
                t0 = time.monotonic()
                row = wait_for("the seat's rollback", lambda: (
                    r if (r := rollout_row(server, rid, "lab7-pc05")) is not None and r.state != "offered"
                    else None), timeout=400, seat=seat)
                timings["console_rollback_s"] = time.monotonic() - t0
                assert row.state == "rolled_back", (row.state, row.reason_code, row.reason)
                assert row.reason_code == "install_failed" and BROKEN in row.reason, row.reason
                assert seat.sh("dpkg-query -W -f='${Status} ${Version}' kalkan-agent").stdout == (
                    f"install ok installed {third_version}")
                wait_for("the agent running again", lambda: seat.sh(
                    "systemctl is-active kalkan-agent", check=False).stdout.strip() == "active", timeout=60)
                seat.sh(f"rm -rf {dropin} && systemctl daemon-reload")

                # 5. remove: nothing of the agent's is left but its state and account
                seat.sh("apt-get remove -y kalkan-agent")
                assert seat.sh("dpkg-query -W -f='${Status}' kalkan-agent", check=False).stdout.startswith(
                    "deinstall ok config-files")
                units = seat.sh("systemctl list-unit-files 'kalkan*' --no-legend", check=False).stdout
                assert "kalkan" not in units, units
                assert not seat.exists("/lib/systemd/system/kalkan-agent.service")
                assert not seat.exists("/etc/systemd/system/multi-user.target.wants/kalkan-agent.service")
                assert "kalkan" not in seat.sh("nft list tables", check=False).stdout
                assert not seat.exists("/usr/local/share/ca-certificates/kalkan-school-ca.crt")
                assert "kalkan" not in seat.sh("ls /etc/ssl/certs", check=False).stdout.lower()
                assert not seat.exists("/opt/kalkan") and not seat.exists("/usr/bin/kalkan-agent")
                assert not seat.exists("/etc/apt/sources.list.d/kalkan.list")
                assert not seat.exists("/etc/apt/keyrings/kalkan-server.crt")
                # (the bracket keeps pgrep's own shell, whose command line holds the pattern, out)
                assert seat.sh("pgrep -f '[/]opt/kalkan/venv'", check=False).returncode == 1
                assert seat.sh("getent passwd kalkan-proxy", check=False).returncode == 0
                assert seat.exists("/var/lib/kalkan-agent/outbox.sqlite")

                # purge: the state and the account go too
                seat.sh("apt-get purge -y kalkan-agent")
                assert seat.sh("dpkg-query -W kalkan-agent", check=False).returncode != 0
                assert not seat.exists("/var/lib/kalkan-agent")
                assert seat.sh("getent passwd kalkan-proxy", check=False).returncode == 2
                assert seat.sh("getent group kalkan-proxy", check=False).returncode == 2
        finally:
            server.stop()
    timings["total_s"] = time.monotonic() - began
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "clean-root-timings.json").write_text(json.dumps(
        {k: round(v, 1) for k, v in timings.items()}, indent=2) + "\n")
