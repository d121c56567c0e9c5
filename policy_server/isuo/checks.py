"""Runs the ISUO cross-checks (`rules.py`, pure) over the database: on import and periodically.

* `check_new_accesses` / `check_imported` — the records one import added (called by
  `imports.import_file`, in the same transaction);
* `check_period` — every imported record and every proxy session not linked to one in a
  period, the import gaps, and the termly review's due date; `run_periodic` calls it for the
  last three days (job `isuo.cross` of `policy_server.checks`).

A finding's dedup key is per rule, login (or seat) and day; a key already reported is not
reported again, so running the checks twice adds nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from policy_server.checks.periodic import _submit
from policy_server.db.models import Event, IsuoAccess, Room, Workstation
from policy_server.isuo import rules
from policy_server.isuo.models import IsuoImport, IsuoLogin, IsuoRecord, IsuoReview, IsuoUser
from policy_server.isuo.rules import SCHOOL_TZ, Access, RegisteredUser, SeatHistory
from policy_server.isuo.service import review_due_on, working_time
from policy_server.rules import IncidentDraft, RuleInput

LOOKBACK = timedelta(days=3)
HISTORY_BEFORE = timedelta(days=8)  # a full scan older than 7 days is late anyway
SEAT_EVENT_TYPES = (
    "av.scan.completed",
    "av.health",
    "integrity.baseline",
    "integrity.tampered",
    "integrity.changed",
)


def registered_by_login(db: Session) -> dict[str, RegisteredUser]:
    users = {
        u.id: RegisteredUser(
            user_id=u.id,
            full_name=u.full_name,
            isuo_role=u.isuo_role,
            obligation_signed_on=u.obligation_signed_on,
            obligation_kept=u.has_obligation,
            blocked_on=u.blocked_on,
            left_on=u.left_on,
        )
        for u in db.scalars(select(IsuoUser))
    }
    return {
        login: users[user_id] for login, user_id in db.execute(select(IsuoLogin.login, IsuoLogin.user_id))
    }


def seat_histories(
    db: Session, agent_ids: Iterable[str], *, since: datetime, until: datetime
) -> dict[str, SeatHistory]:
    """Each workstation's scans, integrity state and antivirus health around the period."""
    agent_ids = sorted(set(a for a in agent_ids if a))
    if not agent_ids:
        return {}
    parts: dict[str, dict[str, list]] = {a: defaultdict(list) for a in agent_ids}
    # the last full scan before the window (how late a seat is, even months late)
    for agent, at in db.execute(
        select(Event.agent_id, func.max(Event.occurred_at))
        .where(
            Event.agent_id.in_(agent_ids),
            Event.type == "av.scan.completed",
            Event.data["kind"].as_string() == "full",
            Event.occurred_at < since - HISTORY_BEFORE,
        )
        .group_by(Event.agent_id)
    ).all():
        parts[agent]["scans"].append(at)
    rows = db.execute(
        select(Event.agent_id, Event.type, Event.occurred_at, Event.data)
        .where(
            Event.agent_id.in_(agent_ids),
            Event.type.in_(SEAT_EVENT_TYPES),
            Event.occurred_at >= since - HISTORY_BEFORE,
            Event.occurred_at <= until,
        )
        .order_by(Event.occurred_at)
    )
    for agent, type_, at, data in rows:
        p = parts[agent]
        if type_ == "av.scan.completed":
            if data.get("kind") == "full":
                p["scans"].append(at)
        elif type_ == "av.health":
            p["health"].append((at, data.get("problem")))
        elif type_ == "integrity.baseline":
            p["good"].append(at)
        elif type_ == "integrity.tampered" or (
            type_ == "integrity.changed" and not data.get("by_package_manager") and data.get("area") != "drop"
        ):
            p["bad"].append(at)
    enrolled = dict(
        db.execute(select(Workstation.id, Workstation.enrolled_at).where(Workstation.id.in_(agent_ids))).all()
    )
    return {
        a: SeatHistory(
            full_scans=tuple(p["scans"]),
            baselines=tuple(p["good"]),
            integrity_bad=tuple(p["bad"]),
            av_health=tuple(p["health"]),
            known_since=enrolled.get(a),
        )
        for a, p in parts.items()
    }


