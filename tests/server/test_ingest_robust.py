"""No 5xx from an events body: each bad event refused alone with its reason, the rest of its
batch stored (SQLite and PostgreSQL, through the `api` fixture)."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from sqlalchemy import func, select

from policy_server import protocol
from policy_server.db.models import Event
from policy_server.events import ingest


def _event(kind: str = "web.report", data: dict | None = None, at: str = "2025-03-01T08:00:00+06:00",
           **extra) -> dict:
    return {"id": str(uuid.uuid4()), "type": kind, "occurred_at": at,
            "data": {"url": "http://fine.example/"} if data is None else data, **extra}


def _heartbeat(**data) -> dict:
    return _event("agent.heartbeat", {"agent_version": "1.0", **data})


def _stored(api) -> set[str]:
    with api.db() as db:
        return set(db.scalars(select(Event.id)))


def _post_raw(api, auth: dict, body: bytes):
    return api.client.post("/api/v1/events", content=body,
                           headers={**auth, "content-type": "application/json"})


DEEP = "[" * 300 + "]" * 300
BAD_EVENTS = {
    # name: (event as JSON text with PLACE filled in, words the rejection must contain)
    "year 1 with an offset": (_event(at="0001-01-01T00:00:00+01:00"), "outside the supported range"),
    "year 9999 with an offset": (_event(at="9999-12-31T23:59:59-01:00"), "outside the supported range"),
    "web.report at year 9999": (_event(at="9999-12-31T23:00:00Z"), "check the workstation's clock"),
    "isuo start at year 9999": (_event("isuo.session", {"host": "isuo.edu.kg", "state": "start",
                                                         "started_at": "9999-12-31T23:59:59-01:00"}),
                                "started_at: the time"),
    "usage period at year 1": (_event("web.usage", {"period_start": "0001-01-01T00:00:00+05:00",
                                                    "period_end": "2025-01-01T00:00:00Z", "counts": {}}),
                               "period_start"),
    "policy version past INTEGER": (_heartbeat(policy_version=2**31), "policy_version"),
    "protocol version past INTEGER": (_heartbeat(protocol_version=2**40), "protocol_version"),
    "integer past 64 bits": (_heartbeat(outbox_depth=2**70), "outbox_depth"),
    "escaped lone surrogate": (_event(data={"url": "http://x.example/\ud800"}), "lone surrogate"),
    "lone surrogate in a user": (_event(subject={"os_user": "\udfff"}), "lone surrogate"),
    "NUL in a URL": (_event(data={"url": "http://x.example/\u0000"}), "NUL"),
    "NUL in the seat": (_event(subject={"seat": "a\u0000"}), "NUL"),
    "nested 300 deep": (_event(data={"url": "http://x.example/", "extra": "PLACE"}), "nested deeper"),
}


@pytest.mark.parametrize("name", list(BAD_EVENTS))
def test_each_bad_event_is_refused_alone_with_its_reason(api, name):
    _, auth = api.enroll()
    bad, words = BAD_EVENTS[name]
    good = [_event() for _ in range(3)]
    body = json.dumps({"events": [good[0], bad, *good[1:]]}).replace('"PLACE"', DEEP).encode()
    r = _post_raw(api, auth, body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["accepted"] == [e["id"] for e in good]
    assert [x["id"] for x in answer["rejected"]] == [bad["id"]]
    assert words in answer["rejected"][0]["error"], answer["rejected"][0]["error"]
    assert _stored(api) == {e["id"] for e in good}


def test_a_body_nested_too_deep_is_a_400_naming_the_limit(api):
    _, auth = api.enroll()
    for deep in ("[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000):
        for body in (b'{"events": [' + deep.encode() + b"]}",
                     # the same with a lone surrogate, which sends the parse down json's path
                     b'{"events": ["\\ud800", ' + deep.encode() + b"]}"):
            r = _post_raw(api, auth, body)
            assert r.status_code == 400, r.text
            assert f"deeper than {protocol.MAX_JSON_DEPTH} levels" in r.json()["detail"]
    assert _stored(api) == set()


def test_an_event_that_still_fails_the_server_is_refused_alone(api, monkeypatch, caplog):
    """Whatever validation misses (here: a rule that raises on one URL, standing for a bug
    not found yet) costs that event only; the rest of the batch is stored once."""
    real = ingest.process_events

    def failing_rules(db, inputs):
        if any(i.data.get("url") == "http://poison.example/" for i in inputs):
            raise OverflowError("date value out of range")
        return real(db, inputs)

    monkeypatch.setattr(ingest, "process_events", failing_rules)
    _, auth = api.enroll()
    batch = [_event() for _ in range(40)]
    poison = [7, 31]
    for i in poison:
        batch[i]["data"] = {"url": "http://poison.example/"}
    with caplog.at_level(logging.WARNING, logger="kalkan.server.ingest"):
        r = _post_raw(api, auth, json.dumps({"events": batch}).encode())
    assert r.status_code == 200, r.text
    answer = r.json()
    good = {e["id"] for i, e in enumerate(batch) if i not in poison}
    assert set(answer["accepted"]) == good and len(answer["accepted"]) == len(good)
    assert {x["id"] for x in answer["rejected"]} == {batch[i]["id"] for i in poison}
    assert all("OverflowError: date value out of range" in x["error"] for x in answer["rejected"])
    assert _stored(api) == good
    refusals = [r for r in caplog.records if "refused alone" in r.getMessage()]
    assert len(refusals) == 2 and not any(r.exc_info for r in caplog.records)
    # the agent sends the same batch again: the stored ones are duplicates, the poison refused again
    again = _post_raw(api, auth, json.dumps({"events": batch}).encode()).json()
    assert set(again["duplicates"]) == good and again["accepted"] == []
    with api.db() as db:
        assert db.scalar(select(func.count(Event.id))) == len(good)
