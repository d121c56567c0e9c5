"""Lesson-time activity: what reaches the lesson's teacher, and only while a lesson runs.

Two ways in, both only for a lesson running in the agent's room:

* the events an agent sends anyway (`web.blocked`, `web.unblock_request`, `web.alert`) are
  copied to the lesson as blocked attempts, requests and alerts (`record_from_events`, called
  by the ingest in the batch's transaction);
* the agent's lesson channel (`POST /api/v1/lessons/activity`): the site a seat has open now
  (domain, and the page title only where the proxy intercepts), hand-raise.  Sent only while
  the bundle has a lesson for the room (`report_activity`), refused otherwise.

Rows live until the lesson's summary is made (`summary.summarise` deletes them: 001 §2.15)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from policy_server.db.models import Workstation, utcnow
from policy_server.lessons.models import Lesson, LessonActivity
from policy_server.lessons.service import running_in_room

EVENT_KINDS = {"web.blocked": "blocked", "web.unblock_request": "request", "web.alert": "alert",
               "lesson.activity": ""}
LESSON_ONLY_TYPES = frozenset({"lesson.activity"})  # kept with the lesson only, never as events
AGENT_KINDS = ("open", "hand", "request")


def host_of(url: str) -> str:
    try:
        return (urlsplit(url if "://" in url else f"http://{url}").hostname or "")[:253]
    except ValueError:
        return ""


def record_from_events(db: Session, agent: Workstation, accepted) -> int:
    """Copy the accepted events of a running lesson's room to the lesson (ingest hook)."""
    wanted = [v for v in accepted if v.type in EVENT_KINDS]
    if not wanted or agent.room_id is None:
        return 0
    lesson = running_in_room(db, agent.room_id, utcnow())
    if lesson is None:
        return 0
    for v in wanted:
        data = v.data or {}
        detail: dict = {}
        if v.type == "web.alert":
            detail = {"lists": list(data.get("lists", []))[:5]}
        elif v.type == "web.blocked":
            detail = {"rule": str(data.get("rule", ""))[:64]}
        elif v.type == "web.unblock_request":
            detail = {"url": str(data.get("url", ""))[:300], "comment": str(data.get("comment") or "")[:300]}
        elif v.type == "lesson.activity" and data.get("title"):
            detail = {"title": str(data["title"])[:200]}
        kind = EVENT_KINDS[v.type] or str(data.get("kind", "open"))
        db.add(LessonActivity(lesson_id=lesson.id, at=min(v.occurred_at, utcnow()), seat=agent.seat,
                              os_user=v.os_user, kind=kind,
                              host=str(data.get("host") or host_of(str(data.get("url", "")))),
                              detail=detail))
    return len(wanted)


def record_from_agent(db: Session, agent: Workstation, items: list[dict], *,
                      now: datetime | None = None) -> Lesson | None:
    """The agent's lesson channel: None when no lesson runs in its room (nothing is kept)."""
    now = now or utcnow()
    if agent.room_id is None:
        return None
    lesson = running_in_room(db, agent.room_id, now)
    if lesson is None:
        return None
    for item in items:
        kind = item["kind"]
        detail = {}
        if item.get("title") and kind == "open":
            detail["title"] = item["title"][:200]
        if item.get("url") and kind == "request":
            detail["url"] = item["url"][:300]
        db.add(LessonActivity(lesson_id=lesson.id, at=min(item.get("at") or now, now),
                              seat=agent.seat, os_user=item.get("os_user"), kind=kind,
                              host=(item.get("host") or host_of(item.get("url") or ""))[:253], detail=detail))
    return lesson
