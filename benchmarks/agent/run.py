"""Agent footprint: resident memory and idle CPU, side by side with baselines.

    .venv/bin/python benchmarks/agent/run.py [--seconds 60] [--warmup 30]

Starts a real `kalkan-server run` (TLS, SQLite), publishes a policy whose integrity paths
and download folders are small private trees (so that "idle" means idle, not "hashing
/usr" or "watching a shared /tmp"), and then runs, all at the same time so that the
machine's load is the same for each:
  * baseline "python-bare":    `python -c 'sleep'` (the interpreter alone);
  * baseline "python-imports": python importing what the agent imports (httpx, pydantic,
                               the protocol), then sleeping: the floor any Python agent pays;
  * "agent-heartbeat":         `kalkan-agent run --collectors heartbeat`;
  * "agent-heartbeat+X":       heartbeat and one collector X, for every registered collector;
  * "agent-all but proxy and integrity": the others together (their fixes are pending);
  * "agent-all":               every registered collector;
  * "agent-all, MALLOC_ARENA_MAX=2" and "agent-all, PYTHONMALLOC=malloc": the same with glibc's
                               per-thread malloc arenas capped / Python's small-object allocator
                               off, to see what the allocators cost (not used by the agent);
  * with `--control REF` (a git commit, e.g. the one before a change): "agent-heartbeat @REF" and
                               "agent-all @REF", the same agents run from a `git worktree` of REF,
                               so that before and after are measured side by side in one run.
Every agent with the proxy collector gets its own proxy ports (settings.json), so each one's
mitmdump really runs.
Agents run on platform `fake` (the linux adapters would install firewall rules and lock
sessions on this shared machine); the network collector captures for real (AF_PACKET,
listen-only) on the default interface.  clamd is whatever the machine has at
/run/clamav/clamd.ctl (usually nothing here: the antivirus collector then waits for it).

The window starts once every integrity collector has finished its first baseline, plus
`--warmup` seconds.  psutil samples each process once a second for `--seconds`: RSS (max
and mean), USS at the end, CPU % of one core over the window, alone and with children.
Prints a markdown table; goal (issues 2 and 6): RSS <= 50 MB and idle CPU <= 0.5 % of a core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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
from tests.support.server import KalkanServerProcess, free_port  # noqa: E402

GOAL_RSS_MB = 50.0
GOAL_CPU_PCT = 0.5
# What any Python agent imports before its own code runs (the agent's HTTP client is http.client).
IMPORTS = "import http.client, ssl, pydantic, sqlite3, policy_server.protocol, time; time.sleep(100000)"


class WorktreeAgent(AgentProcess):
    """An agent run from another checkout (`--control REF`): its code first on sys.path."""

    def __init__(self, state_dir: Path, tree: Path) -> None:
        super().__init__(state_dir)
        self.tree = tree

    def _cli(self, *args: str) -> list[str]:
        boot = (f"import sys, runpy; sys.path.insert(0, {str(self.tree)!r}); "
                "runpy.run_module('agent.cli', run_name='__main__', alter_sys=True)")
        return [sys.executable, "-c", boot, *args]


def control_tree(work: Path, ref: str) -> Path:
    """A detached `git worktree` of `ref` (removed again by `remove_control_tree`)."""
    tree = work / f"control-{ref}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), ref],
                   check=True, capture_output=True)
    return tree


def remove_control_tree(tree: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)


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


def small_trees(work: Path) -> dict[str, Path]:
    """A small tree for the integrity baseline (200 files) and empty watched folders."""
    tree = work / "integrity-tree"
    for i in range(200):
        folder = tree / f"d{i // 20:02}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:03}.bin").write_bytes(os.urandom(2048))
    drop = work / "drop"
    downloads = work / "home" / "pupil" / "Downloads"
    drop.mkdir()
    downloads.mkdir(parents=True)
    return {"tree": tree, "drop": drop, "downloads": downloads}


def publish_policy(server: KalkanServerProcess, trees: dict[str, Path]) -> dict:
    from policy_server.policies.service import amend_policy

    def change(bundle):
        bundle.integrity.paths = [str(trees["tree"])]
        bundle.integrity.drop_paths = [str(trees["drop"])]
        bundle.antivirus.download_dirs = [str(trees["downloads"].parent.parent / "*" / "Downloads")]
        return bundle

    with server.db() as db:
        bundle = amend_policy(db, actor="benchmark", comment="footprint benchmark: small trees",
                              change=change)
        db.commit()
    return bundle.model_dump(mode="json")


def wait_for_baselines(agents: dict[str, AgentProcess], with_integrity: set[str],
                       timeout: float = 300.0) -> float:
    """Seconds until every agent running the integrity collector reports its first check."""
    t0 = time.monotonic()
    waiting = set(with_integrity)
    while waiting and time.monotonic() - t0 < timeout:
        for name in list(waiting):
            collectors = (agents[name].status() or {}).get("collectors", {})
            detail = (collectors.get("integrity") or {}).get("detail", "")
            if "last check" in detail and "not yet" not in detail:
                waiting.discard(name)
        time.sleep(0.5)
    if waiting:
        raise RuntimeError(f"integrity baseline not finished within {timeout} s in {sorted(waiting)}")
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--each", action="store_true", help="(kept for old command lines: always on now)")
    parser.add_argument("--control", metavar="REF", help="also run heartbeat-only and every collector "
                        "from this git commit, side by side (the 'before' of a change)")
    args = parser.parse_args()
    from agent.collectors.registry import COLLECTORS

    work = Path(tempfile.mkdtemp(prefix="kalkan-agent-bench-"))
    trees = small_trees(work)
    control = control_tree(work, args.control) if args.control else None
    started: list = []
    agents: dict[str, AgentProcess] = {}
    with KalkanServerProcess(work / "server") as server:
        try:
            bundle = publish_policy(server, trees)
            bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(100000)"])
            imports = subprocess.Popen([sys.executable, "-c", IMPORTS], cwd=REPO,
                                       env={**os.environ, "PYTHONPATH": str(REPO)})
            started += [bare, imports]
            plan = {"heartbeat": ["heartbeat"],
                    **{n: ["heartbeat", n] for n in COLLECTORS if n != "heartbeat"},
                    # the collectors this engineer owns or fixed, without the two still over budget
                    "all-but-proxy-integrity": [n for n in COLLECTORS if n not in ("proxy", "integrity")],
                    "all": None, "all-arena2": None, "all-pymalloc-off": None}
            if control is not None:
                plan |= {"control-heartbeat": ["heartbeat"], "control-all": None}
            environments = {"all-arena2": {"MALLOC_ARENA_MAX": "2"},
                            "all-pymalloc-off": {"PYTHONMALLOC": "malloc"}}
            for name, collectors in plan.items():
                agent = (WorktreeAgent(work / f"agent-{name}", control) if name.startswith("control-")
                         else AgentProcess(work / f"agent-{name}"))
                agent.enroll(server, seat=f"bench-{name}")
                # the collectors start with the benchmark's policy, not the default (which hashes /usr)
                (agent.state_dir / "policy.json").write_text(json.dumps(bundle))
                proxy_settings = agent.state_dir / "collectors" / "proxy" / "settings.json"
                proxy_settings.parent.mkdir(parents=True, exist_ok=True)
                proxy_settings.write_text(json.dumps({"regular_port": free_port(),
                                                      "transparent_port": free_port()}))
                saved = dict(os.environ)
                os.environ.update(environments.get(name, {}))
                try:
                    agent.start(collectors=collectors, platform="fake")
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
                agents[name] = agent
                started.append(agent)
            baseline_s = wait_for_baselines(
                agents, {n for n, c in plan.items() if c is None or "integrity" in c})
            time.sleep(args.warmup)
            label = {"heartbeat": "agent-heartbeat", "all": "agent-all (fake platform)",
                     "all-arena2": "agent-all, MALLOC_ARENA_MAX=2 (variant)",
                     "all-pymalloc-off": "agent-all, PYTHONMALLOC=malloc (variant)",
                     "all-but-proxy-integrity": "agent-all but proxy and integrity",
                     "control-heartbeat": f"agent-heartbeat @{args.control} (control)",
                     "control-all": f"agent-all @{args.control} (control)"}
            named = {
                "python-bare (baseline)": psutil.Process(bare.pid),
                "python-imports (baseline)": psutil.Process(imports.pid),
                **{label.get(n, f"agent-heartbeat+{n}"): psutil.Process(a.proc.pid)
                   for n, a in agents.items()},
            }
            results = measure(named, args.seconds)
            health = {n: (a.status() or {}).get("collectors", {}) for n, a in agents.items()}
        finally:
            for thing in started:
                if isinstance(thing, AgentProcess):
                    thing.stop()
                else:
                    thing.kill()
                    thing.wait()
            if control is not None:
                remove_control_tree(control)
    print(f"machine: nproc={os.cpu_count()}, CPU {cpu_model()}; date {dt.date.today()}; "
          f"window {args.seconds:g} s, {args.warmup:g} s after the integrity baselines were done "
          f"({baseline_s:.0f} s); load avg at the end {tuple(round(x, 2) for x in os.getloadavg())}")
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
    for name, collectors in health.items():
        print(f"{name}: " + "; ".join(f"{c}={h.get('state')} ({h.get('detail', '')[:80]})"
                                      for c, h in sorted(collectors.items()) if c != "heartbeat"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
