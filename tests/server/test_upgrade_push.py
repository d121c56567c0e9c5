"""The "a rollout started" push (policies/push.py `event: upgrade`): told to every agent of the
school after the commit (never after a rollback), by NOTIFY to every PostgreSQL worker, and the
agent's upgrade loop asks at once instead of at its slow poll (end to end with a real server and
agent: tests/deploy/test_upgrades.py)."""

from __future__ import annotations

import asyncio
import threading
import time

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from agent.upgrade import UpgradeLoop
from policy_server.db.models import Base
from policy_server.policies import push as push_mod
from tests.support.postgres import postgres_cluster  # noqa: F401  (fixture)


def test_every_stream_is_told_after_the_commit_and_not_after_a_rollback(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'k.sqlite'}")
    Base.metadata.create_all(engine)
    loop = asyncio.new_event_loop()
    hub = push_mod.PushHub()
    hub._loop = loop
    queues = [hub.subscribe("agent-a"), hub.subscribe("agent-b")]
    with push_mod._hubs_lock:
        push_mod._hubs.add(hub)
    try:
        with Session(engine) as db:
            push_mod.schedule_upgrade_push(db)
            db.rollback()
            loop.run_until_complete(asyncio.sleep(0))
            assert all(q.empty() for q in queues)  # a rollout that was not stored tells nobody
            push_mod.schedule_upgrade_push(db)
            db.commit()
        loop.run_until_complete(asyncio.sleep(0))
        assert [q.get_nowait() for q in queues] == [push_mod.UPGRADE, push_mod.UPGRADE]
    finally:
        with push_mod._hubs_lock:
            push_mod._hubs.discard(hub)
        loop.close()
        engine.dispose()


def test_another_worker_hears_it_by_notify(postgres_cluster) -> None:  # noqa: F811
    from policy_server.db import migrate
    from policy_server.db.session import make_engine, make_sessionmaker

    url = postgres_cluster.create_database()
    engine = make_engine(url)
    migrate.upgrade(engine)

    async def scenario() -> None:
        hub = push_mod.PushHub()
        await hub.start(make_sessionmaker(engine))
        queue = hub.subscribe("agent-a")
        try:
            deadline = time.monotonic() + 10
            while not hub.listening:
                assert time.monotonic() < deadline, "no LISTEN connection"
                await asyncio.sleep(0.05)
            other = make_engine(url)  # "another worker": its own engine, no hub of its own here

            def commit_elsewhere() -> None:
                with Session(other) as db:
                    push_mod.schedule_upgrade_push(db)
                    db.commit()

            with push_mod._hubs_lock:  # only the NOTIFY can reach the hub
                push_mod._hubs.discard(hub)
            await asyncio.to_thread(commit_elsewhere)
            assert await asyncio.wait_for(queue.get(), 10) is push_mod.UPGRADE
            other.dispose()
        finally:
            await hub.stop()

    asyncio.run(scenario())
    engine.dispose()


def test_the_upgrade_loop_asks_at_once_when_woken(tmp_path) -> None:
    """A loop that would poll every hour asks again right after `wake` (the push), after its
    jitter, and stops at once when the agent stops."""
    asked: list[float] = []
    loop = UpgradeLoop(tmp_path, interval_s=3600, jitter_s=0)
    loop.step = lambda client: asked.append(time.monotonic())  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(None, stop), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not asked:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)
    assert len(asked) == 1  # the first round, at start; the next would be in an hour
    woken = time.monotonic()
    loop.wake()
    while len(asked) < 2:
        assert time.monotonic() < deadline, "the push did not make it ask"
        time.sleep(0.01)
    assert asked[1] - woken < 1.0
    stop.set()
    loop.wake()
    thread.join(3)
    assert not thread.is_alive()
