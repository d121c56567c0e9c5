"""Seat install on a clean Debian 12 machine (issue 16), as tests/deploy/test_clean_root.py sets it up:

    sudo .venv/bin/python benchmarks/deploy/clean_root.py [--rounds 3]   # needs dist/*.deb

The debootstrap root (install/debian-root.sh, cached; its build time is reported from the cache),
booted with systemd as PID 1 (systemd-nspawn -b) on a fresh overlay each round, in a network
namespace with a real kalkan-server.  Timed per round: the boot, the room's command
(`install_command`: download, hash, apt install, enrol, systemctl enable --now) and the time
until the server has the seat's first heartbeat.  Then the agent's RSS under systemd with every
collector (platform linux), 20 s after start.  Side by side with the goals: install ≤ 120 s,
agent RSS ≤ 50 MB (install/systemd/kalkan-agent.service).  Appends to benchmarks/deploy/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402

from policy_server.db.models import Event, Workstation  # noqa: E402
from policy_server.operations.seat import pubkey_pin  # noqa: E402
from policy_server.operations.service import install_command  # noqa: E402
from tests.deploy.cleanroot import BootedRoot, NamespacedServer, SeatNamespace, debian_root  # noqa: E402


def heartbeat_seen(server, seat: str) -> bool:
    with server.db() as db:
        ws = db.scalar(select(Workstation).where(Workstation.seat == seat))
        return ws is not None and db.scalar(
            select(Event.id).where(Event.agent_id == ws.id, Event.type == "agent.heartbeat").limit(1)
        ) is not None


def one_round(lower: Path, deb: Path, work: Path, n: int, measure_rss: bool) -> dict:
    with SeatNamespace(f"dp-bench-{n}") as ns:
        state = work / f"server-{n}"
        (state / "packages").mkdir(parents=True)
        shutil.copy(deb, state / "packages" / deb.name)
        with mock.patch.dict(os.environ, {"KALKAN_CHECKS_FIRST_DELAY_S": "600"}):
            server = NamespacedServer(state, ns).start()
        try:
            with BootedRoot(lower, work / f"seat-{n}", ns, hostname=f"bench-pc{n:02d}") as seat:
                code = server.make_enrollment_code(room="bench", uses=5)
                command = install_command("bench", code, server.url, pubkey_pin(server.cert_path))
                t0 = time.monotonic()
                seat.sh(command, timeout=600)
                install_s = time.monotonic() - t0
                while not heartbeat_seen(server, f"bench-pc{n:02d}"):
                    if time.monotonic() - t0 > 300:
                        raise RuntimeError("no heartbeat within 5 minutes")
                    time.sleep(0.2)
                report_s = time.monotonic() - t0
                rss = None
                if measure_rss:
                    time.sleep(max(0.0, 20 - (time.monotonic() - t0)))
                    pid = seat.sh("systemctl show -p MainPID --value kalkan-agent").stdout.strip()
                    rss = int(seat.sh(f"ps -o rss= -p {pid}").stdout.strip()) / 1024
                return {"boot_s": seat.boot_seconds, "install_s": install_s, "report_s": report_s,
                        "rss_mb": rss}
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    debs = sorted((REPO / "dist").glob("kalkan-agent_*_amd64.deb"))
    if not debs:
        sys.exit("no dist/kalkan-agent_*.deb: run bash install/build-debs.sh")
    deb = debs[-1]
    began = time.monotonic()
    lower = debian_root()
    root_ready_s = time.monotonic() - began
    build_file = lower.parent / "build-seconds"
    build_s = int(build_file.read_text()) if build_file.exists() else None
    rounds = []
    with tempfile.TemporaryDirectory(prefix="dp-bench-") as tmp:
        for n in range(args.rounds):
            rounds.append(one_round(lower, deb, Path(tmp), n, measure_rss=(n == args.rounds - 1)))
            print(rounds[-1], flush=True)
    install = [r["install_s"] for r in rounds]
    report = [r["report_s"] for r in rounds]
    boot = [r["boot_s"] for r in rounds]
    rss = rounds[-1]["rss_mb"]
    med = statistics.median(install)
    rep = statistics.median(report)
    rows = [
        (f"room command to \"enrolled and started\" (download, hash, apt install, enrol, systemctl "
         f"enable --now), median of {len(install)}",
         f"{med:.1f} s (min {min(install):.1f}, max {max(install):.1f})", "120 s",
         f"{med / 120:.2f} of the goal"),
        ("room command to the seat's first heartbeat on the server, median", f"{rep:.1f} s", "120 s",
         f"{rep / 120:.2f} of the goal"),
        ("boot of the clean root to `systemctl is-system-running`, median",
         f"{statistics.median(boot):.1f} s", "-", "-"),
        ("agent RSS under systemd, every collector, platform linux, 20 s after the command", f"{rss:.1f} MB",
         "50 MB", f"{rss / 50:.2f} of the goal"),
        ("kalkan-agent .deb", f"{deb.stat().st_size / 1e6:.1f} MB", "-", "-"),
        ("building the clean root (debootstrap, once; then cached by its package list)",
         f"{build_s if build_s is not None else '?'} s", "-", "-"),
        ("getting the cached root this run", f"{root_ready_s:.1f} s", "-", "-"),
    ]
    table = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    text = (
        "\n## Clean Debian 12 root (benchmarks/deploy/clean_root.py)\n\n"
        f"Machine: {platform.node() or 'vm'}, {os.cpu_count()} CPUs (shared with other jobs), "
        f"{platform.platform()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.  debootstrap bookworm minbase + "
        "the agent's Debian dependencies (install/debian-root.sh), booted with systemd (systemd-nspawn -b), "
        "a fresh overlay per round; no internet (the package from the test server, the dependencies in the "
        "image as from the school's mirror).\n\n"
        "| measure | value | goal / baseline | ratio |\n|---|---|---|---|\n" + table + "\n"
    )
    with open(REPO / "benchmarks/deploy/RESULTS.md", "a") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
