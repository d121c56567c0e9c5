"""Integrity benchmarks, side by side in one run (other engineers share the 2 cores:
compare the ratios, not the absolute figures).

    .venv/bin/python benchmarks/integrity/run.py [--tree /var/tmp/kalkan-bench-tree] [--files 64000]

1. hashing throughput of `integrity baseline` vs `openssl speed -multi 2 -evp sha256`
   (goal >= 85 %), with `sha256sum` and `aide --init` for context;
2. fast re-check of the unchanged tree vs `aide --check` (goal >= 50x faster), and the
   same tamper set detected by both;
3. change-to-event latency of the real-time watch (goal p95 <= 1 s).
Page cache warm for everyone (the tree is read once first).  Writes RESULTS.md beside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from agent.integrity.config import IntegrityConfig  # noqa: E402
from agent.integrity.engine import IntegrityEngine  # noqa: E402
from agent.integrity.packages import DpkgDatabase  # noqa: E402
from agent.integrity.scan import scan  # noqa: E402


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sh(cmd: str) -> float:
    return timed(lambda: subprocess.run(cmd, shell=True, check=False, capture_output=True))


def openssl_limit() -> float:
    out = subprocess.run(
        ["openssl", "speed", "-seconds", "3", "-multi", "2", "-evp", "sha256"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("sha256")][-1]
    return float(line.split()[-2].rstrip("k")) * 1000  # the 16384-byte column, bytes/s


def aide_conf(work: Path, tree: Path) -> Path:
    conf = work / "aide.conf"
    conf.write_text(
        f"database_in=file:{work}/aide.db\ndatabase_out=file:{work}/aide.db.new\ngzip_dbout=no\n"
        f"report_url=stdout\nR = p+i+n+u+g+s+m+c+sha256\n{tree} R\n"
    )
    return conf


def engine_for(tree: Path, state: Path, emit=lambda *a: None) -> IntegrityEngine:
    return IntegrityEngine(
        IntegrityConfig(paths=(str(tree),)),
        state_dir=state / "s",
        key_dir=state / "k",
        emit=emit,
        dpkg=DpkgDatabase(state / "no-dpkg"),
    )


def tamper(tree: Path) -> None:
    """The five kinds the tests tell apart."""
    files = sorted(p for p in tree.rglob("f*") if p.is_file() and not p.is_symlink())
    a, b, c, d = files[1], files[2], files[3], files[4]
    st = a.stat()
    a.write_bytes(a.read_bytes()[:-1] + b"X")
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))  # modified with mtime restored
    b.write_bytes(b"modified")
    os.chmod(c, 0o777)
    d.unlink()
    (tree / "added.bin").write_bytes(b"\x7fELF new")


def latency(work: Path, samples: int = 40) -> list[float]:
    from agent.collectors.base import CollectorContext
    from agent.collectors.integrity import IntegrityCollector
    from policy_server.protocol import IntegritySection, PolicyBundle

    tree = work / "lat"
    tree.mkdir()
    for i in range(samples):
        (tree / f"p{i}").write_bytes(b"v1")
    seen: dict[str, float] = {}

    class Sink:
        def emit(self, event_type, data, *, subject=None, clauses=None):
            if event_type == "integrity.changed":
                seen.setdefault(data.path, time.monotonic())
            return "x"

    ctx = CollectorContext(
        sink=Sink(),
        state_dir=work / "agent",
        platform="fake",
        policy=PolicyBundle(integrity=IntegritySection(paths=[str(tree)], drop_paths=[])),
    )
    collector = IntegrityCollector(ctx, workers=1)
    collector.start()
    while collector.checks < 1:
        time.sleep(0.05)
    time.sleep(0.5)
    delays = []
    for i in range(samples):
        path = tree / f"p{i}"
        t0 = time.monotonic()
        path.write_bytes(b"v2 changed")
        while str(path) not in seen and time.monotonic() - t0 < 5:
            time.sleep(0.002)
        delays.append(seen.get(str(path), t0 + 5) - t0)
        time.sleep(0.05)
    collector.stop()
    return delays


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", type=Path, default=Path("/var/tmp/kalkan-bench-tree"))
    ap.add_argument("--files", type=int, default=64000)
    args = ap.parse_args()
    subprocess.run([sys.executable, str(HERE / "make_tree.py"), str(args.tree), str(args.files)], check=True)
    tree = args.tree
    work = Path(tempfile.mkdtemp(prefix="kalkan-int-bench-"))
    try:
        total = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
        sh(f"find {tree} -type f -print0 | xargs -0 cat > /dev/null")  # warm the page cache for everyone
        # 1. hashing throughput, back to back
        limit = openssl_limit()
        t_hash = timed(lambda: scan([str(tree)], full=True, workers=2))
        t_sha256sum = sh(f"find {tree} -type f -print0 | xargs -0 sha256sum > /dev/null")
        conf = aide_conf(work, tree)
        t_aide_init = sh(f"aide -c {conf} --init -W 2")
        os.replace(work / "aide.db.new", work / "aide.db")
        engine = engine_for(tree, work / "state")
        t_baseline = timed(engine.build_baseline)
        # 2. re-check of the unchanged tree
        t_aide_check = sh(f"aide -c {conf} --check -W 2")
        ours = [timed(engine.check) for _ in range(5)]
        t_check = statistics.median(ours)
        cli = [
            REPO / ".venv/bin/python",
            "-m",
            "agent.integrity.cli",
            "integrity",
            "check",
            "--quiet",
            "--no-report",
            "--state-dir",
            str(work / "cli"),
            "--key-dir",
            str(work / "cli-key"),
            "--paths",
            str(tree),
        ]
        subprocess.run(
            [*map(str, cli[:4]), "baseline", "--quiet", "--no-report", *map(str, cli[7:])],
            cwd=REPO,
            capture_output=True,
        )
        t_cli = statistics.median(sh(" ".join(map(str, cli)) + " >/dev/null") for _ in range(3))
        # 2b. the tamper set, both tools, on a small copy
        small = work / "small"
        shutil.copytree(tree / "d00" / "s00", small / "t", symlinks=True)
        sconf = aide_conf(work / "small", small / "t")
        sh(f"aide -c {sconf} --init")
        os.replace(work / "small/aide.db.new", work / "small/aide.db")
        small_engine = engine_for(small / "t", work / "small-state")
        small_engine.build_baseline()
        tamper(small / "t")
        aide_out = subprocess.run(
            f"aide -c {sconf} --check", shell=True, capture_output=True, text=True
        ).stdout
        aide_found = sum(
            1
            for ln in aide_out.splitlines()
            if ln[:2] in ("f ", "f+", "f-", "l ") or (len(ln) > 2 and ln[0] in "fdl" and ln[1] in "+-<>=:")
        )
        our_kinds = sorted(
            c.change + ("(mtime restored)" if c.mtime_restored else "") for c in small_engine.check().changes
        )
        # 3. latency of the watch
        delays = latency(work)
        p95 = sorted(delays)[int(len(delays) * 0.95) - 1]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"
    )
    load = os.getloadavg()[0]
    ours_bps = total / t_hash
    rows = [
        (
            "Baseline hashing (scan, 2 processes)",
            f"{ours_bps / 1e6:.0f} MB/s",
            f"openssl speed -multi 2 -evp sha256 (16 KiB): {limit / 1e6:.0f} MB/s",
            f"{ours_bps / limit * 100:.0f} % (goal ≥ 85 %)",
        ),
        (
            "`integrity baseline` end to end (hash + seal + store)",
            f"{t_baseline:.1f} s",
            f"aide --init -W 2: {t_aide_init:.1f} s; sha256sum: {t_sha256sum:.1f} s",
            "context",
        ),
        (
            "Re-check, unchanged tree (agent, in process; median of 5)",
            f"{t_check:.2f} s",
            f"aide --check -W 2: {t_aide_check:.1f} s",
            f"{t_aide_check / t_check:.0f}× (goal ≥ 50×)",
        ),
        (
            "Re-check via the CLI process (incl. Python start-up)",
            f"{t_cli:.2f} s",
            f"aide --check -W 2: {t_aide_check:.1f} s",
            f"{t_aide_check / t_cli:.0f}×",
        ),
        (
            "Tamper set (modify, modify+mtime restore, chmod, remove, add)",
            f"{len(our_kinds)}/5: " + ", ".join(our_kinds),
            f"aide lines reporting files: {aide_found}",
            "no loss of detection" if len(our_kinds) == 5 else "LOSS",
        ),
        (
            "Watch change→event latency (40 writes)",
            f"p95 {p95 * 1000:.0f} ms, median {statistics.median(delays) * 1000:.0f} ms",
            "—",
            f"goal ≤ 1000 ms: {'met' if p95 <= 1 else 'MISSED'}",
        ),
    ]
    table = ["| measure | Kalkan | baseline (same run) | ratio vs goal |", "| --- | --- | --- | --- |"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    header = (
        f"Machine: `nproc` = {os.cpu_count()}, CPU {cpu}; date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"tree {args.files} entries, {total / 1e9:.2f} GB (sizes drawn from this machine's /usr); "
        f"load average at the end {load:.1f} (other engineers' work shares the cores)."
    )
    text = "\n".join([header, "", *table, ""])
    print(text)
    (HERE / "last-run.md").write_text(text)


if __name__ == "__main__":
    main()
