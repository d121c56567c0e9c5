"""Integrity's memory in a long-lived process, before and after, side by side.

For each code version (a git revision, or the working tree) the `agent/integrity`
package is exported to a temporary folder and a fresh Python process (with the agent's
heavy imports: httpx, pydantic, the protocol) builds the first baseline of a 200-file
tree against this machine's real dpkg database, then runs one check, as the collector
does (`--tree /var/tmp/kalkan-bench-tree`: a big existing tree instead).  It reports
the RSS after the imports, after the baseline and check (what the agent keeps for its
life), and the peak.  Versions alternate, `--rounds` times.

    .venv/bin/python benchmarks/integrity/memory.py --before b52d8c8^ --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import gc, json, os, resource, sys, tempfile
from pathlib import Path
import psutil, httpx, pydantic, policy_server.protocol  # what every agent imports anyway
me = psutil.Process()
gc.collect()
imports = me.memory_info().rss
from agent.integrity.config import IntegrityConfig
from agent.integrity.engine import IntegrityEngine
work = Path(tempfile.mkdtemp(prefix="kalkan-mem-"))
tree = Path(os.environ["KALKAN_MEM_TREE"]) if os.environ.get("KALKAN_MEM_TREE") else work / "tree"
if not tree.exists():
    tree.mkdir()
    for i in range(200):
        (tree / f"file-{i:03d}").write_bytes(os.urandom(64) * (i + 1))
    (tree / "file-007").write_bytes(b"original")
engine = IntegrityEngine(IntegrityConfig(paths=(str(tree),)), state_dir=work / "state",
                         key_dir=work / "key", emit=lambda *a: None)
engine.build_baseline()
if not os.environ.get("KALKAN_MEM_TREE"):
    (tree / "file-007").write_bytes(b"changed")
engine.check()
gc.collect()
after = me.memory_info().rss
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"imports": imports, "after": after, "peak": peak,
                  "module": sys.modules["agent.integrity.packages"].__file__}))
"""


def export(rev: str | None, into: Path) -> Path:
    """`agent/__init__.py` and `agent/integrity/` of `rev` (None: the working tree) into `into`."""
    into.mkdir(parents=True)
    if rev is None:
        subprocess.run(["cp", "-r", str(REPO / "agent/integrity"), str(into / "integrity")], check=True)
        (into / "agent").mkdir()
        (into / "integrity").rename(into / "agent/integrity")
        (into / "agent/__init__.py").write_bytes((REPO / "agent/__init__.py").read_bytes())
    else:
        archive = into / "src.tar"
        with archive.open("wb") as out:
            subprocess.run(["git", "-C", str(REPO), "archive", rev, "agent/__init__.py", "agent/integrity"],
                           stdout=out, check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    # agent.i18n is used by the CLI only, which this does not import.
    return into


def run(src: Path, tree: str | None) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{src}:{REPO}", "KALKAN_MEM_TREE": tree or ""}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=src, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default="b52d8c8^", help="git revision of the old code")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", help="baseline this tree (left unchanged) instead of a fresh 200-file one")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kalkan-mem-bench-"))
    versions = {"before": export(args.before, work / "before"), "after": export(None, work / "after")}
    found: dict[str, list[dict]] = {name: [] for name in versions}
    loads = []
    for _ in range(args.rounds):
        loads.append(round(os.getloadavg()[0], 2))
        for name, src in versions.items():
            found[name].append(run(src, args.tree))
    mb = 1 / (1 << 20)
    print(f"dpkg .list paths on this machine: "
          f"{sum(1 for f in Path('/var/lib/dpkg/info').glob('*.list') for _ in f.open('rb'))}; "
          f"load (1 min) before each round: {loads}")
    print()
    print("| code | RSS after imports MB | RSS kept after baseline + check MB | cost of integrity MB "
          "| peak MB |")
    print("| --- | --- | --- | --- | --- |")
    for name, rows in found.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("imports", "after", "peak")}
        print(f"| {name} | {med['imports'] * mb:.1f} | {med['after'] * mb:.1f} | "
              f"+{(med['after'] - med['imports']) * mb:.1f} | {med['peak'] * mb:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
