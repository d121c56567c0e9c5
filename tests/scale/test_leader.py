"""The periodic-checks leader across replicas (policy_server/workers.py `LeaderChecks`): one
leader among processes that share a database, and a leader whose lock connection is cut (the
network between its host and PostgreSQL, or PostgreSQL ending the session) stops its jobs —
and its services, like the lessons' clock — and another process takes over."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from policy_server.checks.scheduler import CheckScheduler, Job
from policy_server.db import migrate
from policy_server.db.session import make_engine, make_sessionmaker
from policy_server.workers import LeaderChecks
from tests.support.postgres import postgres_cluster  # noqa: F401  (fixture)

pytestmark = pytest.mark.postgres


class Clock:
    """Stands for the lessons' clock: started and stopped with the leadership."""

    def __init__(self) -> None:
        self.running = False
        self.starts = 0

    async def start(self) -> None:
        self.running = True
        self.starts += 1

    async def stop(self) -> None:
        self.running = False


def test_a_leader_whose_lock_connection_dies_steps_down_and_another_takes_over(postgres_cluster):  # noqa: F811
    url = postgres_cluster.create_database()
    engines = [make_engine(url) for _ in range(3)]  # two replicas and the "DBA"
    migrate.upgrade(engines[0])
    runs: list[int] = []
    clocks = [Clock(), Clock()]

    def leader(k: int) -> LeaderChecks:
        job = Job(name=f"count-{k}", interval_s=0.05, run=lambda db, now: runs.append(k))
        scheduler = CheckScheduler(make_sessionmaker(engines[k]), [job], first_delay_s=0)
        return LeaderChecks(scheduler, engines[k], retry_s=0.1, also=[clocks[k]])

    async def until(condition, timeout: float = 10.0) -> bool:
        for _ in range(int(timeout / 0.05)):
            if condition():
                return True
            await asyncio.sleep(0.05)
        return condition()

    async def scenario() -> None:
        first, second = leader(0), leader(1)
        await first.start()
        assert await until(lambda: first.leading and 0 in runs)
        await second.start()
        await asyncio.sleep(0.5)
        assert not second.leading and not clocks[1].running and clocks[0].running
        # PostgreSQL ends the leader's lock session (as when its host loses the network)
        pid = first._connection.connection.driver_connection.info.backend_pid
        with engines[2].connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        assert await until(lambda: second.leading and 1 in runs), "the other process never took over"
        assert await until(lambda: not clocks[0].running)
        assert clocks[1].running and first.terms == 1 and second.terms == 1
        runs.clear()
        await asyncio.sleep(0.5)
        assert set(runs) == {1}  # only the new leader runs them now
        assert not first.leading  # the old one asks again, and is refused while the other holds it
        await second.stop()  # the new leader goes: the first one leads again
        assert await until(lambda: first.leading and clocks[0].running)
        assert first.terms == 2
        await first.stop()
        assert not clocks[0].running

    try:
        asyncio.run(scenario())
    finally:
        for engine in engines:
            engine.dispose()
