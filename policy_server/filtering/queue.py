"""The report and unblock queue (000 §8.3, 001 §3.4).

Students' `web.report` ("this page should be blocked") and `web.unblock_request` ("this page
was blocked but I need it") events are folded into one open row per canonical URL
(`FilterRequest`): the seats, the comments, when, the rule that blocked it.  The responsible
person decides, one row or many at once:

* ``block`` for the school or a group → the entry goes on the school's / group's block-list;
* ``allow`` for a seat, a group or the school, optionally until a time → the entry goes on
  that allow-list (an expired allow is taken off again by the scheduler, `expire_job`);
* ``reject`` with a reason → no policy change.

A block or allow is one `amend_policy` (versioned, audited, pushed to every seat at once).
Each seat's report page shows what became of the reports sent from it (`seat_statuses`,
asked by the agent with its token — no student login).

`decide` is the one entry point for decisions.  During a lesson, unblock requests go to the
lesson's teacher first: `policy_server.lessons.requests` decides where an item lives, and the
queue (`list_queue`, `counts`, an admin's `decide`) leaves out what a running lesson holds
until the lesson ends undecided or its teacher forwards it.  A teacher may only allow on a
seat (or reject) items whose every seat is in one of the teacher's rooms (`teacher_items`
lists them); everything else is the responsible person's.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.audit import audit
from policy_server.db.models import Event, Role, Workstation, utcnow
from policy_server.errors import Forbidden, InvalidInput, NotFound
from policy_server.filtering.models import FilterRequest, FilterRequestEvent
from policy_server.lessons import requests as lesson_requests
from policy_server.policies.service import amend_policy, current_bundle

KINDS = {"web.report": "report", "web.unblock_request": "unblock"}
STATUSES = ("received", "blocked", "allowed", "rejected")
SEAT_STATUS_DAYS = 14
SYNC_BATCH = 2000
MAX_COMMENTS = 20


def canonical_url(text: str) -> tuple[str, str]:
    """(canonical URL, host) of what a student typed; the text itself when it is no URL."""
    from filters.canonical import canonicalize, split_canonical

    raw = (text or "").strip()[:4096]
    try:
        url = canonicalize(raw)
        host = split_canonical(url)[0]
    except (ValueError, TypeError):
        return raw, ""
    return (url, host) if host else (raw, "")


def default_entry(url: str) -> str:
    """What to list for a URL: its host when it is the site's root, else host/path."""
    from filters.canonical import split_canonical

    try:
        host, path, query = split_canonical(url)
    except ValueError:
        return url
    if not host:
        return url
    if path in ("", "/") and query is None:
        return host
    return host + path


# ------------------------------------------------------------------ events → queue


def sync_events(db: Session) -> int:
    """Fold report / unblock events not yet in the queue into it; the number folded."""
    linked = select(FilterRequestEvent.event_id).where(FilterRequestEvent.event_id == Event.id)
    events = db.scalars(
        select(Event).where(Event.type.in_(tuple(KINDS)), ~linked.exists())
        .order_by(Event.occurred_at).limit(SYNC_BATCH)
    ).all()
    done = 0
    for event in events:
        data = event.data or {}
        url, host = canonical_url(str(data.get("url") or ""))
        if not url:
            continue
        kind = KINDS[event.type]
        try:
            with db.begin_nested():
                row = db.scalar(select(FilterRequest).where(FilterRequest.url == url,
                                                            FilterRequest.status == "received").limit(1))
                if row is None:
                    row = FilterRequest(url=url, host=host[:255], kinds=[], seats=[], comments=[],
                                        categories=[], first_at=event.occurred_at, last_at=event.occurred_at,
                                        count=0, status="received", decision={}, reason="", rule="")
                    db.add(row)
                    db.flush()
                row.count = (row.count or 0) + 1
                row.first_at = min(row.first_at, event.occurred_at)
                row.last_at = max(row.last_at, event.occurred_at)
                if kind not in row.kinds:
                    row.kinds = [*row.kinds, kind]
                if event.seat and event.seat not in row.seats:
                    row.seats = [*row.seats, event.seat]
                comment = (data.get("comment") or "").strip()
                if comment and comment not in row.comments and len(row.comments) < MAX_COMMENTS:
                    row.comments = [*row.comments, comment[:500]]
                if data.get("rule") and not row.rule:
                    row.rule = str(data["rule"])[:64]
                cats = [c for c in data.get("categories") or [] if c not in row.categories]
                if cats:
                    row.categories = [*row.categories, *cats]
                db.add(FilterRequestEvent(event_id=event.id, request_id=row.id, agent_id=event.agent_id,
                                          seat=event.seat, url=str(data.get("url") or "")[:4096], kind=kind,
                                          occurred_at=event.occurred_at))
                db.flush()
            done += 1
        except IntegrityError:  # another request folded this event at the same moment
            continue
    return done