def _input(access: Access, kind: str) -> RuleInput:
    return RuleInput(
        event_id="", type=kind, agent_id=access.agent_id, occurred_at=access.at, data={}, seat=access.seat
    )


def student_lab_drafts(db: Session, accesses: list[Access]) -> list[tuple[IncidentDraft, RuleInput]]:
    """Imported records from student-lab seats outside a lesson (the lessons table is the truth)."""
    from policy_server.lessons.models import Lesson
    from policy_server.policies.service import current_bundle

    labs = set(current_bundle(db).isuo.student_lab_rooms)
    candidates = [a for a in accesses if a.agent_id and not a.proxy_linked]
    if not labs or not candidates:
        return []
    rooms = dict(
        db.execute(
            select(Workstation.id, Room.name)
            .join(Room, Room.id == Workstation.room_id)
            .where(Workstation.id.in_(sorted({a.agent_id for a in candidates})))
        ).all()
    )
    in_lab = [a for a in candidates if rooms.get(a.agent_id) in labs]
    if not in_lab:
        return []
    since, until = min(a.at for a in in_lab), max(a.at for a in in_lab)
    lessons: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for room, start, end, ended in db.execute(
        select(Room.name, Lesson.starts_at, Lesson.ends_at, Lesson.ended_at)
        .join(Room, Room.id == Lesson.room_id)
        .where(Lesson.starts_at <= until, Lesson.ends_at >= since)
    ):
        lessons[room].append((start, min(end, ended) if ended else end))
    out: dict[str, tuple[IncidentDraft, RuleInput]] = {}
    for access in in_lab:
        running = any(s <= access.at < e for s, e in lessons.get(rooms[access.agent_id], ()))
        draft = rules.student_lab_seat(access, student_lab=True, lesson_running=running)
        if draft is not None:
            out.setdefault(draft.dedup_key, (draft, _input(access, draft.rule)))
    return list(out.values())


def check_accesses(db: Session, accesses: list[Access]) -> list[tuple[IncidentDraft, RuleInput]]:
    if not accesses:
        return []
    users = registered_by_login(db)
    working = working_time(db)
    histories = seat_histories(
        db,
        (a.agent_id for a in accesses),
        since=min(a.at for a in accesses),
        until=max(a.at for a in accesses),
    )
    found = [
        (draft, _input(access, draft.rule))
        for draft, access in rules.check_accesses(accesses, users, working, histories)
    ]
    return found + student_lab_drafts(db, accesses)


def _record_accesses(rows) -> list[Access]:  # rows of _RECORD_COLUMNS
    return [
        Access(
            key=f"rec:{h[:16]}",
            at=at,
            login=login,
            seat=seat,
            agent_id=agent,
            action=action,
            proxy_linked=proxy is not None,
        )
        for h, at, login, seat, agent, action, proxy in rows
    ]


_RECORD_COLUMNS = (
    IsuoRecord.row_hash,
    IsuoRecord.at,
    IsuoRecord.login,
    IsuoRecord.seat,
    IsuoRecord.agent_id,
    IsuoRecord.action,
    IsuoRecord.proxy_access_id,
)


def check_new_accesses(db: Session, accesses: list[Access]) -> list[IncidentDraft]:
    """The checks over accesses just imported (in memory: not read back from the database)."""
    return _submit(db, check_accesses(db, accesses), open_at=None)


def check_imported(db: Session, *, import_id: int, now: datetime) -> list[IncidentDraft]:
    rows = db.execute(
        select(*_RECORD_COLUMNS).where(IsuoRecord.import_id == import_id).order_by(IsuoRecord.at)
    )
    return _submit(db, check_accesses(db, _record_accesses(rows)), open_at=None)


