"""The incident engine: rules' drafts → new incidents or additions to open ones.

For a batch of accepted events it runs `policy_server.rules.evaluate` on each (pure), groups
the drafts by `dedup_key`, and for each key either adds the events to the open incident
whose aggregation window contains them (count, last seen, links, one timeline entry per
batch) or opens a new incident (window = its first event + `window_s`).  The database work
is a fixed handful of statements per batch, whatever the number of keys or events: one
SELECT of the open incidents of all keys, one multi-row INSERT of the new ones, one
executemany UPDATE, one INSERT each of links and timeline entries.

**Thresholds.**  A draft with `open_after = N > 1` (e.g. blocked pages: 001 §2.7 is about
*repeated* attempts) opens an incident only when N drafts of its key fall inside one
`window_s`.  The attempts are counted across batches from the stored events themselves: the
events of the same types and agents in the window that no incident holds yet are read back
(one query, only for keys that need it) and run through the same pure rules to find their
keys.  When the N-th arrives, the incident opens with all N linked to it.

Drafts with `notify` leave a `Notification`: `class_teacher` is resolved to the class teacher(s)
of the student's class in `person_classes` (the class from the student's OS account or the
seat's lesson/period, `timetable.class_at`; 001 §2.7), each also told by a notice; other roles are
addressed by role.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import String, any_, bindparam, exists, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.db.bulk import insert_rows, update_rows
from policy_server.db.models import (
    Event,
    Incident,
    IncidentEvent,
    IncidentStatus,
    Notification,
    Person,
    Room,
    TimelineEntry,
    UtcDateTime,
    Workstation,
    utcnow,
)
from policy_server.rules import IncidentDraft, RuleInput, Severity, evaluate, load_all_rules

SYSTEM = "system"
_SEVERITY_RANK = {s.value: i for i, s in enumerate(Severity)}
_KEY_LEN = 300  # Incident.dedup_key is String(300)

load_all_rules()


def _max_severity(a: str, b: str) -> str:
    return a if _SEVERITY_RANK.get(a, 0) >= _SEVERITY_RANK.get(b, 0) else b


@dataclass
class _Member:
    draft: IncidentDraft
    event: RuleInput
    span: tuple[datetime, datetime] | None = None  # the lesson it falls in (draft.lesson_window)

    def window_start(self) -> datetime:
        """The earliest attempt that counts with this one towards `open_after`."""
        if self.span is not None:
            return self.span[0]
        return self.event.occurred_at - timedelta(seconds=self.draft.window_s)

    def window_end(self, first: datetime) -> datetime:
        """Where an incident opened with this member (first attempt at `first`) stops growing."""
        if self.span is not None:
            return self.span[1]
        return first + timedelta(seconds=self.draft.window_s)


@dataclass
class _Incident:
    """An incident as this batch sees it: loaded open, or opened now."""

    id: int | None
    event_count: int
    first_seen_at: datetime
    last_seen_at: datetime
    window_ends_at: datetime
    severity: str
    opened_by: _Member | None = None  # set when opened in this batch
    added: int = 0  # events added in this batch beyond those it opened with
    members: list[str] = field(default_factory=list)  # event ids to link
    ongoing: bool = False  # a condition (see ONGOING_RULES): the window slides, no timeline line per event

    def covers(self, at: datetime) -> bool:
        return at <= self.window_ends_at

    def add(self, member: _Member) -> None:
        self.event_count += 1
        self.added += 1
        self.last_seen_at = max(self.last_seen_at, member.event.occurred_at)
        if self.ongoing:  # still going on: one incident for as long as it lasts
            self.window_ends_at = max(self.window_ends_at,
                                      member.event.occurred_at + timedelta(seconds=member.draft.window_s))
        self.severity = _max_severity(self.severity, member.draft.severity.value)
        self.members.append(member.event.event_id)


class _LessonSpans:
    """The lesson an event falls in, for drafts with `lesson_window`: the room's lesson running
    at that instant (until its hard end, or until it was ended early), else the timetable
    period of the room at that instant, else none (the draft's `window_s` then).  One query per
    agent for its room, one or two per lesson found; at most once per batch each."""

    def __init__(self, db: Session):
        self.db = db
        self._rooms: dict[str, int | None] = {}
        self._spans: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)  # room → found

    def of(self, event: RuleInput) -> tuple[datetime, datetime] | None:
        if event.agent_id not in self._rooms:
            self._rooms[event.agent_id] = self.db.scalar(
                select(Workstation.room_id).where(Workstation.id == event.agent_id))
        room_id = self._rooms[event.agent_id]
        if room_id is None:
            return None
        at = event.occurred_at
        for span in self._spans[room_id]:
            if span[0] <= at < span[1]:
                return span
        span = self._find(room_id, at)
        if span is not None:
            self._spans[room_id].append(span)
        return span

    def _find(self, room_id: int, at: datetime) -> tuple[datetime, datetime] | None:
        from policy_server.lessons.models import Lesson
        from policy_server.timetable import service as timetable

        lesson = self.db.scalar(
            select(Lesson).where(Lesson.room_id == room_id, Lesson.starts_at <= at, Lesson.ends_at > at,
                                 (Lesson.ended_at.is_(None)) | (Lesson.ended_at > at))
            .order_by(Lesson.starts_at.desc()).limit(1))
        if lesson is not None:
            return lesson.starts_at, lesson.ended_at or lesson.ends_at
        period = timetable.period_at(self.db, room_id, at)
        if period is not None:
            starts, ends = timetable.period_bounds(period, at)
            if starts <= at < ends:
                return starts, ends
        return None


class _BundleCache:
    """The policy bundle, read at most once per batch and only if a draft needs it."""

    def __init__(self, db: Session):
        self.db = db
        self._bundle: protocol.PolicyBundle | None = None

    def get(self) -> protocol.PolicyBundle:
        if self._bundle is None:
            from policy_server.policies.service import current_bundle

            self._bundle = current_bundle(self.db)
        return self._bundle


# Rules about a condition that lasts (a part of the agent down, the antivirus not working): the
# agent repeats the event (every heartbeat, every antivirus check) while it lasts.  Such an
# incident is one for as long as the condition lasts (its window slides with each event; start,
# count and last seen are on the incident, not one timeline line per event), and it closes
# itself, with a note, when the same kind of event from the same agent no longer reports it
# (issue 11).  event type → the rule whose incidents that event's report can clear.
ONGOING_RULES: dict[str, str] = {
    "agent.heartbeat": "agent.collector_failed",
    "av.health": "av.health",
}
_ONGOING = frozenset(ONGOING_RULES.values())


def process_events(db: Session, events: list[RuleInput]) -> list[int]:
    """Run the rules on stored events and merge the drafts; returns the ids of incidents touched."""
    drafts = [(draft, event) for event in events for draft in evaluate(event)]
    touched = process_drafts(db, drafts)
    _close_cleared(db, events, drafts)
    return touched


def _close_cleared(db: Session, events: list[RuleInput],
                   drafts: list[tuple[IncidentDraft, RuleInput]]) -> None:
    """Resolve the open condition incidents that the newest report of each agent no longer names.

    One query (index `ix_incidents_agent_status`, 0104) per batch that holds such reports."""
    newest: dict[tuple[str, str], RuleInput] = {}
    for event in events:
        if event.type in ONGOING_RULES:
            key = (event.agent_id, event.type)
            if key not in newest or newest[key].occurred_at <= event.occurred_at:
                newest[key] = event
    if not newest:
        return
    still = {d.dedup_key[:_KEY_LEN] for d, e in drafts if newest.get((e.agent_id, e.type)) is e}
    agents = sorted({agent_id for agent_id, _type in newest})
    rules = sorted({ONGOING_RULES[type_] for _agent, type_ in newest})
    now = utcnow()
    open_conditions = db.scalars(select(Incident).where(  # index ix_incidents_agent_status (0104)
        Incident.agent_id.in_(agents), Incident.status != IncidentStatus.resolved, Incident.rule.in_(rules)))
    for incident in open_conditions:
        if incident.dedup_key in still:
            continue
        report = next((e for (a, t), e in newest.items()
                       if a == incident.agent_id and ONGOING_RULES[t] == incident.rule), None)
        if report is None:
            continue
        cleared_at = report.occurred_at
        incident.status = IncidentStatus.resolved
        # a code and params, said in the reader's language (incidents.service.resolution_text)
        incident.resolution = None
        incident.resolution_code = "condition_cleared"
        incident.resolution_params = {"cleared_at": cleared_at.isoformat()}
        db.add(TimelineEntry(incident_id=incident.id, actor=SYSTEM, action="resolved", at=now,
                             detail={"note": "condition_cleared", "cleared_at": cleared_at.isoformat()}))


def process_drafts(db: Session, drafts: list[tuple[IncidentDraft, RuleInput]]) -> list[int]:
    """Merge drafts made elsewhere (the stateful checks, policy_server.checks) like rules' drafts.

    Each draft comes with the event it is about; a draft about an absence (no weekly scan)
    has no event: give a RuleInput with `event_id=""` (agent, seat, time), nothing is linked."""
    by_key: dict[str, list[_Member]] = defaultdict(list)
    spans = _LessonSpans(db)
    for draft, event in drafts:
        by_key[draft.dedup_key[:_KEY_LEN]].append(
            _Member(draft, event, spans.of(event) if draft.lesson_window else None))
    if not by_key:
        return []
    events = [member.event for members in by_key.values() for member in members]
    keys = sorted(by_key)
    with db.no_autoflush:
        if db.get_bind().dialect.name == "postgresql":
            # Advisory locks on the keys, taken in sorted order in one statement: two concurrent
            # batches touching the same keys queue instead of deadlocking, cannot both open an
            # incident for one key, and never lose an update of `event_count`.  (SQLite's
            # BEGIN IMMEDIATE already runs one writer at a time.)
            db.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
                            "FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k"), {"keys": keys})
        open_by_key = _open_incidents(db, keys, min(e.occurred_at for e in events))
        earlier = _uncounted_earlier(db, by_key, open_by_key, {e.event_id for e in events}, spans)
        touched: list[_Incident] = []
        for key in keys:
            touched += _merge_key(open_by_key.get(key), earlier.get(key, []), by_key[key])
        _write(db, touched)
    return [i.id for i in touched if i.id is not None]


def _open_select(key_is_one_of):
    return (select(Incident.id, Incident.dedup_key, Incident.event_count, Incident.first_seen_at,
                   Incident.last_seen_at, Incident.window_ends_at, Incident.severity)
            .where(key_is_one_of, Incident.status != IncidentStatus.resolved,
                   Incident.window_ends_at >= bindparam("earliest", type_=UtcDateTime))
            .order_by(Incident.id))


# Built once: making the statement cost more CPU than running it.  On PostgreSQL the keys
# travel as one array (`= ANY`), not one bind per key.
_OPEN_SELECT = {
    "postgresql": _open_select(Incident.dedup_key == any_(bindparam("keys", type_=ARRAY(String)))),
    "sqlite": _open_select(Incident.dedup_key.in_(bindparam("keys", expanding=True))),
}


def _open_incidents(db: Session, keys: list[str], earliest: datetime) -> dict[str, _Incident]:
    """The newest unresolved incident per key whose window reaches the batch's first event."""
    found: dict[str, _Incident] = {}
    connection = db.connection()
    rows = connection.execute(_OPEN_SELECT[connection.dialect.name], {"keys": keys, "earliest": earliest})
    for incident_id, key, count, first_seen, last_seen, window_ends, severity in rows:
        found[key] = _Incident(id=incident_id, event_count=count, first_seen_at=first_seen,
                               last_seen_at=last_seen, window_ends_at=window_ends,
                               severity=severity,  # the newest wins
                               ongoing=key.split(":", 1)[0] in _ONGOING)
    return found


def _uncounted_earlier(db: Session, by_key: dict[str, list[_Member]], open_by_key: dict[str, _Incident],
                       batch_ids: set[str], spans: _LessonSpans) -> dict[str, list[_Member]]:
    """For threshold keys with an attempt no open incident covers: the stored attempts before
    it that no incident holds yet (from earlier batches), by key."""
    wanted: dict[str, list[_Member]] = {}
    for key, members in by_key.items():
        incident = open_by_key.get(key)
        uncovered = [m for m in members
                     if m.draft.open_after > 1 and not (incident and incident.covers(m.event.occurred_at))]
        if uncovered:
            wanted[key] = uncovered
    if not wanted:
        return {}
    uncovered = [m for ms in wanted.values() for m in ms]
    since = min(m.window_start() for m in uncovered)
    until = max(m.event.occurred_at for m in uncovered)
    rows = db.execute(
        select(Event.id, Event.type, Event.agent_id, Event.occurred_at, Event.data, Event.clauses,
               Event.os_user, Event.seat, Workstation.seat, Workstation.hostname, Room.name)
        .join(Workstation, Workstation.id == Event.agent_id)
        .outerjoin(Room, Room.id == Workstation.room_id)
        .where(Event.type.in_({m.event.type for m in uncovered}),
               Event.agent_id.in_({m.event.agent_id for m in uncovered}),
               Event.occurred_at >= since, Event.occurred_at <= until,
               ~exists().where(IncidentEvent.event_id == Event.id))
    )
    earlier: dict[str, list[_Member]] = defaultdict(list)
    for event_id, type_, agent_id, at, data, clauses, os_user, seat, agent_seat, hostname, room in rows:
        if event_id in batch_ids:
            continue
        event = RuleInput(event_id=event_id, type=type_, agent_id=agent_id, occurred_at=at, data=data,
                          clauses=tuple(clauses or ()), os_user=os_user, seat=seat or agent_seat,
                          room=room, hostname=hostname)
        for draft in evaluate(event):
            key = draft.dedup_key[:_KEY_LEN]
            if key in wanted:
                earlier[key].append(_Member(draft, event, spans.of(event) if draft.lesson_window else None))
    return earlier


def _merge_key(incident: _Incident | None, earlier: list[_Member], batch: list[_Member]) -> list[_Incident]:
    """Walk one key's attempts in time order: join the covering incident, or count towards
    opening one.  Returns every incident this key touched."""
    touched: list[_Incident] = [incident] if incident else []
    pending: deque[_Member] = deque()  # attempts not in any incident, inside one window
    for member in sorted([*earlier, *batch], key=lambda m: m.event.occurred_at):
        at = member.event.occurred_at
        if incident is not None and incident.covers(at):
            incident.add(member)
            continue
        pending.append(member)
        while pending and pending[0].event.occurred_at < member.window_start():
            pending.popleft()
        if len(pending) >= member.draft.open_after:
            incident = _opened(list(pending))
            touched.append(incident)
            pending.clear()
    return [i for i in touched if i.opened_by or i.added]


def _opened(members: list[_Member]) -> _Incident:
    first, last = members[0], members[-1]
    return _Incident(
        id=None, event_count=len(members), first_seen_at=first.event.occurred_at,
        last_seen_at=last.event.occurred_at,
        window_ends_at=last.window_end(first.event.occurred_at),
        severity=max((m.draft.severity.value for m in members), key=lambda s: _SEVERITY_RANK.get(s, 0)),
        opened_by=last, members=[m.event.event_id for m in members],
        ongoing=last.draft.rule in _ONGOING,
    )


def _write(db: Session, touched: list[_Incident]) -> None:
    if not touched:  # (an empty executemany would insert one row of defaults)
        return
    opened = [i for i in touched if i.opened_by is not None]
    grown = [i for i in touched if i.opened_by is None and i.added]
    if opened:
        classes = _classes_at(db, opened)
        new_ids = db.execute(
            insert(Incident).returning(Incident.id, sort_by_parameter_order=True),
            [{**_incident_row(i), "class_id": class_id} for i, class_id in zip(opened, classes, strict=True)],
        ).scalars().all()
        for incident, new_id in zip(opened, new_ids, strict=True):
            incident.id = new_id
    connection = db.connection()
    update_rows(connection, Incident.__table__, "id",
                ("event_count", "last_seen_at", "severity", "window_ends_at"),
                [(i.id, i.event_count, i.last_seen_at, i.severity, i.window_ends_at) for i in grown])
    now = utcnow()
    timeline = [(i.id, SYSTEM, "opened", now, {"event_id": i.opened_by.event.event_id or None,
                                               "rule": i.opened_by.draft.rule,
                                               "count": i.event_count - i.added}) for i in opened]
    timeline += [(i.id, SYSTEM, "events_added", now, {"count": i.added, "total": i.event_count})
                 for i in touched if i.added and not i.ongoing]
    insert_rows(connection, TimelineEntry.__table__, ("incident_id", "actor", "action", "at", "detail"),
                timeline)
    insert_rows(connection, IncidentEvent.__table__, ("incident_id", "event_id"),
                [(i.id, event_id) for i in touched for event_id in i.members if event_id])
    # Who must be told: rows written in bulk like the rest (one ORM object per notice made a
    # batch of new incidents cost twice as much: benchmarks/chaos/RESULTS.md "drain").
    bundles = _BundleCache(db)
    notices = [notice for incident in opened for role in incident.opened_by.draft.notify
               for notice in _notify(db, incident.id, role, incident.opened_by.draft,
                                     incident.opened_by.event, bundles)]
    insert_rows(connection, Notification.__table__, ("incident_id", "person_id", "role", "created_at"),
                [(incident_id, person_id, role, now) for incident_id, person_id, role, _to in notices])
    insert_rows(connection, TimelineEntry.__table__, ("incident_id", "actor", "action", "at", "detail"),
                [(incident_id, SYSTEM, "notified", now, {"role": role, "to": to})
                 for incident_id, _person_id, role, to in notices])


def _classes_at(db: Session, opened: list[_Incident]) -> list[int | None]:
    """The class each new incident is about (scope: a teacher sees the incidents of the classes
    they teach, docs/security.md): the class of the student's own OS account where the school
    mapped it (`student_accounts`), else the class whose timetable period ran in the
    workstation's room when the incident began — the students at the seats then are that
    class's (the seating plan names them).  The same order as `timetable.class_at`, which the
    class-teacher notice uses; here three queries per batch: accounts, rooms, their periods."""
    from policy_server.timetable.models import Period, StudentAccount
    from policy_server.timetable.service import local_now

    users = {i.opened_by.event.os_user for i in opened if i.opened_by.event.os_user}
    class_of_account = dict(db.execute(select(StudentAccount.os_user, StudentAccount.class_id).where(
        StudentAccount.os_user.in_(sorted(users)))).all()) if users else {}
    agents = {i.opened_by.event.agent_id for i in opened if i.opened_by.event.agent_id}
    if not agents:
        return [class_of_account.get(i.opened_by.event.os_user) for i in opened]
    room_of = dict(db.execute(select(Workstation.id, Workstation.room_id).where(
        Workstation.id.in_(sorted(agents)), Workstation.room_id.is_not(None))).all())
    periods: dict[int, list[Period]] = defaultdict(list)
    if room_of:
        for period in db.scalars(select(Period).where(Period.room_id.in_(sorted(set(room_of.values()))),
                                                      Period.class_id.is_not(None))):
            periods[period.room_id].append(period)
    classes: list[int | None] = []
    for incident in opened:
        if (own := class_of_account.get(incident.opened_by.event.os_user)) is not None:
            classes.append(own)
            continue
        room_id = room_of.get(incident.opened_by.event.agent_id)
        local = local_now(incident.first_seen_at)
        hhmm = local.strftime("%H:%M")
        classes.append(next((p.class_id for p in periods.get(room_id, ())
                             if p.weekday == local.weekday() and p.starts <= hhmm < p.ends), None))
    return classes


def _incident_row(incident: _Incident) -> dict:
    draft, event = incident.opened_by.draft, incident.opened_by.event
    return {
        "rule": draft.rule, "title": draft.title[:300], "params": draft.params, "severity": incident.severity,
        "clauses": list(draft.clauses), "dedup_key": draft.dedup_key[:_KEY_LEN], "status": IncidentStatus.new,
        "agent_id": event.agent_id, "seat": event.seat, "os_user": event.os_user,
        "first_seen_at": incident.first_seen_at, "last_seen_at": incident.last_seen_at,
        "window_ends_at": incident.window_ends_at, "event_count": incident.event_count,
        "created_at": utcnow(),
    }


def _notify(db: Session, incident_id: int, role: str, draft: IncidentDraft, event: RuleInput,
            bundles: _BundleCache) -> list[tuple[int, int | None, str, str]]:
    """Whom to tell of a new incident: (incident, person or None, role, to) each; the class
    teacher(s) also get their notice (badge, list, e-mail) here.  Empty when no class teacher
    is known: the responsible person still sees the incident."""
    if role != "class_teacher":
        return [(incident_id, None, role, role)]
    told = []
    for person, class_name in _class_teachers(db, draft, event, bundles):
        _class_teacher_notice(db, person, class_name, incident_id, draft, event)
        told.append((incident_id, person.id, role, person.username))
    return told


def _class_teachers(db: Session, draft: IncidentDraft, event: RuleInput,
                    bundles: _BundleCache) -> list[tuple[Person, str]]:
    """The class teacher(s) of the student's class (001 §2.7): the class from the student's own OS
    account, else from the lesson or timetable period running in the seat's room at the time
    (`timetable.class_at`), and its class teachers from `person_classes`.  Only where neither
    names a class does the policy group's `class_teacher` username still count (schools that
    have not entered their classes yet)."""
    from policy_server.timetable.service import class_at, class_teachers

    cls = class_at(db, os_user=event.os_user, agent_id=event.agent_id, at=event.occurred_at)
    if cls is not None:
        return [(person, cls.name) for person in class_teachers(db, cls.id)]
    bundle = bundles.get()
    group_name = draft.params.get("group") or bundle.group_of(event.os_user)
    group = next((g for g in bundle.groups if g.name == group_name), None)
    if group is None or not group.class_teacher:
        return []
    person = db.scalar(select(Person).where(Person.username == group.class_teacher))
    return [] if person is None or person.disabled else [(person, group.name)]


def _class_teacher_notice(db: Session, person: Person, class_name: str, incident_id: int,
                          draft: IncidentDraft, event: RuleInput) -> None:
    """The notice (badge, list, e-mail where an address and SMTP exist) in the person's language."""
    from policy_server.notices.service import notify
    from policy_server.web.i18n import DEFAULT_LANGUAGE, N_
    from policy_server.web.presenters import incident_title

    language = person.language or DEFAULT_LANGUAGE
    title = incident_title(language, draft.rule, draft.params, draft.title)
    notify(db, person_id=person.id, kind="incident.class_teacher",
           subject_id=N_("Class %(cls)s: %(title)s (001 §2.7)"),
           body_id=N_("A student of your class, account %(who)s at seat %(seat)s: %(title)s. "
                      "Incident #%(id)s in the console."),
           params={"cls": class_name, "who": event.os_user or "—", "seat": event.seat or "—",
                   "id": incident_id, "title": title},
           link=f"/incidents/{incident_id}")
