"""The root side over its real Unix socket: timeouts by group and ISUO state,
reports turned into events, bad messages refused, peer identity enforced."""

from __future__ import annotations

import os
import pwd

import pytest

from agent.idle.wire import WireError, notify_isuo, request
from policy_server.protocol import Group, GroupKind, IdleSection, PolicyBundle


def poll(collector) -> dict:
    return request({"op": "poll", "session": "c1"}, socket_path=collector.socket_path)["policy"]


def test_poll_gives_the_timeout_of_the_users_group(idle_collector):
    assert poll(idle_collector)["timeout_s"] == 600  # root is in no group: the default group, student
    idle_collector.on_policy(PolicyBundle(
        groups=[Group(name="student"), Group(name="teacher", kind=GroupKind.teacher, os_users=["root"])],
        idle=IdleSection(timeouts_s={"student": 600, "teacher": 900})))
    assert poll(idle_collector)["timeout_s"] == 900


def test_isuo_messages_shorten_the_timeout_and_request_a_lock(idle_collector):
    poll(idle_collector)  # a helper is running for root
    notify_isuo("root", "start", socket_path=idle_collector.socket_path)
    assert poll(idle_collector) == {"timeout_s": 120, "reason": "isuo_idle", "lock_request": None}
    notify_isuo("root", "end", socket_path=idle_collector.socket_path)
    during = poll(idle_collector)
    assert during["lock_request"] and during["timeout_s"] == 120
    request({"op": "locked", "session": "c1", "idle_s": 3, "timeout_s": 120, "reason": "isuo_end",
             "request_id": during["lock_request"]}, socket_path=idle_collector.socket_path)
    assert poll(idle_collector) == {"timeout_s": 600, "reason": "idle", "lock_request": None}
    [event] = idle_collector.sink.of_type("idle.locked")
    assert event.data["reason"] == "isuo_end"
    assert idle_collector.sink.of_type("idle.lock_failed") == []


def test_isuo_end_with_no_helper_running_is_a_lock_failure(idle_collector):
    idle_collector.isuo_event("aigul", "start")
    idle_collector.isuo_event("aigul", "end")
    [event] = idle_collector.sink.of_type("idle.lock_failed")
    assert event.data["reason"] == "no_helper" and event.subject.os_user == "aigul"


@pytest.mark.parametrize("message, problem", [
    ({"op": "dance"}, "unknown op"),
    ({"op": "isuo", "user": "x", "state": "maybe"}, "'start' or 'end'"),
    ({"op": "isuo", "state": "start"}, "OS user name"),
    ({"op": "locked", "session": "c1"}, "bad 'locked' message"),
    ({"op": "locked", "idle_s": "lots", "timeout_s": 5}, "bad 'locked' message"),
])
def test_bad_messages_are_refused_with_a_reason_and_store_nothing(idle_collector, message, problem):
    with pytest.raises(WireError, match=problem):
        request(message, socket_path=idle_collector.socket_path)
    assert idle_collector.sink.events == []


def test_not_json_is_refused(idle_collector):
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(idle_collector.socket_path))
        sock.sendall(b"hello\n")
        assert b"not a JSON line" in sock.recv(4096)


def test_missing_agent_gives_a_clear_error(tmp_path):
    with pytest.raises(WireError, match="kalkan-agent service running"):
        request({"op": "poll"}, socket_path=tmp_path / "none.sock")


@pytest.mark.root
def test_identity_comes_from_the_socket_not_the_message(idle_collector):
    """An ordinary user's report is filed under that user, and it may not fake ISUO messages."""
    nobody = pwd.getpwnam("nobody")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child becomes `nobody` and talks to the real socket
        code = 1
        try:
            os.close(read_fd)
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            p = idle_collector.socket_path
            request({"op": "lock_failed", "error": "x", "session": "c9"}, socket_path=p)
            try:
                request({"op": "isuo", "user": "root", "state": "end"}, socket_path=p)
            except WireError as exc:
                os.write(write_fd, str(exc).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        said = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "only the agent or the proxy" in said
    [event] = idle_collector.sink.of_type("idle.lock_failed")
    assert event.subject.os_user == "nobody"
    assert idle_collector.sink.of_type("idle.locked") == []


def test_health_counts_helpers(idle_collector):
    assert idle_collector.health().detail.startswith("0 session helper")
    poll(idle_collector)
    assert idle_collector.health().state == "ok"
    assert idle_collector.health().detail.startswith("1 session helper")