def proxy_only_accesses(db: Session, *, since: datetime, until: datetime) -> list[Access]:
    """Proxy sessions that no imported record is linked to (those carry no ISUO login)."""
    linked = select(IsuoRecord.proxy_access_id).where(
        IsuoRecord.proxy_access_id.is_not(None), IsuoRecord.at >= since - timedelta(hours=3)
    )
    rows = db.execute(
        select(
            IsuoAccess.id, IsuoAccess.started_at, IsuoAccess.seat, IsuoAccess.agent_id, IsuoAccess.isuo_user
        ).where(
            IsuoAccess.source == "proxy",
            IsuoAccess.started_at >= since,
            IsuoAccess.started_at <= until,
            IsuoAccess.id.not_in(linked),
        )
    )
    return [
        Access(key=f"proxy:{i}", at=at, login=(user or None), seat=seat, agent_id=agent, proxy_linked=True)
        for i, at, seat, agent, user in rows
    ]


def import_gap_drafts(
    db: Session, *, since: datetime, until: datetime
) -> list[tuple[IncidentDraft, RuleInput]]:
    covered = db.execute(select(func.min(IsuoImport.first_at), func.max(IsuoImport.last_at))).one()
    if covered[0] is None:
        return []
    start, end = max(since, covered[0]), min(until, covered[1])
    if start > end:
        return []
    sessions = Counter(
        at.astimezone(SCHOOL_TZ).date()
        for at in db.scalars(
            select(IsuoAccess.started_at).where(
                IsuoAccess.source == "proxy", IsuoAccess.started_at >= start, IsuoAccess.started_at <= end
            )
        )
    )
    imported = {
        at.astimezone(SCHOOL_TZ).date()
        for at in db.scalars(
            select(IsuoRecord.at).where(
                IsuoRecord.at >= start - timedelta(days=1), IsuoRecord.at <= end + timedelta(days=1)
            )
        )
    }
    days = rules.import_gaps(
        sessions,
        imported,
        covered_from=start.astimezone(SCHOOL_TZ).date(),
        covered_until=end.astimezone(SCHOOL_TZ).date(),
    )
    out = []
    for day in days:
        draft = rules.import_gap(day, sessions[day])
        at = datetime.combine(day, datetime.min.time(), SCHOOL_TZ).astimezone(UTC)
        out.append(
            (draft, RuleInput(event_id="", type="isuo.import_gap", agent_id=None, occurred_at=at, data={}))
        )
    return out


def review_overdue_drafts(db: Session, *, now: datetime) -> list[tuple[IncidentDraft, RuleInput]]:
    due = review_due_on(db)
    if due is None:
        return []
    signed = (
        db.scalar(
            select(func.count())
            .select_from(IsuoReview)
            .where(IsuoReview.signed_on.is_not(None), IsuoReview.next_due_on > due)
        )
        or 0
    )
    draft = rules.review_overdue(
        due_on=due, signed_on_or_after_due=signed > 0, today=now.astimezone(SCHOOL_TZ).date()
    )
    if draft is None:
        return []
    return [
        (draft, RuleInput(event_id="", type="isuo.review_overdue", agent_id=None, occurred_at=now, data={}))
    ]


def check_period(db: Session, *, since: datetime, until: datetime, now: datetime) -> list[IncidentDraft]:
    rows = db.execute(
        select(*_RECORD_COLUMNS).where(IsuoRecord.at >= since, IsuoRecord.at <= until).order_by(IsuoRecord.at)
    )
    accesses = _record_accesses(rows) + proxy_only_accesses(db, since=since, until=until)
    drafts = check_accesses(db, accesses)
    drafts += import_gap_drafts(db, since=since, until=until)
    drafts += review_overdue_drafts(db, now=now)
    return _submit(db, drafts, open_at=None)


def run_periodic(db: Session, *, now: datetime, lookback: timedelta = LOOKBACK) -> list[IncidentDraft]:
    """The `isuo.cross` periodic job: the last `lookback`, up to one day before now for gaps
    (an export of today is not expected yet)."""
    return check_period(db, since=now - lookback, until=now, now=now)
