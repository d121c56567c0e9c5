"""The uplink against a scripted local HTTP endpoint: what it deletes, moves aside, retries."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from agent.outbox import Outbox, OutboxSink
from agent.server_client import ServerClient
from agent.uplink import Backoff, Uplink, UplinkAuthError, UplinkError
from tests.agent.conftest import json_answer


@pytest.fixture
def outbox(tmp_path: Path):
    with Outbox(tmp_path / "outbox.sqlite") as box:
        yield box


def _fill(outbox: Outbox, n: int) -> list[str]:
    sink = OutboxSink(outbox)
    return [sink.emit("web.report", {"url": f"http://x.test/{i}"}) for i in range(n)]


def _ids(body: bytes) -> list[str]:
    return [e["id"] for e in json.loads(body)["events"]]


def test_deletes_only_accepted_and_duplicates(outbox, http_endpoint) -> None:
    ids = _fill(outbox, 6)

    def answer(method, path, headers, body):
        sent = _ids(body)
        assert path == "/api/v1/events" and headers["authorization"] == "Bearer tok"
        # accept two, two duplicates, reject one, say nothing of the last
        return json_answer(200, {"accepted": sent[:2], "duplicates": sent[2:4],
                                 "rejected": [{"id": sent[4], "error": "data.url: too long"}]})

    http_endpoint.handler = answer
    uplink = Uplink(outbox, ServerClient(http_endpoint.url, token="tok", sha256=None))
    assert uplink.send_once() == 5
    assert [e.id for e in outbox.peek_batch(10)] == [ids[5]]  # unmentioned: kept for the next try
    [rejected] = outbox.rejected()
    assert rejected.id == ids[4] and "too long" in rejected.error
    assert uplink.status.reachable and uplink.status.sent == 4 and uplink.status.rejected == 1


def test_batch_body_is_valid_json_of_the_stored_envelopes(outbox, http_endpoint) -> None:
    ids = _fill(outbox, 3)
    seen: list[dict] = []

    def answer(method, path, headers, body):
        seen.extend(json.loads(body)["events"])
        return json_answer(200, {"accepted": _ids(body)})

    http_endpoint.handler = answer
    Uplink(outbox, ServerClient(http_endpoint.url, token="t", sha256=None)).send_once()
    assert [e["id"] for e in seen] == ids and seen[0]["type"] == "web.report"
    assert outbox.depth() == 0


def test_413_halves_the_batch_then_single_event_is_moved_aside(outbox, http_endpoint) -> None:
    ids = _fill(outbox, 8)
    poison = ids[3]

    def answer(method, path, headers, body):
        sent = _ids(body)
        if poison in sent:
            return json_answer(413, {"detail": "batch too large"})
        return json_answer(200, {"accepted": sent})

    http_endpoint.handler = answer
    uplink = Uplink(outbox, ServerClient(http_endpoint.url, token="t", sha256=None))
    for _ in range(20):
        uplink.send_once()
        if outbox.depth() == 0:
            break
    assert outbox.depth() == 0
    assert [r.id for r in outbox.rejected()] == [poison]
    assert "413" in outbox.rejected()[0].error


def test_server_errors_raise_for_backoff_and_keep_events(outbox, http_endpoint) -> None:
    _fill(outbox, 2)
    http_endpoint.handler = lambda *a: json_answer(503, {"detail": "database is restarting"})
    uplink = Uplink(outbox, ServerClient(http_endpoint.url, token="t", sha256=None))
    with pytest.raises(UplinkError, match="database is restarting"):
        uplink.send_once()
    http_endpoint.handler = lambda *a: json_answer(401, {"detail": "token revoked"})
    with pytest.raises(UplinkAuthError, match="enrol it again"):
        uplink.send_once()
    assert uplink.status.token_refused
    assert outbox.depth() == 2


def test_unreachable_server_is_an_uplink_error(outbox) -> None:
    _fill(outbox, 1)
    uplink = Uplink(outbox, ServerClient("http://127.0.0.1:9", token="t", sha256=None))
    with pytest.raises(UplinkError, match="cannot reach"):
        uplink.send_once()
    assert outbox.depth() == 1


def test_backoff_grows_with_jitter_and_resets() -> None:
    backoff = Backoff(base_s=1.0, cap_s=60.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(10)]
    for n, delay in enumerate(delays):
        ceiling = min(60.0, 2.0 ** n)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jittered, not identical at the cap
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_run_loop_sends_new_events_promptly(outbox, http_endpoint) -> None:
    received: list[str] = []
    got = threading.Event()

    def answer(method, path, headers, body):
        received.extend(_ids(body))
        got.set()
        return json_answer(200, {"accepted": _ids(body)})

    http_endpoint.handler = answer
    uplink = Uplink(outbox, ServerClient(http_endpoint.url, token="t", sha256=None), idle_poll_s=30)
    sink = OutboxSink(outbox, on_added=uplink.wake.set)
    stop = threading.Event()
    thread = threading.Thread(target=uplink.run, args=(stop,))
    thread.start()
    try:
        event_id = sink.emit("web.report", {"url": "http://x.test/"})
        assert got.wait(10), "the wake-up did not make the uplink send"
        assert received == [event_id]
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def _run_until(uplink: Uplink, outbox: Outbox, done, rounds: int = 60) -> list[UplinkError]:
    """send_once as the run loop would, collecting the errors instead of sleeping."""
    errors = []
    for _ in range(rounds):
        try:
            uplink.send_once()
        except UplinkError as exc:
            errors.append(exc)
        if done():
            break
    return errors


def test_a_batch_the_server_keeps_failing_is_split_and_the_poison_moved_aside(outbox, http_endpoint) -> None:
    ids = _fill(outbox, 20)
    poison = ids[13]
    sizes: list[int] = []

    def answer(method, path, headers, body):
        sent = _ids(body)
        sizes.append(len(sent))
        if poison in sent:
            return json_answer(500, {"detail": "Internal Server Error"})
        return json_answer(200, {"accepted": sent})

    http_endpoint.handler = answer
    uplink = Uplink(outbox, ServerClient(http_endpoint.url, token="t", sha256=None))
    errors = _run_until(uplink, outbox, lambda: outbox.depth() == 0)
    assert outbox.depth() == 0
    [rejected] = outbox.rejected()
    assert rejected.id == poison and "failed on this event alone (500" in rejected.error
    assert errors and all(e.answered and e.retry_after is None for e in errors)
    assert sizes[:2] == [20, 20]  # a 500 once is retried as it is; the second time it is split
    assert uplink.batch_events <= 20 and uplink.status.rejected == 1


def test_a_server_failing_on_everything_never_has_events_moved_aside(outbox, http_endpoint) -> None:
    _fill(outbox, 4)
    http_endpoint.handler = lambda *a: json_answer(500, {"detail": "Internal Server Error"})
    uplink = Uplink(outbox, ServerClient(http_endpoint.url, token="t", sha256=None))
    errors = _run_until(uplink, outbox, lambda: False, rounds=30)
    assert len(errors) >= 20 and outbox.depth() == 4 and outbox.rejected() == []
    assert any("fails on every batch" in str(e) for e in errors)


def test_503_is_waited_out_as_retry_after_says_and_never_split(outbox, http_endpoint) -> None:
    _fill(outbox, 5)
    http_endpoint.handler = lambda *a: json_answer(
        503, {"detail": "the database cannot store now", "code": "server.unavailable"},
        headers={"Retry-After": "7"})
    uplink = Uplink(outbox, ServerClient(http_endpoint.url, token="t", sha256=None))
    errors = _run_until(uplink, outbox, lambda: False, rounds=6)
    assert all(e.answered and e.retry_after == 7.0 for e in errors) and len(errors) == 6
    assert uplink.batch_events == 500 and outbox.depth() == 5 and outbox.rejected() == []


def test_backoff_is_capped_and_starts_again_when_the_server_answers_at_all(outbox, http_endpoint) -> None:
    _fill(outbox, 1)
    uplink = Uplink(outbox, ServerClient("http://127.0.0.1:9", token="t", sha256=None),
                    backoff=Backoff(rng=random.Random(3)))
    delays = []
    for _ in range(12):  # the server is down: the waits grow, never past 30 s
        with pytest.raises(UplinkError):
            uplink.send_once()
        delays.append(uplink.backoff.next_delay())
    assert max(delays) <= 30.0 and delays[-1] >= 15.0
    # it comes back answering 503 (still starting): an answer, so the next wait is short again
    http_endpoint.handler = lambda *a: json_answer(503, {"detail": "starting"})
    uplink.client = ServerClient(http_endpoint.url, token="t", sha256=None)
    with pytest.raises(UplinkError) as caught:
        uplink.send_once()
    assert caught.value.answered and uplink.status.reachable
    assert uplink.backoff.next_delay() <= 1.0
