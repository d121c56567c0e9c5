"""Full-scan throughput: Kalkan's engine vs `clamdscan --multiscan --fdpass`, side by side.

    .venv/bin/python benchmarks/antivirus/run.py [--rounds 3] [TREE ...]

Starts one real clamd (tests/support/clamd.py, Kalkan's test signatures,
`DisableCache yes` so that a repeated pass does not profit from clamd's
clean-file cache, MaxThreads = nproc), warms the page cache with one pass,
then runs the contenders in alternating order, `--rounds` times each, on the
same trees.  Prints a Markdown table row per contender (median of rounds).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent.antivirus.clamd import ClamdClient  # noqa: E402
from agent.antivirus.engine import ScanEngine  # noqa: E402
from agent.antivirus.walker import walk  # noqa: E402
from tests.support.clamd import ClamdProcess  # noqa: E402

DEFAULT_TREES = ["/usr/lib/python3", "/usr/share/doc"]


def run_clamdscan(conf: Path, trees: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(
        ["clamdscan", "-c", str(conf), "--multiscan", "--fdpass", *trees], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"clamdscan failed: {proc.stderr[-500:]}")
    match = re.search(r"Scanned files: (\d+)", proc.stdout)
    return elapsed, int(match.group(1)) if match else -1


def run_kalkan(socket_path: Path, trees: list[str], sessions: int, window: int) -> tuple[float, int]:
    start = time.perf_counter()
    result = ScanEngine(ClamdClient(socket_path), sessions=sessions, window=window).run(walk(trees))
    return time.perf_counter() - start, result.totals.files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", default=DEFAULT_TREES)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trees = [t for t in args.trees if os.path.isdir(t)]
    size = sum(e.size for e in walk(trees))
    threads = os.cpu_count() or 2
    with tempfile.TemporaryDirectory(prefix="kalkan-av-bench-") as tmp:
        clamd = ClamdProcess(Path(tmp), max_threads=threads)
        clamd.write_config()
        with open(clamd.config_path, "a") as conf:
            conf.write("DisableCache yes\n")
        clamd.write_config = lambda: None  # keep the amended config
        clamd.start()
        try:
            contenders = {
                "clamdscan --multiscan --fdpass (baseline)": lambda: run_clamdscan(clamd.config_path, trees),
                "kalkan engine, 1 session × 32": lambda: run_kalkan(clamd.socket_path, trees, 1, 32),
                "kalkan engine, 2 sessions × 24 (default)": lambda: run_kalkan(
                    clamd.socket_path, trees, 2, 24
                ),
            }
            run_kalkan(clamd.socket_path, trees, 2, 24)  # warm the page cache
            times: dict[str, list[float]] = {name: [] for name in contenders}
            files: dict[str, int] = {}
            for round_no in range(args.rounds):
                order = list(contenders) if round_no % 2 == 0 else list(reversed(contenders))
                for name in order:
                    elapsed, count = contenders[name]()
                    times[name].append(elapsed)
                    files[name] = count
        finally:
            clamd.stop()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        "?",
    )
    base_name = next(iter(contenders))
    base = statistics.median(times[base_name])
    print(f"machine: nproc={threads}, CPU {cpu}; date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"trees: {', '.join(trees)}; {size / 1e6:.0f} MB; clamd MaxThreads={threads}, DisableCache yes; "
        f"median of {args.rounds} rounds, alternating order"
    )
    print()
    print("| contender | files | median s | MB/s | throughput vs baseline | goal ≥ 0.95× |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name in contenders:
        median = statistics.median(times[name])
        ratio = base / median
        goal = "—" if name == base_name else ("met" if ratio >= 0.95 else "MISSED")
        shown = files[name] if files[name] >= 0 else "n/a"
        print(f"| {name} | {shown} | {median:.2f} | {size / 1e6 / median:.1f} | {ratio:.2f}× | {goal} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
