"""Where the baseline scan's time goes: cProfile of the parent and of a worker's job,
and the CPU split between them (the figures quoted in RESULTS.md, "Profile").

    .venv/bin/python benchmarks/integrity/profile_scan.py [--tree /var/tmp/kalkan-bench-tree]

The worker's job is profiled in this process (`hashworker.serve` is the same loop
around `hasher.pack_answer`), on every regular file of the tree, one batch at a time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent.integrity import hasher  # noqa: E402
from agent.integrity.scan import scan  # noqa: E402


def top(profile: cProfile.Profile, n: int = 12) -> str:
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(n)
    return "\n".join(ln for ln in out.getvalue().splitlines() if ln.strip())


def cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", type=Path, default=Path("/var/tmp/kalkan-bench-tree"))
    args = ap.parse_args()
    tree = str(args.tree)

    # 1. the real scan, unprofiled: wall and CPU of the parent and of the workers
    own, kids = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    result = scan([tree], full=True, workers=2)
    wall = time.perf_counter() - t
    own, kids = cpu(resource.RUSAGE_SELF) - own, cpu(resource.RUSAGE_CHILDREN) - kids
    total = result.hashed_bytes
    print(
        f"scan: {result.hashed_files} files, {total / 1e9:.2f} GB in {wall:.2f} s "
        f"({total / wall / 1e6:.0f} MB/s); "
        f"CPU parent {own:.2f} s, workers {kids:.2f} s; load {os.getloadavg()[0]:.2f}\n"
    )

    # 2. the parent under cProfile (its waits for the workers show as lock acquire)
    prof = cProfile.Profile()
    prof.runcall(scan, [tree], full=True, workers=2)
    print("parent (scan with 2 workers):\n" + top(prof) + "\n")

    # 3. one worker's loop, on every file, in this process
    paths = sorted(result.records)
    paths = [p for p in paths if result.records[p].kind == "file"]
    buf = hasher.new_buffer()
    prof = cProfile.Profile()
    c = cpu(resource.RUSAGE_SELF)
    prof.enable()
    for i in range(0, len(paths), hasher._BATCH_FILES):
        b"".join([hasher.pack_answer(p, buf) for p in paths[i : i + hasher._BATCH_FILES]])
    prof.disable()
    used = cpu(resource.RUSAGE_SELF) - c
    print(f"worker loop, all files in one process (profiled): {used:.2f} CPU-s\n" + top(prof))


if __name__ == "__main__":
    main()
