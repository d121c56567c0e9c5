"""Chaos run: real `kalkan-server` and real agents under faults; nothing lost, nothing doubled.

While agents' outboxes fill with events (written as the proxy would, from another process),
the server is restarted (SIGTERM) and killed (SIGKILL) again and again, agents are killed
mid-upload and started again, and the disk under the server's database is filled for a while
(a small tmpfs: on SQLite the state directory, on PostgreSQL the cluster's own directory).
Then every event must be stored on the server exactly once, none moved to an agent's
`rejected` table, none dropped from an outbox.

Figures: events, restarts, kills, agent kills, lost, duplicated, rejected, dropped, the time
to drain everything after the last fault, and the time until the backlog made while the disk
was full is stored after it is freed (goal for both: <= 30 s).

    sudo .venv/bin/python benchmarks/chaos/chaos.py --backend sqlite|postgresql [--long]

Needs root (tmpfs mount).  `tests/e2e/test_chaos.py` runs a short version of the same in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import func, select, text  # noqa: E402

from agent.outbox import Outbox, open_sink  # noqa: E402
from policy_server.db.models import Event  # noqa: E402
from tests.support.agent_process import AgentProcess  # noqa: E402
from tests.support.postgres import RUN_AS, PostgresCluster  # noqa: E402
from tests.support.server import KalkanServerProcess  # noqa: E402

URL_PREFIX = "http://chaos.test/"


@dataclass
class Plan:
    agents: int = 3
    events_per_agent: int = 1000
    emit_seconds: float = 20.0  # events are written evenly over this time
    restarts: int = 3  # server SIGTERM + start
    kills: int = 2  # server SIGKILL + start
    agent_kills: int = 3
    down_s: float = 1.5  # how long the server stays down each time
    disk_full_s: float = 8.0
    tmpfs_mb: int = 64
    gap_s: float = 2.0  # between faults


SHORT = Plan()
CI = Plan(agents=2, events_per_agent=500, emit_seconds=8.0, restarts=1, kills=1, agent_kills=1, down_s=1.0,
          disk_full_s=4.0, tmpfs_mb=32, gap_s=1.0)
LONG = Plan(agents=5, events_per_agent=20_000, emit_seconds=300.0, restarts=13, kills=7, agent_kills=10,
            down_s=3.0, disk_full_s=30.0, tmpfs_mb=1024, gap_s=3.0)


@dataclass
class Result:
    backend: str
    events: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    rejected: int = 0
    dropped: int = 0
    restarts: int = 0
    kills: int = 0
    agent_kills: int = 0
    disk_full_s: float = 0.0
    drain_after_last_fault_s: float | None = None
    drain_after_disk_full_s: float | None = None
    wall_s: float = 0.0
    faults: list[str] = field(default_factory=list)
    # the machine's 1-minute load average, sampled after each fault and during the drain
    load_1min: list[float] = field(default_factory=list)


@contextmanager
def tmpfs(size_mb: int):
    mount = Path(tempfile.mkdtemp(prefix="kalkan-chaos-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)


def fill(mount: Path) -> Path:
    filler = mount / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True, check=False)
    return filler


class Emitter(threading.Thread):
    """Writes one agent's events into its outbox at `count / seconds` per second (as the proxy
    would): at least `count`, and on until `finish` is set, so the last fault still meets a
    backlog."""

    def __init__(self, agent: AgentProcess, index: int, count: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.agent, self.index, self.count, self.seconds = agent, index, count, seconds
        self.emitted = 0
        self.finish = threading.Event()

    def run(self) -> None:
        sink = open_sink(self.agent.state_dir)
        rate = self.count / self.seconds
        try:
            start = time.monotonic()
            chunk = 50
            k = 0
            while k < self.count or not self.finish.is_set():
                for _ in range(chunk):
                    sink.emit("web.report", {"url": f"{URL_PREFIX}{self.index}/{k}"})
                    k += 1
                    self.emitted = k
                time.sleep(max(0.0, start + k / rate - time.monotonic()))
        finally:
            sink.outbox.close()


def stored_counts(server: KalkanServerProcess, *, distinct: bool = True) -> tuple[int, int | None]:
    """(rows, distinct URLs) of the chaos events on the server.  A read that takes no lock
    (on SQLite a deferred transaction: the observer must not take the write lock the server
    stores with, as it did before — every poll held it for a count over all events)."""
    with server.db() as db:
        db.connection(execution_options={"kalkan_read_only": True})
        rows = db.scalar(select(func.count()).select_from(Event).where(Event.type == "web.report"))
        if not distinct:
            return rows or 0, None
        if db.get_bind().dialect.name == "postgresql":
            unique = db.scalar(text("SELECT count(DISTINCT data->>'url') FROM events "
                                    "WHERE type = 'web.report'"))
        else:
            unique = db.scalar(text("SELECT count(DISTINCT json_extract(data, '$.url')) FROM events "
                                    "WHERE type = 'web.report'"))
    return rows or 0, unique or 0


def wait_stored(server: KalkanServerProcess, at_least: int, timeout: float) -> float | None:
    """Seconds until the server holds `at_least` chaos events (None: not within `timeout`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if stored_counts(server, distinct=False)[0] >= at_least:
                return time.monotonic() - start
        except Exception:  # noqa: BLE001 — the database may be restarting
            pass
        time.sleep(0.2)
    return None


def run(plan: Plan, backend: str, *, log=print) -> Result:
    result = Result(backend=backend)
    began = time.monotonic()
    with ExitStack() as stack:
        # PostgreSQL needs room for its catalog and a few WAL segments before it is filled on purpose
        disk = stack.enter_context(tmpfs(plan.tmpfs_mb if backend == "sqlite" else max(plan.tmpfs_mb, 512)))
        work = Path(tempfile.mkdtemp(prefix="kalkan-chaos-work-"))
        stack.callback(shutil.rmtree, work, True)
        db_url = None
        cluster = None
        if backend == "postgresql":
            cluster = PostgresCluster()
            shutil.rmtree(cluster.root, ignore_errors=True)
            cluster.root = disk / "pg"  # the database's own disk is the one that fills up
            cluster.root.mkdir()
            cluster.data = cluster.root / "data"
            if os.geteuid() == 0:
                shutil.chown(disk, RUN_AS)
            cluster.start()
            stack.callback(cluster.stop)
            # as a real server runs: a commit the server answered is on disk (the test cluster
            # defaults to synchronous_commit=off, which a PANIC on a full disk would expose)
            import psycopg

            with psycopg.connect(host="127.0.0.1", port=cluster.port, user=cluster.user, dbname="postgres",
                                 autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET synchronous_commit = on")
                conn.execute("SELECT pg_reload_conf()")
            db_url = cluster.create_database()
            server_dir = work / "server"
        else:
            server_dir = disk / "server"
        server = KalkanServerProcess(server_dir, db_url=db_url)
        server.start()
        stack.callback(server.stop)
        agents = []
        for i in range(plan.agents):
            agent = AgentProcess(work / f"agent-{i}")
            agent.enroll(server, seat=f"seat-{i}")
            agent.start(collectors=["heartbeat"], heartbeat_s=5)
            stack.callback(agent.stop)
            agents.append(agent)
        emitters = [Emitter(a, i, plan.events_per_agent, plan.emit_seconds) for i, a in enumerate(agents)]
        for e in emitters:
            e.start()
        result.events = plan.agents * plan.events_per_agent

        # the faults, spread over the emitting time; the disk fills in the middle
        kinds = ["kill"] * plan.kills + ["restart"] * plan.restarts
        server_faults = [kinds[(k * 7) % len(kinds)] for k in range(len(kinds))] if kinds else []
        gap = plan.gap_s
        agent_turn = 0
        faults: list[str] = []
        for k in range(len(server_faults)):
            faults.append(server_faults[k])
            if agent_turn < plan.agent_kills:
                faults.append("agent")
                agent_turn += 1
            if k == 0:  # early, while the agents are still writing: a backlog builds up behind it
                faults.append("disk")
        faults += ["agent"] * (plan.agent_kills - agent_turn)
        if "disk" not in faults:
            faults.append("disk")
        last_fault_end = time.monotonic()
        for fault in faults:
            time.sleep(gap)
            if fault in ("restart", "kill"):
                if fault == "kill":
                    server.kill()
                    result.kills += 1
                else:
                    server.stop()
                    result.restarts += 1
                time.sleep(plan.down_s)
                server.start()
            elif fault == "agent":
                victim = agents[result.agent_kills % len(agents)]
                victim.kill()  # mid-upload: its outbox has a backlog
                result.agent_kills += 1
                time.sleep(0.5)
                victim.start(collectors=["heartbeat"], heartbeat_s=5)
            elif fault == "disk":
                filler = fill(disk)
                started = time.monotonic()
                time.sleep(plan.disk_full_s)
                emitted_at_free = sum(e.emitted for e in emitters)
                filler.unlink()
                result.disk_full_s = round(time.monotonic() - started, 1)
                freed = time.monotonic()
                if cluster is not None:  # PostgreSQL may have stopped on a full disk: it must come back
                    _ensure_postgres(cluster)
                took = wait_stored(server, emitted_at_free, timeout=300)
                result.drain_after_disk_full_s = None if took is None else round(time.monotonic() - freed, 1)
            result.faults.append(fault)
            result.load_1min.append(round(os.getloadavg()[0], 1))
            last_fault_end = time.monotonic()
            log(f"{datetime.now(UTC):%H:%M:%S} {fault}: stored {stored_counts_safe(server)} of "
                f"{sum(e.emitted for e in emitters)} emitted")
        for e in emitters:  # the last fault is over: write what is left of the plan, then stop
            e.finish.set()
        for e in emitters:
            e.join()
        result.events = sum(e.emitted for e in emitters)
        took = wait_stored(server, result.events, timeout=300)
        result.drain_after_last_fault_s = (None if took is None
                                           else round(time.monotonic() - last_fault_end, 1))
        result.load_1min.append(round(os.getloadavg()[0], 1))
        for agent in agents:  # the outboxes are empty and nothing was moved aside or dropped
            agent.wait_status(lambda s: s["outbox"]["depth"] == 0, timeout=120)
        rows, distinct = stored_counts(server)
        result.stored = rows
        result.duplicated = rows - distinct
        result.lost = result.events - distinct
        for agent in agents:
            with Outbox(agent.state_dir / "outbox.sqlite") as box:
                result.rejected += box.rejected_count()
                result.dropped += sum(box.drop_totals().values())
    result.wall_s = round(time.monotonic() - began, 1)
    return result


def stored_counts_safe(server: KalkanServerProcess) -> int | str:
    try:
        return stored_counts(server, distinct=False)[0]
    except Exception:  # noqa: BLE001
        return "?"


def _ensure_postgres(cluster: PostgresCluster) -> None:
    command = [str(cluster.bin / "pg_ctl"), "-D", str(cluster.data), "status"]
    if cluster.as_root:
        command = ["runuser", "-u", RUN_AS, "--", *command]
    probe = subprocess.run(command, capture_output=True, text=True)
    if probe.returncode != 0:
        cluster.resume()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--long", action="store_true", help="the long run (figures in RESULTS.md)")
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args()
    plan = LONG if args.long else SHORT
    result = run(plan, args.backend)
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.node(),
              "cpus": os.cpu_count(), "plan": asdict(plan), **asdict(result)}
    print(json.dumps(record, indent=2))
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    ok = result.lost == 0 and result.duplicated == 0 and result.rejected == 0 and result.dropped == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
