"""Retention of the student in the audit of a teacher's lesson actions (001 §2.15, 004 §3.6).

A ban, an unban, a lock or an unlock of one seat writes the seat and, for a ban by OS
account, the student's account into the audit log (`lesson.ban` …) and, through
`sync_bundle`, into the comment of the policy amendment it makes ("lesson L: ban s3", kept
in the `policy.amend` record's detail and in the policy history).  The audit log is kept
(004 §3.6), but past the retention days the minor's identity goes: the seat and account
become empty, who acted, when, on which lesson and what stays.  A whole-room lock ("*",
"all") names nobody and stays as it is.  Run by `policy_server.db.retention`; each record is
done once (a done one no longer matches), so a second run changes nothing.

The policy versions' bundles themselves still list the bans of their time (seat, account,
the teacher's reason): they are sealed by their content hash and are left as they are.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from policy_server.db.models import AuditRecord, PolicyVersion

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
