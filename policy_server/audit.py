"""The audit trail (004 §3.6): one `AuditRecord` per admin action, never deleted."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from policy_server.db.models import AuditRecord


def audit(db: Session, *, actor: str, action: str, target: str = "", detail: dict[str, Any] | None = None
          ) -> AuditRecord:
    """Add an audit record to the session (committed with the change it describes)."""
    record = AuditRecord(actor=actor, action=action, target=target, detail=detail or {})
    db.add(record)
    return record
