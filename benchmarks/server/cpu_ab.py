"""CPU per event of the in-process ingest pipeline, this tree against an older one (A/B pairs).

Each measurement is a fresh child process (its own fresh database) that imports
`policy_server` either from this working tree ("new") or from `--ref` exported with `git
archive` ("old"), runs `ingest_batch` on `--events` events in batches of 500 (the mix of
`ingest.py`), and reports:

* events/s (wall time),
* Python CPU µs/event (the child's own `process_time`),
* PostgreSQL CPU µs/event (psutil CPU time of every backend connected to the child's
  database: the pipeline uses one connection, so this is exactly the database's share).

New and old alternate (ABAB, BABA, …) so that other load on the shared machine hits both
alike; medians are printed with the per-pair ratios.  `--profile` runs cProfile in the
"new" children instead and prints the top functions (cumulative, then own time).

    .venv/bin/python benchmarks/server/cpu_ab.py [--ref HEAD] [--events 20000] [--pairs 3]
        [--backend postgresql|sqlite] [--profile]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BATCH = 500


def backend_cpu(pids: set[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def child(tree: str, db_url: str, events: int, profile: bool) -> None:
    sys.path.insert(0, str(REPO))  # tests.support, benchmarks (for make_events)
    sys.path.insert(0, tree)       # policy_server of the variant measured
    sys.path.insert(0, str(HERE))
    importlib.import_module("policy_server")  # from `tree`, before ingest.py puts this repository first
    import ingest as bench  # benchmarks/server/ingest.py: the event mix and the set-up

    from policy_server.cli import _tune_gc
    from policy_server.events.ingest import ingest_batch

    assert Path(sys.modules["policy_server"].__file__).is_relative_to(tree), "wrong tree imported"
    engine, sm, agent = bench._setup(db_url)
    items = bench.make_events(events)
    is_pg = engine.dialect.name == "postgresql"

    def backends() -> set[int]:
        if not is_pg:
            return set()
        with engine.connect() as c:
            from sqlalchemy import text

            return set(c.scalars(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")))

    with sm() as db:  # warm-up: connection, prepared statements
        ingest_batch(db, agent=agent(db), items=bench.make_events(BATCH, seed=99))
        db.commit()
    _tune_gc()
    pids = backends()
    pg0, py0, wall0 = backend_cpu(pids), time.process_time(), time.perf_counter()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    for i in range(0, len(items), BATCH):
        with sm() as db:
            result = ingest_batch(db, agent=agent(db), items=items[i:i + BATCH])
            db.commit()
        assert not result.rejected and len(result.accepted) == len(items[i:i + BATCH]), result
    if profiler:
        profiler.disable()
    wall, py = time.perf_counter() - wall0, time.process_time() - py0
    pg = backend_cpu(pids | backends()) - pg0
    if profiler:
        import pstats

        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(35)
        stats.sort_stats("tottime").print_stats(35)
    print(json.dumps({"rate": events / wall, "py_us": py / events * 1e6, "pg_us": pg / events * 1e6}))


def export_tree(ref: str, into: Path) -> Path:
    archive, tree = into / "old.tar", into / "old"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), ref], cwd=REPO, check=True)
    tree.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(tree)], check=True)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD", help="git ref of the old variant (default HEAD)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--backend", default="postgresql", choices=["postgresql", "sqlite"])
    parser.add_argument("--profile", action="store_true", help="cProfile the new variant only")
    parser.add_argument("--child", nargs=2, metavar=("TREE", "DB_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.events, args.profile)

    sys.path.insert(0, str(REPO))
    from tests.support.postgres import PostgresCluster

    cluster = PostgresCluster() if args.backend == "postgresql" else None
    if cluster:
        cluster.start()
    results: dict[str, list[dict]] = {"new": [], "old": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            trees = {"new": REPO, "old": None if args.profile else export_tree(args.ref, tmp)}
            n = 0
            for pair in range(args.pairs):
                order = ["new"] if args.profile else (["new", "old"] if pair % 2 == 0 else ["old", "new"])
                for name in order:
                    n += 1
                    url = cluster.create_database() if cluster else f"sqlite:///{tmp / f'd{n}.sqlite'}"
                    cmd = [sys.executable, __file__, "--child", str(trees[name]), url,
                           "--events", str(args.events)]
                    out = subprocess.run(cmd + (["--profile"] if args.profile else []),
                                         capture_output=True, text=True)
                    if out.returncode:
                        raise SystemExit(f"{name} failed:\n{out.stderr}")
                    if args.profile:
                        print(out.stderr)
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    r["load"] = os.getloadavg()[0]
                    results[name].append(r)
                    print(f"pair {pair + 1} {name}: {r['rate']:8,.0f}/s  python {r['py_us']:5.1f} µs/ev  "
                          f"postgres {r['pg_us']:5.1f} µs/ev  (load {r['load']:.1f})", flush=True)
    finally:
        if cluster:
            cluster.stop()
    if args.profile:
        return
    print(f"\n{args.backend}, {args.events} events, {args.pairs} pairs, old = {args.ref}")
    print("| variant | events/s | Python µs/event | PostgreSQL µs/event | total µs/event |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in ("new", "old"):
        rs = results[name]
        med = {k: statistics.median(r[k] for r in rs) for k in ("rate", "py_us", "pg_us")}
        total = statistics.median(r["py_us"] + r["pg_us"] for r in rs)
        print(f"| {name} | {med['rate']:,.0f} | {med['py_us']:.1f} | {med['pg_us']:.1f} | {total:.1f} |")
    ratios = [n["rate"] / o["rate"] for n, o in zip(results["new"], results["old"], strict=True)]
    cpu = [(n["py_us"] + n["pg_us"]) / (o["py_us"] + o["pg_us"])
           for n, o in zip(results["new"], results["old"], strict=True)]
    print("pairs new/old events/s: " + ", ".join(f"{r:.2f}" for r in ratios)
          + "; CPU/event new/old: " + ", ".join(f"{r:.2f}" for r in cpu))


if __name__ == "__main__":
    main()