# ------------------------------------------------------------------ reading


def _seats_in_rooms(db: Session, room_ids) -> set[str]:
    if not room_ids:
        return set()
    return {s for s in db.scalars(select(Workstation.seat).where(Workstation.room_id.in_(tuple(room_ids))))
            if s}


def teacher_items(db: Session, *, viewer, status: str = "received") -> list[FilterRequest]:
    """The unblock requests a teacher may decide: every seat of the item is in their rooms."""
    sync_events(db)
    seats = _seats_in_rooms(db, viewer.room_ids) if viewer.room_ids is not None else None
    rows = db.scalars(select(FilterRequest).where(FilterRequest.status == status)
                      .order_by(FilterRequest.last_at.desc()).limit(200))
    return [r for r in rows
            if "unblock" in r.kinds and (seats is None or (r.seats and set(r.seats) <= seats))]


def list_queue(db: Session, *, viewer, status: str | None = "received", limit: int = 200
               ) -> list[FilterRequest]:
    if viewer.role != Role.admin:
        raise NotFound("the report queue is the responsible person's")
    sync_events(db)
    query = select(FilterRequest)
    if status and status != "all":
        if status not in STATUSES:
            raise InvalidInput(f"unknown status {status!r}; use one of {', '.join(STATUSES)} or all")
        query = query.where(FilterRequest.status == status)
    rows = list(db.scalars(query.order_by(FilterRequest.last_at.desc()).limit(limit)))
    return lesson_requests.in_queue(db, rows)  # not those a running lesson's teacher holds


def counts(db: Session) -> dict[str, int]:
    out = dict.fromkeys(STATUSES, 0)
    for status in db.scalars(select(FilterRequest.status)):
        out[status] = out.get(status, 0) + 1
    received = list(db.scalars(select(FilterRequest).where(FilterRequest.status == "received")))
    out["received"] -= len(lesson_requests.held_by_lessons(db, received))
    return out


def as_json(row: FilterRequest) -> dict[str, Any]:
    return {
        "id": row.id, "url": row.url, "host": row.host, "kinds": row.kinds, "seats": row.seats,
        "comments": row.comments, "rule": row.rule, "categories": row.categories,
        "first_at": row.first_at.isoformat(), "last_at": row.last_at.isoformat(), "count": row.count,
        "status": row.status, "decision": row.decision, "reason": row.reason, "decided_by": row.decided_by,
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
        "policy_version": row.policy_version,
    }


def url_key(canonical: str) -> str:
    """What the seat is told instead of the URL (an agent never receives students' URLs,
    002 §3.1): the SHA-256 of the canonical URL.  The seat's proxy knows the URLs it sent and
    matches them by the same key (`agent.artifacts.report_key`)."""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def seat_statuses(db: Session, *, agent_id: str) -> list[dict[str, Any]]:
    """What became of the reports sent from one workstation in the last two weeks (newest
    first), keyed by `url_key` — no URLs, no user names."""
    sync_events(db)
    since = utcnow() - timedelta(days=SEAT_STATUS_DAYS)
    rows = db.execute(
        select(FilterRequestEvent, FilterRequest)
        .join(FilterRequest, FilterRequest.id == FilterRequestEvent.request_id)
        .where(FilterRequestEvent.agent_id == agent_id, FilterRequestEvent.occurred_at >= since)
        .order_by(FilterRequestEvent.occurred_at.desc()).limit(50)
    ).all()
    return [{"key": url_key(req.url), "kind": link.kind, "at": link.occurred_at.isoformat(),
             "status": req.status, "decided_at": req.decided_at.isoformat() if req.decided_at else None,
             "reason": req.reason if req.status == "rejected" else ""}
            for link, req in rows]


# ------------------------------------------------------------------ deciding


def _validate_entry(entry: str) -> str:
    from policy_server.filtering.editor import parse_entry

    return parse_entry(entry, what="entry")


