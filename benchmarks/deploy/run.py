"""Seat install benchmark (issue 16): the per-room command on a PC without internet.

    sudo .venv/bin/python benchmarks/deploy/run.py [--rounds 3]   # needs dist/*.deb (install/build-debs.sh)

For each round: a fresh throwaway root (tests/deploy/rootfs.py: an overlay of this machine's
`/`, whose Debian dependencies are installed already, as on a lab PC after the school's
mirror), a real `kalkan-server` on 127.0.0.1 serving the package, and the room's command
from `install_command` timed from start to "enrolled" (download, hash check, apt install,
enrol).  Then the agent's RSS: `kalkan-agent run` (heartbeat collector, fake platform) from
the packaged environment vs from the development `.venv`, side by side after 10 s.
Writes benchmarks/deploy/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from policy_server.operations.seat import pubkey_pin  # noqa: E402
from policy_server.operations.service import install_command  # noqa: E402
from tests.deploy.rootfs import OverlayRoot  # noqa: E402
from tests.support.server import KalkanServerProcess  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def agent_rss(python: str, state: Path, server: KalkanServerProcess, *, in_root: OverlayRoot | None) -> float:
    """RSS (MB) of a running agent 10 s after start; enrolled to `server` first."""
    code = server.make_enrollment_code(room="bench", uses=1)
    enrol = [
        python,
        "-m",
        "agent.cli",
        "enroll",
        "--server",
        server.url,
        "--code",
        code,
        "--state-dir",
        str(state),
        "--fingerprint",
        server.fingerprint,
    ]
    run = [
        python,
        "-m",
        "agent.cli",
        "run",
        "--state-dir",
        str(state),
        "--platform",
        "fake",
        "--collectors",
        "heartbeat",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)} if in_root is None else {}
    if in_root is None:
        subprocess.run(enrol, check=True, cwd=REPO, env=env, capture_output=True)
        proc = subprocess.Popen(run, cwd="/", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(10)
            return rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(20)
    # in the root: run it there, read its RSS from inside
    script = (
        f"{shlex.join(enrol)} >/dev/null && ({shlex.join(run)} >/dev/null 2>&1 & pid=$!; sleep 10; "
        "grep VmRSS /proc/$pid/status; kill $pid; wait $pid)"
    )
    out = in_root.run(script, net=True).stdout
    return int(out.split()[1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    debs = {
        p: sorted((REPO / "dist").glob(f"{p}_*_amd64.deb"))[-1] for p in ("kalkan-agent", "kalkan-server")
    }
    work = Path(tempfile.mkdtemp(prefix="kalkan-deploy-bench-"))
    times = []
    try:
        (work / "server" / "packages").mkdir(parents=True)
        shutil.copy(debs["kalkan-agent"], work / "server" / "packages")
        with mock.patch.dict(os.environ, {"KALKAN_CHECKS_FIRST_DELAY_S": "600"}):
            server = KalkanServerProcess(work / "server").start()
        try:
            pin = pubkey_pin(server.cert_path)
            root = None
            for i in range(args.rounds):
                code = server.make_enrollment_code(room="lab-bench", uses=1)
                inner = shlex.split(install_command("lab-bench", code, server.url, pin))[3]
                inner = inner.replace('"$(hostname)"', f"bench-pc{i:02d}")
                root = OverlayRoot(work / f"root{i}")
                began = time.monotonic()
                root.run(inner, net=True, timeout=600)
                times.append(time.monotonic() - began)
                print(f"round {i + 1}: seat installed and enrolled in {times[-1]:.1f} s", flush=True)
            packaged = agent_rss(
                "/opt/kalkan/venv/bin/python", Path("/var/lib/kalkan-agent-bench"), server, in_root=root
            )
            dev = agent_rss(str(REPO / ".venv/bin/python"), work / "dev-agent", server, in_root=None)
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sizes = {p: d.stat().st_size / 1e6 for p, d in debs.items()}
    installed = subprocess.run(
        ["dpkg-deb", "-f", str(debs["kalkan-agent"]), "Installed-Size"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# Seat install benchmark (benchmarks/deploy/run.py)",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs (shared with other jobs), {platform.platform()}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.  No internet used: the package comes from the test server, "
        "its Debian dependencies are already installed (as after the school's mirror).",
        "",
        "| measure | value | goal / baseline | ratio |",
        "|---|---|---|---|",
        f"| seat install (room command: download, hash, apt install, enrol), median of {len(times)} | "
        f"{statistics.median(times):.1f} s (min {min(times):.1f}, max {max(times):.1f}) | 120 s | "
        f"{statistics.median(times) / 120:.2f} of the goal |",
        f"| kalkan-agent .deb size | {sizes['kalkan-agent']:.1f} MB "
        f"(installed {int(installed) / 1024:.0f} MB) | - | - |",
        f"| kalkan-server .deb size | {sizes['kalkan-server']:.1f} MB | - | - |",
        f"| agent RSS after 10 s (heartbeat, fake platform): packaged venv vs development .venv | "
        f"{packaged:.1f} MB | {dev:.1f} MB | {packaged / dev:.2f}× |",
        "",
        "The overlay root is this machine's `/` with changes kept apart (not a fresh debootstrap); "
        "the apt step therefore fetches nothing.  A PC whose dependencies (clamav, nftables, …) are "
        "missing needs the school's mirror for them (docs/operations.md).",
    ]
    (REPO / "benchmarks/deploy/RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
