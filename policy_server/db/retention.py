"""Retention of the records of minors' internet use (001 §2.15), never silent (004 §3.6).

Every event that says what a person did on the internet is personal data of minors, kept only
as long as needed (default 90 days, `--days`): `RETAINED_TYPES`, one list —

* `web.usage` (the sites visited, counted per domain), `web.blocked` (pages tried and refused);
* `web.alert` (the search query or page over the alert threshold: the query text itself);
* `web.unblock_request` (a page a student asked to see, with the student's reason),
  `web.report` (a page a student reported as bad, with the comment);
* `net.bypass` (attempts around the proxy: the destination, per seat and OS user).

The fleet's and security events stay (000 §3.2, §4.2, §5.4, §5.6, §6.5, §6.8; 004 §3.6):
heartbeats, upgrades, antivirus, USB, integrity, software, idle locking, ARP spoofing, rogue
DHCP/RA, and `isuo.session` (the ISUO access log the regulation asks for, not a child's
browsing).  `lesson.activity` is never stored as an event (lessons/activity.py).

What `apply_retention` does, in one transaction:

* folds report / unblock events the report queue has not seen yet into it (a report is never
  lost unread), then removes the events of `RETAINED_TYPES` older than the cut-off (by
  `occurred_at`), except the ones an unresolved incident holds: the responsible person still
  needs them;
* removes the report queue's per-report copies of the removed events (`filter_request_events`:
  the URL as typed, seat, time) and, from queue items decided before the cut-off whose last
  report is older too, the seats and the students' comments (the item keeps the URL, the
  counts and the decision: the school's filtering record, no longer tied to a child);
  undecided items stay whole until the responsible person decides them (000 §8.3);
* takes the students out of the summaries of lessons that ended before the cut-off (names,
  seats, OS accounts, the bans' reasons; lessons/summary.py): the counts, the class's blocked
  sites and the allowed sites stay.  (The lesson's raw activity is already deleted when its
  summary is made.)
* takes the students out of the notices that named them to a class teacher (a lesson's
  repeated attempts, a new incident about a student of the class; notices/retention.py)
  created before the cut-off: the text is written again with the room, class, counts and
  incident, without the name, account or seat, and the page says why;
* empties the seat and OS account in the audit records of a teacher's lesson actions (ban,
  unban, lock, unlock of one seat) and in the comments of the policy amendments they made,
  written before the cut-off (lessons/audit_retention.py): the audit log itself stays
  (004 §3.6) with who acted, when, the lesson and the action;
* takes the bans and lessons that ended before the cut-off and still name a student out of
  the policy in force, by a new version pushed as any change (lessons/audit_retention.py),
  and their students out of every older version that carried them;
* takes the students out of the bundles of the policy versions made before the cut-off, all
  but the newest (the one in force stays whole): each ban's seat, OS account and reason, and
  the lessons' locked seats (lessons/audit_retention.py); the recorded `content_hash` stays
  what was sent then, so such a bundle no longer matches it (nothing checks an old one's);
* takes the student's OS account out of the *resolved* incidents whose last activity is
  before the cut-off (`os_user`, and the account wherever it is written in the incident's
  params, title, dedup key, timeline and resolution; incidents/retention.py): the rule,
  severity, clauses, counts, times, seat, workstation and resolution stay, and the page says
  the account was removed after N days; an open incident keeps it until it is resolved;
* empties the student's OS account in the audit records of linking it to a class
  (`timetable.student_account`, written before the cut-off; timetable/audit_retention.py);
* for events held by *resolved* incidents, removes the link too and writes one timeline
  entry on each such incident ("events_removed", how many, why); the incident itself, its
  counts, first/last seen and parameters stay: incidents are never deleted;
* records one `AuditRecord` ("retention.applied") with the cut-off and what was removed.

On PostgreSQL with the events partitioned by month (revision `0402_events_by_month`,
events/partitions.py) the bulk of the removal is `DROP TABLE` of each browsing month that
ends before the cut-off (rows an open incident holds are moved to the browsing default
partition first); the rows of the month the cut-off falls in are deleted as before, so the
kept time stays exact to the second.  SQLite keeps the DELETE.

`plan_retention` answers the same questions without changing anything (the CLI's default,
dry run).  Month partitions only ever hold `web.usage`/`web.blocked` (`events_browsing`); the
other retained types live in `events_other` beside the security events and are DELETEd.

The server applies it itself once a day (`retention_jobs`, the job `retention.browsing`, run by
the checks' leader: `KALKAN_RETENTION_INTERVAL_S`, 0 = off), keeping `KALKAN_RETENTION_DAYS`
(default 90): a school that never set up the cron line used to keep these records forever.  A
day with nothing to remove writes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.models import Event, Incident, IncidentEvent, IncidentStatus, TimelineEntry, utcnow
from policy_server.errors import InvalidInput, KalkanError
from policy_server.filtering import queue
from policy_server.incidents import retention as incident_accounts
from policy_server.lessons import audit_retention as lesson_audit
from policy_server.lessons import summary as lesson_summaries
from policy_server.notices import retention as notices
from policy_server.timetable import audit_retention as account_audit
from policy_server.web.i18n import N_, translate

# The records of a person's internet use (001 §2.15): removed past the days.
RETAINED_TYPES = ("web.usage", "web.blocked", "web.alert", "web.unblock_request", "web.report", "net.bypass")
# The fleet's and the school's security record, kept (000 §3.2, §4.2, §5.4–5.6, §6.4–6.8; 004 §3.6).
# Every event type is in exactly one of the two lists (a test holds new types to that), except
# `lesson.activity`, which is never stored as an event.
KEPT_TYPES = ("agent.heartbeat", "agent.events_dropped", "agent.upgrade", "isuo.session",
              "av.health", "av.scan.started", "av.scan.progress", "av.scan.completed", "av.threat",
              "usb.connected", "usb.blocked", "usb.allowed", "integrity.changed", "integrity.baseline",
              "integrity.tampered", "software.changed", "idle.locked", "idle.lock_failed",
              "net.arp_spoof", "net.rogue_dhcp", "net.rogue_ra")
DEFAULT_DAYS = 90
REASON = "retention of records of minors' internet use (001 §2.15)"


@dataclass
class RetentionPlan:
    days: int
    cutoff: datetime
    removable: dict[str, int] = field(default_factory=dict)  # event type → events to remove
    kept_for_open_incidents: int = 0
    incidents_affected: dict[int, int] = field(default_factory=dict)  # resolved incident → links removed
    partitions_dropped: list[str] = field(default_factory=list)  # PostgreSQL: browsing months dropped whole
    queue_copies: int = 0  # report queue: per-report copies (URL as typed, seat, time) removed
    queue_items_scrubbed: int = 0  # report queue: decided items losing their seats and comments
    lessons_depersonalised: int = 0  # lesson summaries losing students' names and seats
    notices_depersonalised: int = 0  # class teachers' notices losing the student's name, account, seat
    audit_records_scrubbed: int = 0  # lesson actions' audit records losing the seat and account
    policy_comments_scrubbed: int = 0  # policy history comments of those actions, the same
    policy_bundles_scrubbed: int = 0  # old policy versions (not the one in force) losing the bans' students
    policy_ended_removed: int = 0  # bans and lessons ended before the cut-off, out of the policy in force
    incidents_depersonalised: int = 0  # old resolved incidents losing the student's OS account
    account_records_scrubbed: int = 0  # `timetable.student_account` audit records losing the account

    @property
    def total(self) -> int:
        return sum(self.removable.values())

    @property
    def anything(self) -> bool:
        return bool(self.total or self.queue_copies or self.queue_items_scrubbed
                    or self.lessons_depersonalised or self.notices_depersonalised
                    or self.audit_records_scrubbed or self.policy_comments_scrubbed
                    or self.policy_bundles_scrubbed or self.policy_ended_removed
                    or self.incidents_depersonalised or self.account_records_scrubbed)

    def lines(self) -> list[str]:
        out = [f"records of internet use older than {self.days} days "
               f"(before {self.cutoff:%Y-%m-%d %H:%M} UTC):"]
        out += [f"  {t}: {self.removable.get(t, 0):,}" for t in RETAINED_TYPES]
        out.append(f"  kept because an open incident holds them: {self.kept_for_open_incidents:,}")
        out.append(f"  resolved incidents losing their raw events (the incidents stay): "
                   f"{len(self.incidents_affected):,}")
        out.append(f"  report queue: copies of reports removed: {self.queue_copies:,}; decided items "
                   f"losing seats and comments: {self.queue_items_scrubbed:,}")
        out.append(f"  lesson summaries losing students' names and seats (the counts stay): "
                   f"{self.lessons_depersonalised:,}")
        out += personal_lines(self, "en")
        return out


def check_days(days: int) -> int:
    if not isinstance(days, int) or days < 1:
        raise InvalidInput(f"retention days must be a whole number of at least 1, not {days!r}; "
                           f"the default is {DEFAULT_DAYS}",
                           code="retention.bad_days", params={"days": days, "default": DEFAULT_DAYS})
    return days


def _held_by_open_incident():
    return (select(IncidentEvent.event_id).join(Incident, Incident.id == IncidentEvent.incident_id)
            .where(Incident.status != IncidentStatus.resolved))


def _old_records(cutoff: datetime):
    return (Event.type.in_(RETAINED_TYPES), Event.occurred_at < cutoff)


def _removable_ids(cutoff: datetime):
    """Old records of internet use that no unresolved incident holds."""
    return select(Event.id).where(*_old_records(cutoff), Event.id.not_in(_held_by_open_incident()))


def plan_retention(db: Session, *, days: int = DEFAULT_DAYS, now: datetime | None = None) -> RetentionPlan:
    """What `apply_retention` would remove now; changes nothing."""
    days = check_days(days)
    cutoff = (now or utcnow()) - timedelta(days=days)
    old = _old_records(cutoff)
    held = _held_by_open_incident()
    removable_ids = _removable_ids(cutoff)
    plan = RetentionPlan(days=days, cutoff=cutoff)
    plan.removable = dict(db.execute(
        select(Event.type, func.count()).where(*old, Event.id.not_in(held)).group_by(Event.type)).all())
    plan.kept_for_open_incidents = db.scalar(select(func.count()).select_from(Event)
                                             .where(*old, Event.id.in_(held))) or 0
    plan.incidents_affected = dict(db.execute(
        select(IncidentEvent.incident_id, func.count()).where(IncidentEvent.event_id.in_(removable_ids))
        .group_by(IncidentEvent.incident_id)).all())
    plan.queue_copies, plan.queue_items_scrubbed = queue.retention_counts(
        db, cutoff=cutoff, keep_event_ids=held)
    plan.lessons_depersonalised = lesson_summaries.retention_count(db, cutoff=cutoff)
    plan.notices_depersonalised = notices.retention_count(db, cutoff=cutoff)
    plan.audit_records_scrubbed, plan.policy_comments_scrubbed = lesson_audit.retention_counts(
        db, cutoff=cutoff)
    plan.policy_ended_removed, plan.policy_bundles_scrubbed = lesson_audit.bundle_retention_count(
        db, cutoff=cutoff)
    plan.incidents_depersonalised = incident_accounts.retention_count(db, cutoff=cutoff)
    plan.account_records_scrubbed = account_audit.retention_count(db, cutoff=cutoff)
    return plan


def apply_retention(db: Session, *, actor: str, days: int = DEFAULT_DAYS,
                    now: datetime | None = None) -> RetentionPlan:
    """Remove what the plan says, with a timeline entry per affected incident and one audit
    record; the caller commits (all or nothing)."""
    queue.fold_all(db)  # a report or unblock request is never removed before the queue has it
    plan = plan_retention(db, days=days, now=now)
    removable_ids = _removable_ids(plan.cutoff)
    no_sync = {"synchronize_session": False}  # bulk DELETEs: nothing of these is loaded in the session
    if plan.incidents_affected:
        db.execute(delete(IncidentEvent).where(IncidentEvent.event_id.in_(removable_ids)),
                   execution_options=no_sync)
    dropped = _drop_old_months(db, plan.cutoff) if plan.total else []
    if plan.total:
        # The links to resolved incidents are gone, those to open ones were never selected.
        db.execute(delete(Event).where(Event.id.in_(removable_ids)), execution_options=no_sync)
    queue.apply_retention(db, cutoff=plan.cutoff, keep_event_ids=_held_by_open_incident())
    at = utcnow()
    # Before the summaries: a notice stored without its counts takes them from its lesson's summary.
    notices.apply_retention(db, cutoff=plan.cutoff, now=at)
    lesson_summaries.apply_retention(db, cutoff=plan.cutoff)
    lesson_audit.apply_retention(db, cutoff=plan.cutoff)
    lesson_audit.apply_bundle_retention(db, actor=actor, days=plan.days, cutoff=plan.cutoff)
    incident_accounts.apply_retention(db, cutoff=plan.cutoff, days=plan.days, actor=actor, now=at)
    account_audit.apply_retention(db, cutoff=plan.cutoff)
    for incident_id, count in sorted(plan.incidents_affected.items()):
        db.add(TimelineEntry(incident_id=incident_id, actor=actor, action="events_removed", at=at,
                             detail={"count": count, "reason": REASON, "days": plan.days}))
    audit(db, actor=actor, action="retention.applied", target="events",
          detail={"days": plan.days, "cutoff": plan.cutoff.isoformat(), "removed": plan.removable,
                  "total": plan.total, "kept_for_open_incidents": plan.kept_for_open_incidents,
                  "incidents_affected": len(plan.incidents_affected), "partitions_dropped": dropped,
                  "queue_copies_removed": plan.queue_copies,
                  "queue_items_scrubbed": plan.queue_items_scrubbed,
                  "lessons_depersonalised": plan.lessons_depersonalised,
                  "notices_depersonalised": plan.notices_depersonalised,
                  "audit_records_scrubbed": plan.audit_records_scrubbed,
                  "policy_comments_scrubbed": plan.policy_comments_scrubbed,
                  "policy_bundles_scrubbed": plan.policy_bundles_scrubbed,
                  "policy_ended_removed": plan.policy_ended_removed,
                  "incidents_depersonalised": plan.incidents_depersonalised,
                  "account_records_scrubbed": plan.account_records_scrubbed,
                  "clauses": ["001 §2.15", "004 §3.6"]})
    plan.partitions_dropped = dropped
    return plan


# The CLI's lines for the records added after its catalog was made: their texts are in the
# notices' own catalog (policy_server/notices/locale), the CLI asks for them in its language.
NOTICES_LINE = N_("class teachers' notices losing the student's name, account and seat (the counts "
                  "stay): %(count)s")
AUDIT_LINE = N_("audit records of lesson actions losing the student's seat and account (the records "
                "stay): %(count)s; policy history comments: %(comments)s")
BUNDLES_LINE = N_("old policy versions losing the students' seats, accounts and ban reasons (the "
                  "version in force stays whole): %(count)s")
# (in the lessons' catalog, policy_server/lessons/locale)
ENDED_LINE = N_("bans and lessons that ended before the cut-off, taken out of the policy in force (a new "
                "version goes to the seats): %(count)s")


def personal_lines(plan: RetentionPlan, language: str) -> list[str]:
    return ["  " + translate(language, NOTICES_LINE, count=f"{plan.notices_depersonalised:,}"),
            "  " + translate(language, AUDIT_LINE, count=f"{plan.audit_records_scrubbed:,}",
                             comments=f"{plan.policy_comments_scrubbed:,}"),
            "  " + translate(language, BUNDLES_LINE, count=f"{plan.policy_bundles_scrubbed:,}"),
            "  " + translate(language, ENDED_LINE, count=f"{plan.policy_ended_removed:,}"),
            "  " + incident_accounts.plan_line(language, plan.incidents_depersonalised),
            "  " + account_audit.plan_line(language, plan.account_records_scrubbed)]


def _drop_old_months(db: Session, cutoff: datetime) -> list[str]:
    """PostgreSQL, partitioned: drop every browsing month wholly before the cut-off (keeping
    the rows open incidents hold); returns the partitions dropped.  Elsewhere: nothing.
    Only `events_browsing` months are ever dropped (they hold `web.usage`/`web.blocked` and
    nothing else); the retained types in `events_other` go by the DELETE that follows."""
    from policy_server.events import partitions

    connection = db.connection()
    if not partitions.is_partitioned(connection):
        return []
    if not set(partitions.BROWSING_TYPES) <= set(RETAINED_TYPES):  # a whole month holds only these
        raise RuntimeError(f"events_browsing holds {partitions.BROWSING_TYPES}, not all retained")
    held = str(_held_by_open_incident().compile(dialect=connection.dialect,
                                                compile_kwargs={"literal_binds": True}))
    dropped = []
    for month in partitions.droppable_browsing(connection, cutoff=cutoff):
        partitions.drop_browsing_month(connection, month, keep_ids_sql=held)
        dropped.append(month.name)
    return dropped


def days_from_env() -> int:
    """`KALKAN_RETENTION_DAYS` (the server's job and the command), else DEFAULT_DAYS."""
    raw = os.environ.get("KALKAN_RETENTION_DAYS", "").strip()
    if not raw:
        return DEFAULT_DAYS
    if not raw.isdigit():
        raise KalkanError(f"KALKAN_RETENTION_DAYS={raw!r} is not a whole number of days; e.g. 90",
                          code="cli.bad_retention_days_env", params={"value": raw})
    return check_days(int(raw))


def retention_jobs(settings) -> list:
    """The daily retention as a job of the server's scheduler (none when switched off)."""
    from policy_server.checks.scheduler import Job

    interval_s = float(getattr(settings, "retention_interval_s", 0))
    if interval_s <= 0:
        return []
    days = days_from_env()  # (a wrong value stops the start, with the fix: never kept longer unseen)

    def run(db: Session, now: datetime) -> int:
        if not plan_retention(db, days=days, now=now).anything:
            return 0  # nothing to remove: no audit record for every quiet day
        plan = apply_retention(db, actor="server", days=days, now=now)
        db.commit()
        return plan.total

    return [Job(name="retention.browsing", interval_s=interval_s, run=run)]
