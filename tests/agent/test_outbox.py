"""The durable outbox: storage, bounded disk with priorities, drops, rejects, concurrency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.outbox import Outbox, OutboxError, OutboxSink
from policy_server.protocol import MAX_EVENT_BYTES, make_event

REPO = Path(__file__).resolve().parents[2]

USB = {"device": {"vendor_id": "0781", "product_id": "5567"}}


def heartbeat():
    return make_event("agent.heartbeat", {"agent_version": "test"})


def usb_blocked():
    return make_event("usb.blocked", USB)


def test_add_peek_remove_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    events = [make_event("web.report", {"url": f"http://example.test/{i}"}) for i in range(5)]
    with Outbox(path) as outbox:
        assert all(outbox.add(e) for e in events)
    with Outbox(path) as outbox:
        assert outbox.depth() == 5
        batch = outbox.peek_batch(3)
        assert [b.id for b in batch] == [str(e.id) for e in events[:3]]  # oldest first
        assert json.loads(batch[0].body)["data"]["url"] == "http://example.test/0"
        assert outbox.remove([b.id for b in batch]) == 3
        assert outbox.remove(["not-there"]) == 0
    with Outbox(path) as outbox:
        assert [b.id for b in outbox.peek_batch(10)] == [str(e.id) for e in events[3:]]
        assert outbox.size_bytes() == sum(len(b.body.encode()) for b in outbox.peek_batch(10))


def test_same_event_stored_once(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as outbox:
        event = heartbeat()
        outbox.add(event)
        outbox.add(event)
        assert outbox.depth() == 1


def test_peek_batch_respects_byte_limit_but_returns_at_least_one(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as outbox:
        for _ in range(10):
            outbox.add(heartbeat())
        one = max(len(b.body.encode()) for b in outbox.peek_batch(10))
        assert len(outbox.peek_batch(10, max_bytes=one * 3 + 1)) == 3
        assert len(outbox.peek_batch(10, max_bytes=1)) == 1


def test_full_outbox_drops_low_value_first_and_counts(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", max_bytes=MAX_EVENT_BYTES) as outbox:
        security = [usb_blocked() for _ in range(20)]
        for event in security:
            assert outbox.add(event)
        while not outbox.drop_totals():  # fill up with low-value events until the first drop
            outbox.add(heartbeat())
        depth_full = outbox.depth()
        # a security event pushes out heartbeats, never the other security events
        for _ in range(30):
            assert outbox.add(usb_blocked())
        kept = {b.id for b in outbox.peek_batch(1000, max_bytes=10**9)}
        assert {str(e.id) for e in security} <= kept
        assert outbox.size_bytes() <= MAX_EVENT_BYTES
        drops = outbox.drop_totals()
        assert drops["agent.heartbeat"] >= 30 and "usb.blocked" not in drops
        assert outbox.depth() <= depth_full


def test_low_value_event_is_dropped_itself_when_only_security_events_remain(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", max_bytes=MAX_EVENT_BYTES) as outbox:
        while True:
            before = outbox.depth()
            outbox.add(usb_blocked())
            if outbox.drop_totals():  # the first security drop: the outbox is full of them
                break
            assert outbox.depth() == before + 1
        ids_before = {b.id for b in outbox.peek_batch(1000, max_bytes=10**9)}
        assert outbox.add(heartbeat()) is False
        assert {b.id for b in outbox.peek_batch(1000, max_bytes=10**9)} == ids_before
        assert outbox.drop_totals()["agent.heartbeat"] == 1


def test_report_drops_makes_one_event_and_resets_pending(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", max_bytes=MAX_EVENT_BYTES) as outbox:
        while not outbox.drop_totals():
            outbox.add(heartbeat())
        for _ in range(5):
            outbox.add(usb_blocked())
        pending = outbox.pending_drops()
        reported = outbox.report_drops()
        assert reported == pending and reported["agent.heartbeat"] >= 6
        # only drops made to fit the report itself may be pending now
        assert set(outbox.pending_drops()) <= {"agent.heartbeat"}
        assert outbox.pending_drops().get("agent.heartbeat", 0) < reported["agent.heartbeat"]
        bodies = [json.loads(b.body) for b in outbox.peek_batch(1000, max_bytes=10**9)]
        dropped_events = [b for b in bodies if b["type"] == "agent.events_dropped"]
        assert len(dropped_events) == 1
        assert dropped_events[0]["data"]["counts"] == reported
        # totals keep counting for the heartbeat
        assert outbox.drop_totals()["agent.heartbeat"] >= reported["agent.heartbeat"]


def test_reject_moves_event_aside_with_reason(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as outbox:
        event = usb_blocked()
        outbox.add(event)
        assert outbox.reject(str(event.id), "data.device: field required")
        assert outbox.depth() == 0
        [record] = outbox.rejected()
        assert record.id == str(event.id) and record.type == "usb.blocked"
        assert "field required" in record.error
        assert outbox.rejected_count() == 1
        assert outbox.reject("unknown-id", "x") is False


def test_oversize_event_refused_at_source(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as outbox:
        event = make_event("web.report", {"url": "http://x.test/"})
        huge = event.model_copy(update={"data": {"url": "http://x.test/", "comment": "y" * MAX_EVENT_BYTES}})
        with pytest.raises(OutboxError, match="over the"):
            outbox.add(huge)
        with pytest.raises(OutboxError, match="EventEnvelope"):
            outbox.add({"type": "web.report"})  # type: ignore[arg-type]
        assert outbox.depth() == 0


def test_max_bytes_must_hold_one_event(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="smaller than one event"):
        Outbox(tmp_path / "o.sqlite", max_bytes=1000)


def test_sink_validates_at_the_source(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as outbox:
        woken = []
        sink = OutboxSink(outbox, on_added=lambda: woken.append(1))
        event_id = sink.emit("web.report", {"url": "http://bad.test/"})
        assert outbox.peek_batch(1)[0].id == event_id and woken == [1]
        with pytest.raises(ValidationError):
            sink.emit("usb.blocked", {"device": {"vendor_id": "XYZ"}})  # a collector bug
        with pytest.raises(OutboxError, match="unknown event type"):
            sink.emit("usb.exploded", {})
        assert outbox.depth() == 1
        stored = json.loads(outbox.peek_batch(1)[0].body)
        assert stored["clauses"] == ["000 §8.3", "001 §3.4"]


def test_many_threads_share_one_outbox(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as outbox:
        sink = OutboxSink(outbox)
        ids: list[str] = []
        lock = threading.Lock()

        def work() -> None:
            for _ in range(50):
                event_id = sink.emit("agent.heartbeat", {"agent_version": "t"})
                with lock:
                    ids.append(event_id)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = [b.id for b in outbox.peek_batch(1000, max_bytes=10**9)]
        assert sorted(stored) == sorted(ids) and len(set(stored)) == 400


WRITER = """
import sys
from agent.outbox import Outbox, OutboxSink
sink = OutboxSink(Outbox(sys.argv[1]))
for i in range(int(sys.argv[2])):
    print(sink.emit("web.report", {"url": f"http://p{sys.argv[3]}.test/{i}"}), flush=True)
