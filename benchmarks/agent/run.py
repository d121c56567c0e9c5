"""Agent footprint: resident memory and idle CPU, side by side with baselines.

    .venv/bin/python benchmarks/agent/run.py [--seconds 60] [--warmup 20]

Starts a real `kalkan-server run` (TLS, SQLite) and, all at the same time so that the
machine's load is the same for each:
  * baseline "python-bare":    `python -c 'sleep'` (the interpreter alone);
  * baseline "python-imports": python importing what the agent imports (httpx, pydantic,
                               the protocol), then sleeping: the floor any Python agent pays;
  * "agent-heartbeat":         `kalkan-agent run --collectors heartbeat` (heartbeat every 60 s);
  * "agent-all":               `kalkan-agent run` with every registered collector, platform
                               `fake` (the linux adapters would install firewall rules and
                               lock sessions on this shared machine).
After `--warmup` seconds (start-up, first baseline work) it samples every process for
`--seconds` with psutil: RSS (max and mean), USS at the end, CPU % of one core over the
window, for the process alone and with its child processes (the proxy's mitmdump).
Prints a markdown table; goal: RSS <= 50 MB and idle CPU <= 0.5 % of a core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.agent_process import AgentProcess  # noqa: E402
from tests.support.server import KalkanServerProcess  # noqa: E402

GOAL_RSS_MB = 50.0
GOAL_CPU_PCT = 0.5
IMPORTS = "import httpx, pydantic, sqlite3, policy_server.protocol, time; time.sleep(100000)"


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [proc]


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(named: dict[str, psutil.Process], seconds: float, step: float = 1.0) -> dict[str, dict]:
    start_cpu = {n: (_cpu([p]), _cpu(_tree(p))) for n, p in named.items()}
    rss: dict[str, list[int]] = {n: [] for n in named}
    tree_rss: dict[str, list[int]] = {n: [] for n in named}
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for n, p in named.items():
            rss[n].append(_rss([p]))
            tree_rss[n].append(_rss(_tree(p)))
        time.sleep(step)
    elapsed = time.monotonic() - t0
    out = {}
    for n, p in named.items():
        own, tree = _cpu([p]) - start_cpu[n][0], _cpu(_tree(p)) - start_cpu[n][1]
        try:
            uss = p.memory_full_info().uss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            uss = 0
        out[n] = {
            "rss_max_mb": max(rss[n]) / 2**20, "rss_mean_mb": sum(rss[n]) / len(rss[n]) / 2**20,
            "uss_mb": uss / 2**20, "tree_rss_max_mb": max(tree_rss[n]) / 2**20,
            "cpu_pct": 100 * own / elapsed, "tree_cpu_pct": 100 * tree / elapsed,
            "children": len(_tree(p)) - 1,
        }
    return out


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--each", action="store_true",
                        help="also one agent per collector (heartbeat + that one), to see who costs what")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kalkan-agent-bench-"))
    started: list = []
    with KalkanServerProcess(work / "server") as server:
        try:
            bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(100000)"])
            imports = subprocess.Popen([sys.executable, "-c", IMPORTS], cwd=REPO,
                                       env={**os.environ, "PYTHONPATH": str(REPO)})
            started += [bare, imports]
            hb = AgentProcess(work / "agent-heartbeat")
            hb.enroll(server, seat="bench-1")
            hb.start(collectors=["heartbeat"])
            everything = AgentProcess(work / "agent-all")
            everything.enroll(server, seat="bench-2")
            everything.start(platform="fake")
            started += [hb, everything]
            singles: dict[str, AgentProcess] = {}
            if args.each:
                from agent.collectors.registry import COLLECTORS

                for name in [n for n in COLLECTORS if n != "heartbeat"]:
                    single = AgentProcess(work / f"agent-{name}")
                    single.enroll(server, seat=f"bench-{name}")
                    single.start(collectors=["heartbeat", name], platform="fake")
                    singles[name] = single
                    started.append(single)
            time.sleep(args.warmup)
            named = {
                "python-bare (baseline)": psutil.Process(bare.pid),
                "python-imports (baseline)": psutil.Process(imports.pid),
                "agent-heartbeat": psutil.Process(hb.proc.pid),
                "agent-all (fake platform)": psutil.Process(everything.proc.pid),
                **{f"agent-heartbeat+{n}": psutil.Process(a.proc.pid) for n, a in singles.items()},
            }
            results = measure(named, args.seconds)
            health = (everything.status() or {}).get("collectors", {})
        finally:
            for thing in started:
                if isinstance(thing, AgentProcess):
                    thing.stop()
                else:
                    thing.kill()
                    thing.wait()
    print(f"machine: nproc={os.cpu_count()}, CPU {cpu_model()}; date {dt.date.today()}; "
          f"window {args.seconds:g} s after {args.warmup:g} s warm-up; load avg {os.getloadavg()}")
    print()
    print("| process | RSS max MB | RSS mean MB | USS MB | CPU % of a core | with children: RSS MB / CPU % "
          "| vs goal (RSS ≤ 50 MB, CPU ≤ 0.5 %) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        verdict = "" if "baseline" in name else (
            f"RSS {r['rss_max_mb'] / GOAL_RSS_MB:.2f}× goal, CPU {r['cpu_pct'] / GOAL_CPU_PCT:.2f}× goal")
        print(f"| {name} | {r['rss_max_mb']:.1f} | {r['rss_mean_mb']:.1f} | {r['uss_mb']:.1f} | "
              f"{r['cpu_pct']:.3f} | {r['tree_rss_max_mb']:.1f} / {r['tree_cpu_pct']:.3f} "
              f"({r['children']} children) | {verdict} |")
    print()
    print("agent-all collectors:", ", ".join(f"{n}={h.get('state')}" for n, h in sorted(health.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
