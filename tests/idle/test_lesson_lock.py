"""The teacher's lock reaches the screen through the real collector socket and the session
helper; it is lifted when the teacher unlocks and, without the server, when the lesson ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent.idle.core import lesson_lock_for
from agent.idle.helper import SessionHelper
from agent.platform.idle import FakeIdleSource, FakeLocker
from policy_server.protocol import Group, GroupKind, Lesson, PolicyBundle


def bundle(*, seats=("*",), lock_in_s: float = -1, ends_in_s: float = 600, eyes_s: float | None = None,
           room: str = "lab-1") -> PolicyBundle:
    now = datetime.now(UTC)
    lesson = Lesson(id="l1", room=room, teacher="aigul", starts_at=now - timedelta(minutes=5),
                    ends_at=now + timedelta(seconds=ends_in_s), locked_seats=list(seats),
                    lock_message="Look at the board", lock_at=now + timedelta(seconds=lock_in_s),
                    eyes_until=now + timedelta(seconds=eyes_s) if eyes_s else None)
    return PolicyBundle(lessons=[lesson])


def test_lock_for_seat_room_and_countdown():
    now = datetime.now(UTC)
    assert lesson_lock_for(bundle().lessons, room="lab-1", seat="lab1-07",
                           now=now)["message"] == "Look at the board"
    assert lesson_lock_for(bundle(room="lab-2").lessons, room="lab-1", seat="lab1-07", now=now) is None
    assert lesson_lock_for(bundle(seats=("lab1-03",)).lessons, room="lab-1", seat="lab1-07", now=now) is None
    assert lesson_lock_for(bundle(seats=("lab1-07",)).lessons, room="lab-1", seat="lab1-07", now=now)
    assert lesson_lock_for(bundle(lock_in_s=30).lessons, room="lab-1", seat="s", now=now) is None  # countdown
    assert lesson_lock_for(bundle(seats=(), eyes_s=60).lessons, room="lab-1", seat="s", now=now)
    # the lesson is over: no lock, whatever the bundle still says (an agent cut off from the server)
    assert lesson_lock_for(bundle(ends_in_s=-1).lessons, room="lab-1", seat="s", now=now) is None


def test_helper_locks_and_unlocks_with_the_lesson(idle_collector):
    idle_collector.ctx.room = "lab-1"
    locker = FakeLocker()
    helper = SessionHelper(FakeIdleSource(0.0), locker, socket_path=idle_collector.socket_path, session="c1")
    helper.tick(0.0)
    assert locker.calls == 0
    idle_collector.on_policy(bundle())
    helper.tick(1.0)
    assert locker.locked and locker.calls == 1
    helper.tick(2.0)
    assert locker.calls == 1  # held, not locked again
    idle_collector.on_policy(bundle(seats=()))  # the teacher unlocked
    helper.tick(3.0)
    assert not locker.locked and locker.unlocks == 1
    idle_collector.on_policy(bundle(ends_in_s=1.5))
    helper.tick(4.0)
    assert locker.locked
    import time

    time.sleep(1.6)  # the lesson ends; no new bundle arrives
    helper.tick(5.0)
    assert not locker.locked


def test_teacher_screen_is_not_locked(idle_collector):
    idle_collector.ctx.room = "lab-1"
    b = bundle()
    b.groups = [Group(name="student"), Group(name="teacher", kind=GroupKind.teacher, os_users=["root"])]
    idle_collector.on_policy(b)
    locker = FakeLocker()
    helper = SessionHelper(FakeIdleSource(0.0), locker, socket_path=idle_collector.socket_path, session="c1")
    helper.tick(0.0)
    assert locker.calls == 0
