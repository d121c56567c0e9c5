"""Ingest benchmark: events/s through validate → store → rules, batches of 500.

Measures, side by side in one run, on SQLite and on a throwaway PostgreSQL cluster, the
current code and the previous implementation (the baseline):

* `http`     — a real `kalkan-server run` (TLS) and `--clients` concurrent posting clients,
  each its own enrolled agent, bodies serialized before the clock starts (httpx, keep-alive,
  HTTP/1.1; the CPU the clients take is printed).  On PostgreSQL the current server runs
  twice, with `--workers 1` and `--workers 2`.  The baseline
  server is the tree of `--baseline-ref` (default 5897ecc, the first pass), exported with
  `git archive` to a temporary folder and run from there with the same Python.
* `pipeline` — `ingest_batch` called in-process (no HTTP, no JSON parsing): the server's own
  work.  The baseline is `previous_pipeline.py`, a frozen copy of the first pass's code.
  Both run under the garbage-collector settings `kalkan-server run` now uses
  (`cli._tune_gc`), so this row compares the code alone; the HTTP rows compare whole
  servers (the old one with Python's default GC).

The new and old variants alternate inside each repeat so that other load on this shared
machine hits both alike; the table shows medians of `--repeats` runs and the load average.
The event mix is what a lab sends: 40 % web.blocked (rules merge them into incidents), 30 %
heartbeats, 20 % web.usage, 10 % web.report.

    .venv/bin/python benchmarks/server/ingest.py [--events 20000] [--clients 4] [--repeats 3]
        [--backends sqlite,postgresql] [--no-pipeline | --no-http]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import date
from functools import partial
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from policy_server import protocol  # noqa: E402

BATCH = 500
CLIENT_CPU: list[float] = []  # the HTTP clients' CPU use, in cores, per HTTP measurement
# CPU µs per event of the server's processes and of PostgreSQL, per (backend, variant name)
CPU_PER_EVENT: dict[tuple[str, str], list[tuple[float, float]]] = {}


def tree_cpu(root_pid: int | None) -> float:
    """CPU seconds (user + system) of a process and all its descendants (server workers)."""
    import psutil

    if root_pid is None:
        return 0.0
    total = 0.0
    try:
        root = psutil.Process(root_pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


POSTMASTER: list[int] = []  # the benchmark cluster's postmaster (its children: the backends)


def cluster_pid() -> int | None:
    return POSTMASTER[0] if POSTMASTER else None
GOALS = {"sqlite": 10_000, "postgresql": 20_000}


def make_events(n: int, seats: int = 30, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        seat = f"seat-{rng.randrange(seats)}"
        subject = protocol.Subject(os_user=f"st{rng.randrange(seats)}", seat=seat)
        kind = rng.random()
        if kind < 0.4:
            e = protocol.make_event(
                "web.blocked",
                {"url": f"http://bad{i % 50}.example/", "host": "bad.example", "categories": ["adult"],
                 "group": "student"},
                subject=subject,
            )
        elif kind < 0.7:
            e = protocol.make_event(
                "agent.heartbeat",
                {"agent_version": "0.1.0", "policy_version": 1, "collectors": {"usb": {"state": "ok"}}},
            )
        elif kind < 0.9:
            e = protocol.make_event(
                "web.usage",
                {"period_start": "2025-01-01T08:00:00Z", "period_end": "2025-01-01T09:00:00Z",
                 "counts": {"edu.kg": 12, "wikipedia.org": 3}},
                subject=subject,
            )
        else:
            e = protocol.make_event("web.report", {"url": f"http://r{i % 20}.example/"}, subject=subject)
        out.append(e.model_dump(mode="json"))
    return out


# ----------------------------------------------------------------------------- HTTP


def export_tree(ref: str, into: Path) -> Path:
    """The repository at `ref`, as files (no checkout of the shared working tree)."""
    archive = into / "baseline.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), ref], cwd=REPO, check=True)
    tree = into / "baseline"
    tree.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def server_process(state: Path, db_url: str | None, code_tree: Path | None, workers: int | None = None):
    """A `kalkan-server run` of this repository (with `--workers`), or of an exported older tree."""
    from tests.support.server import KalkanServerProcess

    class Server(KalkanServerProcess):
        def _command(self) -> list[str]:
            cmd = super()._command()
            cmd += ["--workers", str(workers)] if workers else []
            if code_tree is None:
                return cmd
            # Same arguments, but the `policy_server` package imported from the old tree.
            boot = (f"import sys; sys.path.insert(0, {str(code_tree)!r}); "
                    "from policy_server.cli import main; sys.exit(main())")
            return [sys.executable, "-c", boot, *cmd[3:]]

    return Server(state, db_url=db_url)


def bench_http(db_url: str | None, state: Path, events: list[dict], *, clients: int,
               code_tree: Path | None, workers: int | None = None,
               cpu_key: tuple[str, str] | None = None) -> float:
    with server_process(state, db_url, code_tree, workers) as server:
        tokens = [server.enroll(f"pc-{i}", room="lab-1")[1] for i in range(clients)]
        bodies = [orjson.dumps({"events": events[i:i + BATCH]}) for i in range(0, len(events), BATCH)]
        lanes = [bodies[k::clients] for k in range(clients)]
        errors: list[str] = []

        def lane(token: str, mine: list[bytes]) -> None:
            with server.agent_client(token) as c:
                for body in mine:
                    r = c.post("/api/v1/events", content=body, headers={"content-type": "application/json"})
                    if r.status_code != 200 or len(r.json()["accepted"]) != BATCH:
                        errors.append(r.text[:200])

        for k, token in enumerate(tokens):  # warm-up (connections, caches, prepared statements): not timed
            lane(token, [orjson.dumps({"events": make_events(BATCH, seed=100 + k)})])

        threads = [threading.Thread(target=lane, args=(t, m)) for t, m in zip(tokens, lanes, strict=True)]
        server_cpu, pg_cpu = tree_cpu(server.proc.pid), tree_cpu(cluster_pid() if db_url else None)
        start, client_cpu = time.perf_counter(), time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        if cpu_key:  # (the postmaster's own CPU is in there too: small, and alike for all variants)
            server_cpu = tree_cpu(server.proc.pid) - server_cpu
            pg_cpu = tree_cpu(cluster_pid() if db_url else None) - pg_cpu
            CPU_PER_EVENT.setdefault(cpu_key, []).append((server_cpu / len(events) * 1e6,
                                                          pg_cpu / len(events) * 1e6))
        # This process is only the clients now: its CPU time is what they took from the 2 cores.
        CLIENT_CPU.append((time.process_time() - client_cpu) / elapsed)
        if errors:
            raise RuntimeError(f"ingest errors: {errors[:3]}\n{server.log_text()}")
    return len(events) / elapsed


# ----------------------------------------------------------------------------- in-process


def _setup(db_url: str):
    from policy_server.agents.service import create_enrollment_code, enroll
    from policy_server.db import migrate
    from policy_server.db.models import Workstation
    from policy_server.db.session import make_engine, make_sessionmaker
    from policy_server.school.service import ensure_room, ensure_school

    engine = make_engine(db_url)
    migrate.upgrade(engine)
    sm = make_sessionmaker(engine)
    with sm() as db:
        ensure_school(db, name="Bench", actor="bench")
        ensure_room(db, name="lab-1", actor="bench")
        code = create_enrollment_code(db, actor="bench", room="lab-1", uses=1)
        agent_id = enroll(db, protocol.EnrollRequest(code=code, hostname="pc")).agent_id
        db.commit()
    return engine, sm, lambda db: db.get(Workstation, agent_id)


def bench_pipeline(db_url: str, events: list[dict], *, ingest) -> float:
    engine, sm, agent = _setup(db_url)
    with sm() as db:  # warm-up (connection, caches, prepared statements): not timed
        ingest(db, agent=agent(db), items=make_events(BATCH, seed=99))
        db.commit()
    start = time.perf_counter()
    for i in range(0, len(events), BATCH):
        with sm() as db:
            result = ingest(db, agent=agent(db), items=events[i:i + BATCH])
            db.commit()
            assert not result.rejected and len(result.accepted) == len(events[i:i + BATCH])
    elapsed = time.perf_counter() - start
    engine.dispose()
    return len(events) / elapsed


# ----------------------------------------------------------------------------- report


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per measurement")
    parser.add_argument("--clients", type=int, default=4, help="concurrent posting clients (HTTP)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-ref", default="5897ecc", help="git ref of the previous implementation")
    parser.add_argument("--baseline-workers", action="store_true",
                        help="also run the baseline with --workers 2 on PostgreSQL (refs from 9ff448d on)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--no-http", action="store_true", help="only the in-process pipeline")
    parser.add_argument("--no-pipeline", action="store_true", help="only the HTTP servers")
    args = parser.parse_args()

    import previous_pipeline

    from policy_server.cli import _tune_gc
    from policy_server.events.ingest import ingest_batch
    from tests.support.postgres import PostgresCluster

    _tune_gc()  # as in the server process (see the module docstring)
    backends = args.backends.split(",")
    cluster = PostgresCluster() if "postgresql" in backends else None
    if cluster:
        cluster.start()
        POSTMASTER.append(int((cluster.data / "postmaster.pid").read_text().split()[0]))
    runs: dict[tuple[str, str], list[float]] = {}
    loads: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            old_tree = None if args.no_http else export_tree(args.baseline_ref, tmp)
            databases = iter(range(10**6))

            def fresh_url(backend: str) -> str:
                return (f"sqlite:///{tmp / f'p{next(databases)}.sqlite'}" if backend == "sqlite"
                        else cluster.create_database())

            for repeat in range(args.repeats):
                for backend in backends:
                    def http_url(backend=backend) -> str | None:  # SQLite: the server's own file
                        return None if backend == "sqlite" else fresh_url(backend)

                    variants = [] if args.no_pipeline else [
                        ("pipeline new", partial(bench_pipeline, fresh_url(backend), ingest=ingest_batch)),
                        ("pipeline old", partial(bench_pipeline, fresh_url(backend),
                                                 ingest=previous_pipeline.ingest_batch)),
                    ]
                    if not args.no_http:
                        # "new": one server process; on PostgreSQL also `--workers 2`, side by side.
                        ages = [("new", None, 1), ("old", old_tree, None)]
                        if backend == "postgresql":
                            ages.insert(1, ("new 2w", None, 2))
                            if args.baseline_workers:  # an old tree that has `--workers` (third pass on)
                                ages.append(("old 2w", old_tree, 2))
                        variants += [
                            (f"http {age}", partial(bench_http, http_url(), tmp / f"{backend}-{age}{repeat}",
                                                    clients=args.clients, code_tree=tree, workers=workers,
                                                    cpu_key=(backend, f"http {age}")))
                            for age, tree, workers in ages
                        ]
                    for name, bench in variants:
                        loads.append(os.getloadavg()[0])
                        rate = bench(make_events(args.events))
                        runs.setdefault((backend, name), []).append(rate)
                        print(f"repeat {repeat + 1}: {backend:10} {name:13} {rate:9,.0f}/s   "
                              f"(load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        if cluster:
            cluster.stop()

    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\nMachine: nproc={os.cpu_count()}, {cpu_model()}; date {date.today()}; "
          f"load average (1 min) during the runs: median {statistics.median(loads):.1f}, "
          f"max {max(loads):.1f}; {args.events} events per run, medians of {args.repeats}")
    if CLIENT_CPU:
        print(f"HTTP clients' CPU (this process, while timed): median {statistics.median(CLIENT_CPU):.2f} "
              f"cores, max {max(CLIENT_CPU):.2f}")
    if CPU_PER_EVENT:
        print("\nCPU per event while timed, µs (medians)\n"
              "| backend | variant | server processes | PostgreSQL |\n| --- | --- | ---: | ---: |")
        for (backend, name), values in sorted(CPU_PER_EVENT.items()):
            print(f"| {backend} | {name} | {statistics.median(v[0] for v in values):.1f} | "
                  f"{statistics.median(v[1] for v in values):.1f} |")
    rows = ([] if args.no_pipeline else [("pipeline new", "pipeline old", "pipeline in-process")])
    if not args.no_http:
        rows += [("http new", "http old", f"HTTP, TLS, {args.clients} clients, --workers 1"),
                 ("http new 2w", "http old 2w" if args.baseline_workers else "http old",
                  f"HTTP, TLS, {args.clients} clients, --workers 2")]
    print("\n| backend | measure | new | previous (baseline) | new / previous | goal | new / goal |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for backend in backends:
        for new_name, old_name, label in rows:
            if (backend, new_name) not in med:
                continue
            new, old = med[(backend, new_name)], med[(backend, old_name)]
            print(f"| {backend} | {label} | {new:,.0f}/s | {old:,.0f}/s | {new / old:.2f}× | "
                  f"{GOALS[backend]:,}/s | {new / GOALS[backend]:.2f} |")


if __name__ == "__main__":
    main()
