"""Retention of the student in the audit of a teacher's lesson actions (001 §2.15, 004 §3.6).

A ban, an unban, a lock or an unlock of one seat writes the seat and, for a ban by OS
account, the student's account into the audit log (`lesson.ban` …) and, through
`sync_bundle`, into the comment of the policy amendment it makes ("lesson L: ban s3", kept
in the `policy.amend` record's detail and in the policy history).  The audit log is kept
(004 §3.6), but past the retention days the minor's identity goes: the seat and account
become empty, who acted, when, on which lesson and what stays.  A whole-room lock ("*",
"all") names nobody and stays as it is.  Run by `policy_server.db.retention`; each record is
done once (a done one no longer matches), so a second run changes nothing.

The policy versions' bundles list the bans of their time (seat, account, the teacher's
reason) and the lessons' locked seats.  Past the same days, every version but the newest (the
one in force, never touched: a ban in force keeps working) loses them: each ban's seat and
account become None and its reason "" (its id, end, who, room and lesson stay), a ban the
responsible person made outside a lesson too (it names a student the same way), and a lesson's
`locked_seats` keep only the whole-room "*".  The stored `content_hash` stays what was sent to
the agents then, so such an old bundle no longer matches it; nothing checks an old version's
hash (the push, the ETag and the agents only ever use the newest; the history page's diff and
rollback read the groups and filtering, which stay as they were).

The version in force keeps a ban that ended until the policy next changes (`sync_bundle`
drops ended ones), and an amendment made meanwhile carries it along.  So a ban or lesson of
the policy in force that ended before the cut-off and still names a student is taken out by a
new version (`amend_policy`, pushed to the agents as any change: they no longer enforce it
anyway), and its student out of every version that carried it, however recent.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import Text, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.db.models import AuditRecord, PolicyVersion
from policy_server.policies.service import amend_policy

# The lesson actions whose audit detail names a student, and the fields that do.
STUDENT_FIELDS = {"lesson.ban": ("seat", "os_user"), "lesson.unban": ("seat",),
                  "lesson.lock": ("seat",), "lesson.unlock": ("seat",)}
WHOLE_ROOM = ("*", "all")
REMOVED_KEY = "personal_removed"  # shown on the audit page ("student's seat and account removed")
# `sync_bundle`'s comments (lessons/service.py): "lesson <id>: ban <seat or account>" …
_COMMENT = re.compile(r"(lesson \S+: (?:ban|unban|lock|unlock)) (.+)", re.S)
_COMMENT_LIKES = ("lesson %: ban %", "lesson %: unban %", "lesson %: lock %", "lesson %: unlock %")


def _names_someone(field):
    return and_(field.is_not(None), field.not_in(WHOLE_ROOM))


def _action_query(cutoff: datetime):
    seat = AuditRecord.detail["seat"].as_string()
    os_user = AuditRecord.detail["os_user"].as_string()
    return select(AuditRecord).where(AuditRecord.action.in_(list(STUDENT_FIELDS)), AuditRecord.at < cutoff,
                                     or_(_names_someone(seat), os_user.is_not(None)))


def _comment_query(model, column, at, cutoff: datetime):
    return select(model).where(at < cutoff, or_(*(column.like(p) for p in _COMMENT_LIKES)),
                               column.not_like("%: lock *"), column.not_like("%: unlock all"))


def _scrubbed_comment(comment: str | None) -> str | None:
    """The comment without the seat or account; None when it names nobody."""
    found = _COMMENT.fullmatch(comment or "")
    if not found or found.group(2) in WHOLE_ROOM:
        return None
    return found.group(1)


def _old(db: Session, cutoff: datetime) -> tuple[list[AuditRecord], list[AuditRecord], list[PolicyVersion]]:
    actions = list(db.scalars(_action_query(cutoff)))
    comment = AuditRecord.detail["comment"].as_string()
    amends = [r for r in db.scalars(_comment_query(AuditRecord, comment, AuditRecord.at, cutoff)
                                    .where(AuditRecord.action == "policy.amend"))
              if _scrubbed_comment((r.detail or {}).get("comment")) is not None]
    versions = [v for v in db.scalars(_comment_query(PolicyVersion, PolicyVersion.comment,
                                                     PolicyVersion.created_at, cutoff))
                if _scrubbed_comment(v.comment) is not None]
    return actions, amends, versions


def retention_counts(db: Session, *, cutoff: datetime) -> tuple[int, int]:
    """(audit records, policy-history comments) that still name a student; changes nothing."""
    actions, amends, versions = _old(db, cutoff)
    return len(actions) + len(amends), len(versions)


def apply_retention(db: Session, *, cutoff: datetime) -> tuple[int, int]:
    """Empty the student's seat and account in the old records (the caller commits)."""
    actions, amends, versions = _old(db, cutoff)
    for record in actions:
        detail = dict(record.detail or {})
        for name in STUDENT_FIELDS[record.action]:
            if detail.get(name) not in WHOLE_ROOM:
                detail[name] = None
        detail[REMOVED_KEY] = True
        record.detail = detail  # a new dict: the JSON column sees the change
    for record in amends:
        record.detail = {**record.detail, "comment": _scrubbed_comment(record.detail["comment"]),
                         REMOVED_KEY: True}
    for version in versions:
        version.comment = _scrubbed_comment(version.comment)
    db.flush()
    return len(actions) + len(amends), len(versions)