"""


def _writer(path: Path, count: int, tag: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(count), tag], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)


def test_several_processes_write_the_same_outbox(tmp_path: Path) -> None:
    """The proxy (its own mitmdump process) writes to the agent's outbox."""
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as outbox:  # the agent holds it open meanwhile, and reads
        writers = [_writer(path, 100, str(n)) for n in range(3)]
        outputs = [w.communicate(timeout=120)[0].split() for w in writers]
        assert all(w.returncode == 0 for w in writers)
        written = [event_id for out in outputs for event_id in out]
        stored = [b.id for b in outbox.peek_batch(1000, max_bytes=10**9)]
        assert len(written) == 300 and sorted(stored) == sorted(written)


def test_event_acknowledged_by_add_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    writer = _writer(path, 100_000, "k")
    seen = [writer.stdout.readline().strip() for _ in range(200)]
    os.kill(writer.pid, signal.SIGKILL)
    rest = writer.communicate()[0].split()  # ids printed before the kill landed
    writer.wait()
    with Outbox(path) as outbox:
        all_stored = set()
        while True:
            batch = outbox.peek_batch(1000, max_bytes=10**9)
            if not batch:
                break
            all_stored |= {b.id for b in batch}
            outbox.remove([b.id for b in batch])
    assert set(seen + rest) <= all_stored


def test_open_sink_adds_the_enrolled_seat(tmp_path: Path) -> None:
    from agent.outbox import open_sink
    from agent.state import AgentConfig, AgentState, StatePaths
    from policy_server.protocol import Subject

    state = AgentState(StatePaths(tmp_path / "state").ensure())
    state.save_config(AgentConfig(server_url="https://s", agent_id="a", server_sha256="ab" * 32,
                                  seat="lab1-07"))
    sink = open_sink(state.paths.root)
    try:
        sink.emit("web.report", {"url": "http://a.test/"})
        sink.emit("web.report", {"url": "http://b.test/"}, subject=Subject(os_user="student1"))
        subjects = [json.loads(b.body)["subject"] for b in sink.outbox.peek_batch(10)]
    finally:
        sink.outbox.close()
    assert subjects == [{"os_user": None, "seat": "lab1-07"}, {"os_user": "student1", "seat": "lab1-07"}]
