"""Retention of the student's OS account in the audit of the class list (001 §2.15, 004 §3.6).

Linking a student's own OS account to a class (`set_student_account`) writes the account into
the audit log (`timetable.student_account`, detail `os_user`).  The audit log is kept (004
§3.6), but past the retention days the minor's account goes: `os_user` becomes None and the
record says `account_removed` (the audit page: "student's computer account removed (001
§2.15)"); who acted, when and the class (`target`) stay.  The link itself
(`student_accounts`) is the school's working class list, not a record of the past, and stays
while the school keeps it.  Run by `policy_server.db.retention`; a done record no longer
matches, so a second run changes nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from policy_server.db.models import AuditRecord
from policy_server.web.i18n import N_, translate

ACTION = "timetable.student_account"
REMOVED_KEY = "account_removed"  # shown on the audit page (fleet/audit_texts.py DETAIL_KEYS)
# The retention command's line (policy_server.db.retention.personal_lines; fleet's catalog,
# beside the audit page's texts).
PLAN_LINE = N_("audit records of students' computer accounts linked to a class losing the account "
               "(the records stay): %(count)s")


def _old(cutoff: datetime):
    return (AuditRecord.action == ACTION, AuditRecord.at < cutoff,
            AuditRecord.detail["os_user"].as_string().is_not(None))


def retention_count(db: Session, *, cutoff: datetime) -> int:
    """How many such audit records past the cut-off still name the account; changes nothing."""
    return db.scalar(select(func.count()).select_from(AuditRecord).where(*_old(cutoff))) or 0


def apply_retention(db: Session, *, cutoff: datetime) -> int:
    """Empty the account in those records (the caller commits)."""
    records = list(db.scalars(select(AuditRecord).where(*_old(cutoff)).order_by(AuditRecord.id)))
    for record in records:
        record.detail = {**(record.detail or {}), "os_user": None, REMOVED_KEY: True}  # a new dict
    db.flush()
    return len(records)


def plan_line(language: str, count: int) -> str:
    return translate(language, PLAN_LINE, count=f"{count:,}")
