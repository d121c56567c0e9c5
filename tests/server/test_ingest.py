"""Batch ingest: per-event answers, stored once, bad input refused with a clear message."""

from __future__ import annotations

import json
import threading
import uuid

from sqlalchemy import func, select

from policy_server import protocol
from policy_server.db.models import Event, IsuoAccess, Workstation


def report(url: str = "http://bad.example/page", **subject) -> protocol.EventEnvelope:
    return protocol.make_event(
        "web.report", {"url": url}, subject=protocol.Subject(**subject) if subject else None
    )


def count_events(api) -> int:
    with api.db() as db:
        return db.scalar(select(func.count(Event.id)))


def test_accepted_duplicate_rejected_in_one_batch(api):
    _, auth = api.enroll()
    good = [report() for _ in range(3)]
    bad_type = {"id": str(uuid.uuid4()), "type": "web.nonsense", "occurred_at": "2025-01-01T00:00:00Z"}
    missing = {
        "id": str(uuid.uuid4()),
        "type": "web.report",
        "occurred_at": "2025-01-01T00:00:00Z",
        "data": {},
    }
    no_zone = {**report().model_dump(mode="json"), "occurred_at": "2025-01-01T00:00:00"}
    result = api.post(auth, *good, good[0], bad_type, missing, no_zone, "not an object")
    assert result["accepted"] == [str(e.id) for e in good]
    assert result["duplicates"] == [str(good[0].id)]
    errors = {r["id"]: r["error"] for r in result["rejected"]}
    assert "unknown event type 'web.nonsense'" in errors[bad_type["id"]]
    assert "url: Field required" in errors[missing["id"]]
    assert "timezone" in errors[no_zone["id"]]
    assert errors[None] == "event #7 is not a JSON object"
    assert count_events(api) == 3
    again = api.post(auth, *good)
    assert again == {"accepted": [], "duplicates": [str(e.id) for e in good], "rejected": []}
    assert count_events(api) == 3


def test_event_row_takes_agent_from_token_and_default_clauses(api):
    agent_id, auth = api.enroll()
    event = report(os_user="st1", seat="seat-1")
    api.post(auth, event)
    with api.db() as db:
        row = db.get(Event, str(event.id))
        assert row.agent_id == agent_id
        assert row.clauses == ["000 §8.3", "001 §3.4"]
        assert row.os_user == "st1"
        assert row.occurred_at == event.occurred_at


def test_malformed_json_is_400_and_nothing_stored(api):
    _, auth = api.enroll()
    r = api.client.post(
        "/api/v1/events", content=b'{"events": [', headers={**auth, "content-type": "application/json"}
    )
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["detail"]
    r = api.client.post("/api/v1/events", json={"evnts": []}, headers=auth)
    assert r.status_code == 422 and '{"events"' in r.json()["detail"]
    assert count_events(api) == 0


def test_oversize_batches_are_413_with_the_limit(api):
    _, auth = api.enroll()
    too_many = [report().model_dump(mode="json") for _ in range(protocol.MAX_EVENTS_PER_BATCH + 1)]
    r = api.client.post("/api/v1/events", json={"events": too_many}, headers=auth)
    assert r.status_code == 413
    assert str(protocol.MAX_EVENTS_PER_BATCH) in r.json()["detail"]
    big = json.dumps({"events": [report("http://x/" + "a" * 4000).model_dump(mode="json")] * 1100})
    assert len(big) > protocol.MAX_BATCH_BYTES
    r = api.client.post("/api/v1/events", content=big, headers={**auth, "content-type": "application/json"})
    assert r.status_code == 413
    assert "KiB per batch" in r.json()["detail"]
    assert count_events(api) == 0


