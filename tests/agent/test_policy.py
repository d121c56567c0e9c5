"""Policy bundles on the agent: verification, last good bundle, SSE parsing, fetch with ETag."""

from __future__ import annotations

import hashlib
import json

import pytest

from agent.policy import PolicyError, PolicyManager, parse_sse, verify_bundle
from agent.server_client import ServerClient
from policy_server.protocol import Ban, PolicyBundle
from tests.agent.conftest import json_answer


def _raw(bundle: PolicyBundle) -> dict:
    return bundle.sealed().model_dump(mode="json")


def test_verify_accepts_sealed_and_refuses_tampered() -> None:
    raw = _raw(PolicyBundle(version=2, school="S"))
    assert verify_bundle(raw).version == 2
    raw["school"] = "Other"
    with pytest.raises(PolicyError, match="does not match"):
        verify_bundle(raw)
    with pytest.raises(PolicyError, match="no content_hash"):
        verify_bundle(PolicyBundle(version=1).model_dump(mode="json"))
    with pytest.raises(PolicyError, match="protocol"):
        verify_bundle({"version": "many", "content_hash": "x"})
    with pytest.raises(PolicyError, match="JSON object"):
        verify_bundle([1, 2])


def test_verify_tolerates_fields_this_agent_knows_but_the_server_did_not_send() -> None:
    raw = _raw(PolicyBundle(version=5))
    del raw["network"]  # an older server without this section: hash is over what it sent
    body = {k: v for k, v in raw.items() if k not in ("content_hash", "issued_at")}
    import hashlib
    raw["content_hash"] = hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    assert verify_bundle(raw).version == 5


def test_parse_sse() -> None:
    lines = ["retry: 2000", "", ": keepalive", "", "event: policy", 'data: {"version": 1,',
             'data: "content_hash": "h"}', "", "data:x", ""]
    assert list(parse_sse(iter(lines))) == ['{"version": 1,\n"content_hash": "h"}', "x"]


def test_manager_keeps_last_good_and_refuses_bad(state) -> None:
    applied: list[int] = []
    manager = PolicyManager(state, on_apply=lambda b: applied.append(b.version))
    assert manager.current is None
    good = _raw(PolicyBundle(version=1, bans=[]))
    assert manager.apply_raw(good) is True
    assert manager.apply_raw(good) is False  # same hash: nothing to do
    bad = dict(_raw(PolicyBundle(version=2)), school="tampered")
    with pytest.raises(PolicyError):
        manager.apply_raw(bad)
    assert applied == [1] and manager.version == 1
    # a restart (or an offline start) finds the last good bundle on disk
    assert PolicyManager(state, on_apply=lambda b: None).version == 1


def test_fetch_with_etag(state, http_endpoint) -> None:
    bundle = PolicyBundle(version=3, bans=[Ban(id="b1", seat="s1", until="2030-01-01T00:00:00Z")]).sealed()
    calls: list[str | None] = []

    def answer(method, path, headers, body):
        assert path == "/api/v1/policy"
        calls.append(headers.get("if-none-match"))
        if headers.get("if-none-match") == '"v3"':
            return 304, {"ETag": '"v3"'}, b""
        return json_answer(200, bundle.model_dump(mode="json"), {"ETag": '"v3"'})

    http_endpoint.handler = answer
    applied: list[PolicyBundle] = []
    manager = PolicyManager(state, on_apply=applied.append)
    client = ServerClient(http_endpoint.url, token="t", sha256=None)
    assert manager.fetch(client) is True
    assert manager.fetch(client) is False
    assert calls == [None, '"v3"']
    assert applied[0].bans[0].seat == "s1"
    assert json.loads(state.paths.policy.read_text())["content_hash"] == bundle.content_hash


def test_fetch_error_keeps_bundle(state, http_endpoint) -> None:
    manager = PolicyManager(state, on_apply=lambda b: None)
    manager.apply_raw(_raw(PolicyBundle(version=1)))
    http_endpoint.handler = lambda *a: json_answer(500, {"detail": "boom"})
    assert manager.try_fetch(ServerClient(http_endpoint.url, token="t", sha256=None)) is False
    assert "boom" in manager.last_error and manager.version == 1


def test_an_older_agent_accepts_a_bundle_from_a_newer_server():
    """A school upgrades its server first: new sections and fields must not make every
    workstation refuse the policy (forward compatibility of the bundle)."""
    bundle = PolicyBundle(version=7).sealed().model_dump(mode="json")
    bundle["usb"]["quarantine_new_devices"] = True  # a field this agent does not know
    bundle["printing"] = {"max_pages": 20}  # a whole section this agent does not know
    body = {k: v for k, v in bundle.items() if k not in ("content_hash", "issued_at")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    bundle["content_hash"] = hashlib.sha256(canonical.encode()).hexdigest()  # as the newer server seals it

    applied = verify_bundle(bundle)
    assert applied.version == 7
    assert not hasattr(applied, "printing")



class _CountingClient:
    """Stands in for the server only to count GETs: the pushed bundle must need none."""

    def __init__(self, answer: dict) -> None:
        self.answer, self.gets = answer, 0

    def get_policy(self, etag):
        from email.message import Message

        from agent.server_client import Response

        self.gets += 1
        headers = Message()
        headers["ETag"] = '"x"'
        return Response(200, "OK", headers, json.dumps(self.answer).encode())


def test_a_push_with_the_bundle_applies_without_a_request(state) -> None:
    from policy_server.protocol import PolicyPush

    applied: list[int] = []
    manager = PolicyManager(state, on_apply=lambda b: applied.append(b.version))
    raw = _raw(PolicyBundle(version=3, school="S"))
    client = _CountingClient(raw)
    push = PolicyPush(version=3, content_hash=raw["content_hash"], bundle=raw)
    manager._on_push(push.model_dump_json(), client)
    assert applied == [3] and client.gets == 0
    # a damaged pushed bundle is not applied: the agent fetches the version instead
    newer = _raw(PolicyBundle(version=4, school="S"))
    damaged = dict(newer, school="tampered")
    client = _CountingClient(newer)
    push = PolicyPush(version=4, content_hash=newer["content_hash"], bundle=damaged)
    manager._on_push(push.model_dump_json(), client)
    assert applied == [3, 4] and client.gets == 1 and manager.current.school == "S"
    # a bare notice (an older server, or a bundle too large to inline) still fetches
    newest = _raw(PolicyBundle(version=5))
    client = _CountingClient(newest)
    manager._on_push(PolicyPush(version=5, content_hash=newest["content_hash"]).model_dump_json(), client)
    assert applied == [3, 4, 5] and client.gets == 1