def _scrubbed_bundle(bundle: dict, only: set[str] | None = None) -> dict | None:
    """The bundle without the students' seats, accounts and ban reasons (of the bans and lessons
    whose ids are in `only`, when given); None when it names nobody."""
    changed = False
    bans = []
    for ban in bundle.get("bans") or []:
        if only is not None and ban.get("id") not in only:
            pass
        elif ban.get("seat") is not None or ban.get("os_user") is not None or ban.get("reason"):
            ban, changed = {**ban, "seat": None, "os_user": None, "reason": ""}, True
        bans.append(ban)
    lessons = []
    for lesson in bundle.get("lessons") or []:
        seats = lesson.get("locked_seats") or []
        if only is not None and lesson.get("id") not in only:
            pass
        elif any(seat not in WHOLE_ROOM for seat in seats):
            lesson, changed = {**lesson, "locked_seats": [s for s in seats if s in WHOLE_ROOM]}, True
        lessons.append(lesson)
    return {**bundle, "bans": bans, "lessons": lessons} if changed else None


def _old_bundles(db: Session, cutoff: datetime) -> list[tuple[PolicyVersion, dict]]:
    """Versions made before the cut-off, except the newest (in force), that still name a student."""
    newest = select(func.max(PolicyVersion.version)).scalar_subquery()
    # Only the rows that may still name someone are read (the history grows by a version per
    # lesson action, and this runs every day): a ban always has a seat or an account (both
    # routes refuse one without), so a ban naming a student shows as `"seat": "…` or
    # `"os_user": "…` in the stored JSON's text, the same on SQLite (json.dumps) and
    # PostgreSQL (jsonb's text); a lesson's locked seats as `"locked_seats": ["…`.  The check
    # below decides.
    text = cast(PolicyVersion.bundle, Text)
    maybe = or_(text.like('%"seat": "%'), text.like('%"os_user": "%'), text.like('%"locked_seats": ["%'))
    found = []
    for version in db.scalars(select(PolicyVersion).where(PolicyVersion.created_at < cutoff,
                                                          PolicyVersion.version < newest, maybe)
                              .order_by(PolicyVersion.version)):
        scrubbed = _scrubbed_bundle(version.bundle or {})
        if scrubbed is not None:
            found.append((version, scrubbed))
    return found


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def ended_in_force(db: Session, *, cutoff: datetime) -> set[str]:
    """The ids of the bans and lessons in the policy in force that ended before the cut-off and
    still name a student (a seat, an account, a reason; a lesson's locked seats).  The version
    in force keeps them until the policy next changes (`sync_bundle` drops ended ones then), so
    in a school whose policy stays the same the minor's ban would outlive every retention."""
    # (the column alone: one bundle read a day, no row loaded into the session)
    bundle = db.scalar(select(PolicyVersion.bundle).order_by(PolicyVersion.version.desc()).limit(1)) or {}
    ended = {ban["id"] for ban in bundle.get("bans") or []
             if _at(ban["until"]) < cutoff and (ban.get("seat") or ban.get("os_user") or ban.get("reason"))}
    ended |= {lesson["id"] for lesson in bundle.get("lessons") or []
              if _at(lesson["ends_at"]) < cutoff
              and any(seat not in WHOLE_ROOM for seat in lesson.get("locked_seats") or [])}
    return ended


def _to_scrub(db: Session, cutoff: datetime, ended: set[str]) -> list[tuple[PolicyVersion, dict]]:
    """`_old_bundles`, and every version that still names a student through one of the `ended`
    bans or lessons, however recent (an amendment made after a ban ended carried it along)."""
    found = {version.version: (version, scrubbed) for version, scrubbed in _old_bundles(db, cutoff)}
    if ended:
        text = cast(PolicyVersion.bundle, Text)
        maybe = or_(*(text.like(f'%"{ident}"%') for ident in sorted(ended)))
        for version in db.scalars(select(PolicyVersion).where(maybe).order_by(PolicyVersion.version)):
            base = found[version.version][1] if version.version in found else (version.bundle or {})
            scrubbed = _scrubbed_bundle(base, only=ended)
            if scrubbed is not None:
                found[version.version] = (version, scrubbed)
    return [found[number] for number in sorted(found)]


def bundle_retention_count(db: Session, *, cutoff: datetime) -> tuple[int, int]:
    """(the ended bans and lessons the policy in force would lose, the policy versions whose
    bundle would lose the students); changes nothing."""
    ended = ended_in_force(db, cutoff=cutoff)
    return len(ended), len(_to_scrub(db, cutoff, ended))


def apply_bundle_retention(db: Session, *, actor: str, days: int, cutoff: datetime) -> tuple[int, int]:
    """Take the ended bans and lessons out of the policy in force (a new version, pushed to the
    agents as any change), then the students out of the old bundles (the caller commits);
    each old version's `content_hash` stays what was sent then."""
    ended = ended_in_force(db, cutoff=cutoff)
    if ended:
        def change(bundle: protocol.PolicyBundle) -> protocol.PolicyBundle:
            bundle.bans = [ban for ban in bundle.bans if ban.id not in ended]
            bundle.lessons = [lesson for lesson in bundle.lessons if lesson.id not in ended]
            return bundle

        amend_policy(db, actor=actor, change=change,
                     comment=f"retention: {len(ended)} bans and lessons that ended more than {days} days "
                             f"ago taken out of the policy in force (001 §2.15)")
        db.flush()
    found = _to_scrub(db, cutoff, ended)
    for version, scrubbed in found:
        version.bundle = scrubbed  # a new dict: the JSON column sees the change
    db.flush()
    return len(ended), len(found)