def test_wrong_missing_and_revoked_tokens_are_401(api):
    agent_id, auth = api.enroll()
    body = {"events": [report().model_dump(mode="json")]}
    r = api.client.post("/api/v1/events", json=body)
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    r = api.client.post("/api/v1/events", json=body, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and "enrol the workstation again" in r.json()["detail"]
    from policy_server.agents.service import revoke_agent

    with api.db() as db:
        revoke_agent(db, agent_id=agent_id, actor="test")
        db.commit()
    r = api.client.post("/api/v1/events", json=body, headers=auth)
    assert r.status_code == 401
    assert api.client.get("/api/v1/policy", headers=auth).status_code == 401
    assert count_events(api) == 0


def test_concurrent_posts_of_the_same_batch_store_each_id_once(api):
    _, auth = api.enroll()
    events = [report(f"http://site{i}.example/").model_dump(mode="json") for i in range(200)]
    results: list[dict] = []

    def post() -> None:
        r = api.client.post("/api/v1/events", json={"events": events}, headers=auth)
        results.append(r.json())

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = [i for r in results for i in r["accepted"]]
    duplicates = [i for r in results for i in r["duplicates"]]
    assert sorted(accepted) == sorted(e["id"] for e in events)  # each id accepted by exactly one post
    assert len(duplicates) == 3 * len(events)
    assert count_events(api) == len(events)


def test_heartbeat_updates_workstation(api):
    agent_id, auth = api.enroll()
    beat = protocol.make_event(
        "agent.heartbeat",
        {
            "agent_version": "0.1.0",
            "policy_version": 3,
            "outbox_depth": 5,
            "collectors": {
                "usb": {"state": "ok"},
                "antivirus": {"state": "degraded", "detail": "old signatures"},
            },
        },
    )
    api.post(auth, beat)
    from policy_server.agents.service import list_workstations

    with api.db() as db:
        ws = db.get(Workstation, agent_id)
        assert ws.policy_version == 3 and ws.agent_version == "0.1.0" and ws.last_seen_at is not None
        (view,) = list_workstations(db)
        assert view.state == "degraded" and view.room == "lab-1" and view.seat == "seat-1"


def test_isuo_sessions_are_joined(api):
    _, auth = api.enroll()
    start = protocol.make_event(
        "isuo.session",
        {"host": "emis.edu.gov.kg", "state": "start", "started_at": "2025-03-01T08:00:00Z"},
        subject=protocol.Subject(os_user="teacher1"),
    )
    end = protocol.make_event(
        "isuo.session",
        {
            "host": "emis.edu.gov.kg",
            "state": "end",
            "started_at": "2025-03-01T08:00:00Z",
            "ended_at": "2025-03-01T08:20:00Z",
        },
    )
    api.post(auth, start)
    api.post(auth, end)
    with api.db() as db:
        (row,) = db.scalars(select(IsuoAccess)).all()
        assert row.os_user == "teacher1" and row.start_event_id == str(start.id)
        assert row.ended_at.isoformat() == "2025-03-01T08:20:00+00:00"


def test_an_event_over_the_per_event_limit_is_rejected_alone(api):
    _, auth = api.enroll()
    good = [report(f"http://ok{i}.example/") for i in range(2)]
    big = report().model_dump(mode="json")
    big["data"]["padding"] = "x" * protocol.MAX_EVENT_BYTES  # unknown field: only its size matters
    result = api.post(auth, good[0], big, good[1])
    assert result["accepted"] == [str(e.id) for e in good]
    (rejected,) = result["rejected"]
    assert rejected["id"] == big["id"]
    assert f"the limit is {protocol.MAX_EVENT_BYTES} bytes per event" in rejected["error"]
    assert "event #1 (web.report)" in rejected["error"]
    assert count_events(api) == 2


def test_batch_validation_agrees_with_the_exact_check_event_by_event():
    """The fast whole-batch path accepts exactly what the per-event reference accepts, with the
    same stored content, and a failing batch falls back to per-event answers."""
    from policy_server.events.validation import validate_batch, validate_exactly

    subject = protocol.Subject(os_user="st1", seat="seat-3")
    valid = [
        report("http://a.example/", os_user="st1"),
        protocol.make_event("agent.heartbeat", {"agent_version": "1", "collectors": {"av": {"state": "ok"}}}),
        protocol.make_event("web.blocked", {"url": "http://b.example/", "categories": ["adult"]},
                            subject=subject),
        protocol.make_event("isuo.session", {"host": "emis.kg", "state": "start",
                                             "started_at": "2025-03-01T08:00:00+06:00"}),
        protocol.make_event("agent.events_dropped", {"counts": {"web.usage": 3}}, clauses=["000 §3.2"]),
    ]
    items = [e.model_dump(mode="json") for e in valid]
    items[1]["data"]["unknown_extra"] = 1  # ignored by the data model, as the protocol promises
    no_data = {k: v for k, v in protocol.make_event("software.changed", {}).model_dump(mode="json").items()
               if k != "data"}  # `data` may be left out when its model has only defaults
    items.append(no_data)
    fast = validate_batch(items)
    assert all(not isinstance(v, str) for v in fast)
    def stored(v):
        return v.id, v.type, v.occurred_at, v.os_user, v.seat, v.clauses, v.data_json

    for index, (item, got) in enumerate(zip(items, fast, strict=True)):
        assert stored(got) == stored(validate_exactly(item, index))
    items[0]["occurred_at"] = "2025-03-01T08:00:00+06:00"
    assert validate_batch(items)[0].occurred_at.isoformat() == "2025-03-01T02:00:00+00:00"  # kept in UTC
    mixed = validate_batch([items[0], {"id": "nope", "type": "web.report"}, 5, items[2]])
    assert mixed[0].id == items[0]["id"] and mixed[3].id == items[2]["id"]
    assert "event #1 (web.report)" in mixed[1] and mixed[2] == "event #2 is not a JSON object"
