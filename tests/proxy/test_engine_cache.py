"""The ClientHello verdict cache: same answer as the uncached decision, scoped to one minute
and one policy version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.proxy.engine import Engine
from policy_server.protocol import Ban
from tests.proxy.conftest import STUDENT, base_bundle

NOW = 1_800_000_000.0  # a fixed instant: the test does not depend on the wall clock's minute


def verdict(engine: Engine, host: str, when: float = NOW, group: str = "student"):
    return engine.host_verdict(host, group=group, user=STUDENT, seat="lab1-01", room=None, when=when)


def test_cached_verdict_equals_the_fresh_decision():
    engine = Engine.from_bundle(base_bundle().model_dump(mode="json"))
    from filters.decision import decide_host

    for host in ("school.test", "bad.test", "bank.test", "news.test"):
        first = verdict(engine, host)
        assert verdict(engine, host) is first  # the second ClientHello is a dict lookup
        fresh = decide_host(engine.policy, engine.index, host=host, group="student",
                            at=datetime.fromtimestamp(NOW, UTC), room=None, seat="lab1-01", os_user=STUDENT)
        assert first == fresh
    assert verdict(engine, "school.test", NOW + 60) is not verdict(engine, "school.test")  # next minute
    assert verdict(engine, "news.test", group="teacher").action != verdict(engine, "news.test").action


def test_a_new_policy_version_is_never_answered_from_the_old_cache():
    engine = Engine.from_bundle(base_bundle().model_dump(mode="json"))
    assert verdict(engine, "school.test").action != "block"
    banned = base_bundle()
    banned.version = 2
    banned.bans = [Ban(id="b1", seat="lab1-01", until=datetime.fromtimestamp(NOW, UTC) + timedelta(hours=1),
                       by="teacher")]
    assert verdict(Engine.from_bundle(banned.model_dump(mode="json")), "school.test").action == "block"
