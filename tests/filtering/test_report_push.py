"""The "your reports were decided" push (issue 12): a decision in the report queue tells only
the seats the reports came from, after the commit, and the agent then reads its report status at
once (the student's page shows the decision within seconds; measured in
tests/e2e/test_filtering_console.py)."""

from __future__ import annotations

import asyncio

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from agent.policy import PolicyManager
from agent.state import AgentState
from policy_server.db.models import Base
from policy_server.policies import push as push_mod


def test_the_hub_tells_only_the_named_agents() -> None:
    hub = push_mod.PushHub()
    mine, other, anonymous = hub.subscribe("agent-a"), hub.subscribe("agent-b"), hub.subscribe(None)
    assert hub.tell_reports(["agent-a", "agent-z"]) == 1
    assert mine.get_nowait() is push_mod.REPORTS
    assert other.empty() and anonymous.empty()


def test_the_push_goes_out_after_the_commit_and_not_after_a_rollback(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'k.sqlite'}")
    Base.metadata.create_all(engine)
    loop = asyncio.new_event_loop()
    hub = push_mod.PushHub()
    hub._loop = loop
    queue = hub.subscribe("agent-a")
    with push_mod._hubs_lock:
        push_mod._hubs.add(hub)
    try:
        with Session(engine) as db:
            push_mod.schedule_reports_push(db, ["agent-a", None])
            db.rollback()
            loop.run_until_complete(asyncio.sleep(0))
            assert queue.empty()  # a decision that was not stored tells nobody
            push_mod.schedule_reports_push(db, ["agent-a"])
            assert queue.empty()  # not before the commit
            db.commit()
        loop.run_until_complete(asyncio.sleep(0))
        assert queue.get_nowait() is push_mod.REPORTS
    finally:
        with push_mod._hubs_lock:
            push_mod._hubs.discard(hub)
        loop.close()


def test_the_agent_reads_its_report_status_on_the_push_without_fetching_a_policy(tmp_path) -> None:
    asked: list[str] = []

    class NoClient:  # a policy fetch would touch it
        def __getattr__(self, name):
            raise AssertionError(f"the reports push fetched something ({name})")

    manager = PolicyManager(AgentState(tmp_path), on_apply=lambda b: None,
                            on_reports=lambda: asked.append("now"))
    manager._on_push('{"reports": "decided"}', NoClient())
    assert asked == ["now"]