def decide(db: Session, *, viewer, ids: list[int], action: str, scope: str = "school",
           target: str | None = None, entry: str | None = None, until: datetime | None = None,
           reason: str = "") -> dict[str, Any]:
    """Decide queue rows in one go; a block or allow becomes one policy amendment."""
    if viewer.role not in (Role.admin, Role.teacher):
        raise NotFound("the report queue is the responsible person's")
    if action not in ("block", "allow", "reject"):
        raise InvalidInput(f"unknown decision {action!r}; choose block, allow or reject")
    rows = list(db.scalars(select(FilterRequest).where(FilterRequest.id.in_(ids))))
    if viewer.role == Role.admin:  # what a running lesson's teacher holds is not in the queue yet
        rows = lesson_requests.in_queue(db, rows)
    if viewer.role == Role.teacher:  # only their rooms' unblock requests, only for the seat
        allowed = {r.id for r in teacher_items(db, viewer=viewer, status="received")}
        rows = [r for r in rows if r.id in allowed]
        if action == "block" or (action == "allow" and scope != "seat"):
            raise Forbidden("a teacher may allow an unblock request on its seat or reject it; blocking and "
                            "allowing for a group or the school are the responsible person's")
    if len(rows) != len(set(ids)):
        missing = sorted(set(ids) - {r.id for r in rows})
        raise NotFound(f"no queue item {', '.join(map(str, missing))}; reload the queue")
    reason = (reason or "").strip()[:1000]
    actor = viewer.name
    now = utcnow()
    if action == "reject":
        if not reason:
            raise InvalidInput("write the reason for rejecting: the student's report page shows it")
        for row in rows:
            row.status, row.reason, row.decided_by, row.decided_at = "rejected", reason, actor, now
            row.decision = {"action": "reject"}
        audit(db, actor=actor, action="filtering.reject", target=",".join(str(r.id) for r in rows),
              detail={"reason": reason, "urls": [r.url for r in rows][:50]})
        _tell_seats(db, rows)
        return {"decided": len(rows), "policy_version": None}
    allowed_scopes = ("school", "group") if action == "block" else ("seat", "group", "school")
    if scope not in allowed_scopes:
        raise InvalidInput(f"{action} works for: {', '.join(allowed_scopes)} (not {scope!r})")
    bundle = current_bundle(db)
    if scope == "group":
        names = [g.name for g in bundle.groups]
        if target not in names:
            raise InvalidInput(f"choose the group: one of {', '.join(names)}")
    if until is not None:
        if until.tzinfo is None:
            raise InvalidInput("the expiry has no time zone; give it as 2025-03-01T15:00+06:00")
        if until <= now:
            raise InvalidInput("the expiry is in the past; choose a later time or none")
        if action != "allow":
            raise InvalidInput("only an allow can expire; a block stays until it is taken off")
    if entry and len(rows) > 1:
        raise InvalidInput("a custom entry works for one queue item at a time")
    plan: list[tuple[FilterRequest, str, list[str]]] = []  # row, entry, seats
    for row in rows:
        item = _validate_entry(entry) if entry else _validate_entry(default_entry(row.url))
        seats = ([target] if target else list(row.seats)) if scope == "seat" else []
        if scope == "seat" and not seats:
            raise InvalidInput(f"item {row.id} names no seat; choose the seat")
        plan.append((row, item, seats))

    def change(b: protocol.PolicyBundle) -> protocol.PolicyBundle:
        f = b.filtering
        for _row, item, seats in plan:
            if action == "block":
                # an allow-list entry would win over the block (001 §2.6 order): take it off
                f.allow_list = [e for e in f.allow_list if e != item]
                for g in list(f.group_allow_list):
                    f.group_allow_list[g] = [e for e in f.group_allow_list[g] if e != item]
                for s in list(f.seat_allow_list):
                    f.seat_allow_list[s] = [e for e in f.seat_allow_list[s] if e != item]
                target_list = f.block_list if scope == "school" else f.group_block_list.setdefault(target, [])
            elif scope == "school":
                target_list = f.allow_list
            elif scope == "group":
                target_list = f.group_allow_list.setdefault(target, [])
            else:
                for seat in seats:
                    lst = f.seat_allow_list.setdefault(seat, [])
                    if item not in lst:
                        lst.append(item)
                continue
            if item not in target_list:
                target_list.append(item)
        return b

    where = {"school": "the school", "group": f"group {target}", "seat": "seat(s)"}[scope]
    clause = "000 §8.3" if action == "block" else "001 §2.6"
    entries = ", ".join(sorted({p[1] for p in plan}))[:200]
    new = amend_policy(db, actor=actor, comment=f"report queue: {action} {entries} for {where} ({clause})",
                       change=change)
    for row, item, seats in plan:
        row.status = "blocked" if action == "block" else "allowed"
        row.decision = {"action": action, "scope": scope, "target": target, "entry": item, "seats": seats,
                        "until": until.isoformat() if until else None}
        row.reason, row.decided_by, row.decided_at, row.policy_version = reason, actor, now, new.version
    _tell_seats(db, rows)
    return {"decided": len(rows), "policy_version": new.version}


