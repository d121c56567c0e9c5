"""The pure core of idle locking: which timeout applies, and when to lock.

Nothing here reads a clock, a socket or the desktop: callers pass `now` and the
idle time in, so every rule below is tested exhaustively without waiting.

Timeouts (000 §6.8): the group's timeout normally; during an ISUO session and after
it, until the session has been locked once, the shorter `isuo_timeout_s`.  When an
ISUO session ends and the policy says `lock_on_isuo_end`, the root side issues a
one-off *lock request*; the helper carries it out once, whatever the idle time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

LockReason = Literal["idle", "isuo_end", "isuo_idle"]


@dataclass(frozen=True)
class IsuoState:
    """One OS user's ISUO state as the root side knows it."""

    active: bool = False
    # True from the end of an ISUO session until the user's session is next locked
    tainted: bool = False
    # a lock request id the helper must carry out once (set when a session ends)
    lock_request: str | None = None


def isuo_started(state: IsuoState) -> IsuoState:
    return replace(state, active=True, tainted=True)


def isuo_ended(state: IsuoState, *, request_id: str, lock_on_end: bool) -> IsuoState:
    return replace(state, active=False, tainted=True, lock_request=request_id if lock_on_end else None)


def session_locked(state: IsuoState, *, request_id: str | None) -> IsuoState:
    """The helper reported a lock: the after-ISUO shorter timeout ends, and the lock
    request it carried out (if any) is done.  An ISUO session still open keeps the
    short timeout."""
    lock_request = None if request_id == state.lock_request else state.lock_request
    return replace(state, tainted=state.active, lock_request=lock_request)


@dataclass(frozen=True)
class SessionPolicy:
    """What the root side tells one helper."""

    timeout_s: float
    reason: LockReason = "idle"  # the reason a lock at this timeout will be reported with
    lock_request: str | None = None
    # The lesson's teacher locked this screen ("eyes on me", lock with a message): {"id", "message"}.
    # Held while it is set; when it goes (unlocked, lesson over) the helper unlocks.
    lesson_lock: dict | None = None
    # The countdown before such a lock: {"id", "message", "until"} (a banner, no grab).
    lesson_warning: dict | None = None

    def to_wire(self) -> dict:
        wire = {"timeout_s": self.timeout_s, "reason": self.reason, "lock_request": self.lock_request}
        if self.lesson_lock is not None:
            wire["lesson_lock"] = self.lesson_lock
        if self.lesson_warning is not None:
            wire["lesson_warning"] = self.lesson_warning
        return wire

    @classmethod
    def from_wire(cls, data: dict) -> SessionPolicy:
        timeout = float(data["timeout_s"])
        if timeout <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout}")
        reason = data.get("reason", "idle")
        if reason not in ("idle", "isuo_end", "isuo_idle"):
            raise ValueError(f"unknown lock reason {reason!r}")
        lesson_lock = data.get("lesson_lock")
        if lesson_lock is not None and not (isinstance(lesson_lock, dict) and lesson_lock.get("id")):
            raise ValueError("lesson_lock must be an object with an id")
        warning = data.get("lesson_warning")
        if warning is not None and not (isinstance(warning, dict) and warning.get("id")):
            raise ValueError("lesson_warning must be an object with an id")
        return cls(timeout_s=timeout, reason=reason, lock_request=data.get("lock_request"),
                   lesson_lock=lesson_lock, lesson_warning=warning)


def lesson_lock_for(lessons, *, room: str | None, seat: str | None, now) -> dict | None:
    """The teacher's lock for this seat now, from the bundle's lessons (pure).  A lesson's lock
    ends with the lesson even when the server cannot be reached (its `ends_at` is in the bundle)."""
    for lesson in lessons:
        if room is None or lesson.room != room or not (lesson.starts_at <= now < lesson.ends_at):
            continue
        eyes = getattr(lesson, "eyes_until", None)
        if eyes is not None and now < eyes:
            return {"id": f"{lesson.id}:eyes:{eyes.isoformat()}", "message": lesson.lock_message,
                    "kind": "eyes", "until": min(eyes, lesson.ends_at).isoformat()}
        seats = getattr(lesson, "locked_seats", []) or []
        lock_at = getattr(lesson, "lock_at", None)
        if ("*" in seats or (seat is not None and seat in seats)) and (lock_at is None or lock_at <= now):
            return {"id": f"{lesson.id}:lock:{lock_at.isoformat() if lock_at else ''}",
                    "message": lesson.lock_message, "kind": "lock", "until": lesson.ends_at.isoformat()}
    return None


def lesson_warning_for(lessons, *, room: str | None, seat: str | None, now) -> dict | None:
    """The countdown before the teacher's lock ("lock in 30 s") for this seat, if one runs (pure):
    {"id", "message", "until": the moment the lock begins}."""
    for lesson in lessons:
        if room is None or lesson.room != room or not (lesson.starts_at <= now < lesson.ends_at):
            continue
        seats = getattr(lesson, "locked_seats", []) or []
        lock_at = getattr(lesson, "lock_at", None)
        if ("*" in seats or (seat is not None and seat in seats)) and lock_at is not None and now < lock_at:
            return {"id": f"{lesson.id}:warn:{lock_at.isoformat()}", "message": lesson.lock_message,
                    "until": min(lock_at, lesson.ends_at).isoformat()}
    return None


def policy_for(*, group_timeout_s: float, isuo_timeout_s: float, isuo: IsuoState) -> SessionPolicy:
    """The timeout for one user: the group's, or the shorter ISUO one while it applies."""
    if isuo.active or isuo.tainted:
        return SessionPolicy(
            timeout_s=min(group_timeout_s, isuo_timeout_s), reason="isuo_idle", lock_request=isuo.lock_request
        )
    return SessionPolicy(timeout_s=group_timeout_s, reason="idle", lock_request=isuo.lock_request)


@dataclass(frozen=True)
class LockDecision:
    lock: bool
    reason: LockReason = "idle"
    request_id: str | None = None


@dataclass
class IdleTracker:
    """The helper's memory between two idle readings.

    After a lock (or a failed attempt) it does not try again until the user has been
    active, i.e. the idle time fell back under the timeout; otherwise a locked screen
    with a growing idle time would be locked every second.
    """

    armed: bool = True
    done_requests: set[str] | None = None

    def step(self, idle_s: float, policy: SessionPolicy) -> LockDecision:
        done = self.done_requests if self.done_requests is not None else set()
        self.done_requests = done
        if policy.lock_request and policy.lock_request not in done:
            done.add(policy.lock_request)
            self.armed = False
            return LockDecision(lock=True, reason="isuo_end", request_id=policy.lock_request)
        if idle_s < policy.timeout_s:
            self.armed = True
            return LockDecision(lock=False)
        if not self.armed:
            return LockDecision(lock=False)
        self.armed = False
        return LockDecision(lock=True, reason=policy.reason)