def _tell_seats(db: Session, rows: list[FilterRequest]) -> None:
    """Once committed, push "your reports were decided" to the seats they came from, so each
    student's report page shows the decision within seconds (policies/push.py)."""
    from policy_server.policies.push import schedule_reports_push

    if not rows:
        return
    agents = db.scalars(select(FilterRequestEvent.agent_id).where(
        FilterRequestEvent.request_id.in_([r.id for r in rows])).distinct())
    schedule_reports_push(db, list(agents))


def expire_allows(db: Session, now: datetime | None = None) -> int:
    """Take expired allows off the lists (one amendment for all of them)."""
    now = now or utcnow()
    due = []
    for row in db.scalars(select(FilterRequest).where(FilterRequest.status == "allowed",
                                                      FilterRequest.expired.is_(False))):
        until = (row.decision or {}).get("until")
        if until and datetime.fromisoformat(until) <= now:
            due.append(row)
    if not due:
        return 0

    def change(b: protocol.PolicyBundle) -> protocol.PolicyBundle:
        f = b.filtering
        for row in due:
            d = row.decision
            item = d["entry"]
            if d["scope"] == "school":
                f.allow_list = [e for e in f.allow_list if e != item]
            elif d["scope"] == "group" and d.get("target") in f.group_allow_list:
                f.group_allow_list[d["target"]] = [e for e in f.group_allow_list[d["target"]] if e != item]
            else:
                for seat in d.get("seats") or []:
                    if seat in f.seat_allow_list:
                        f.seat_allow_list[seat] = [e for e in f.seat_allow_list[seat] if e != item]
        return b

    amend_policy(db, actor="system:expiry", comment=f"report queue: {len(due)} allow(s) expired (001 §2.6)",
                 change=change)
    for row in due:
        row.expired = True
    return len(due)


def expire_job(db: Session, now: datetime) -> None:
    if expire_allows(db, now):
        db.commit()


def workstation_seat(db: Session, agent_id: str) -> str | None:
    ws = db.get(Workstation, agent_id)
    return ws.seat if ws else None


# ------------------------------------------------------------------ retention (001 §2.15)


def fold_all(db: Session) -> int:
    """Fold every report / unblock event not yet in the queue (retention runs this first, so no
    student's report is removed before the responsible person's queue holds it)."""
    total = 0
    while done := sync_events(db):
        total += done
    return total


def _old_copies(cutoff: datetime, keep_event_ids):
    """The queue's per-report copies past the cut-off whose event is removed (or gone): those of
    events an open incident holds stay with them (and keep them from being folded twice)."""
    return (FilterRequestEvent.occurred_at < cutoff, FilterRequestEvent.event_id.not_in(keep_event_ids))


def _items_to_scrub(db: Session, cutoff: datetime) -> list[FilterRequest]:
    """Decided items whose last report and decision are both before the cut-off and that still
    name seats or carry students' comments.  Undecided items stay whole: they wait for the
    responsible person (000 §8.3)."""
    rows = db.scalars(select(FilterRequest).where(
        FilterRequest.status != "received", FilterRequest.last_at < cutoff,
        FilterRequest.decided_at.is_not(None), FilterRequest.decided_at < cutoff))
    return [r for r in rows if r.seats or r.comments]


def retention_counts(db: Session, *, cutoff: datetime, keep_event_ids) -> tuple[int, int]:
    """(copies to remove, decided items to scrub) at this cut-off; changes nothing."""
    copies = db.scalar(select(func.count()).select_from(FilterRequestEvent)
                       .where(*_old_copies(cutoff, keep_event_ids))) or 0
    return copies, len(_items_to_scrub(db, cutoff))


def apply_retention(db: Session, *, cutoff: datetime, keep_event_ids) -> tuple[int, int]:
    """Remove the old per-report copies (URL as typed, seat, time) and the seats and comments of
    old decided items; the items keep URL, kinds, counts, times and the decision (the school's
    filtering record).  Called by `policy_server.db.retention` in its transaction."""
    removed = db.execute(delete(FilterRequestEvent).where(*_old_copies(cutoff, keep_event_ids)),
                         execution_options={"synchronize_session": False}).rowcount or 0
    rows = _items_to_scrub(db, cutoff)
    for row in rows:
        row.seats, row.comments = [], []
    db.flush()
    return removed, len(rows)
