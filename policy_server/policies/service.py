"""The school's policy: an append-only list of versions, the newest in force.

`amend_policy` is the only way to change it: it takes the current bundle, applies a pure
`change` function, validates the result, bumps the version, seals the content hash, writes
an audit record and — once the caller commits — pushes the new version to the agents.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.audit import audit
from policy_server.db.models import PolicyVersion, utcnow
from policy_server.db.session import is_sqlite
from policy_server.errors import InvalidInput
from policy_server.policies.push import schedule_push


def current_row(db: Session, *, for_update: bool = False) -> PolicyVersion | None:
    query = select(PolicyVersion).order_by(PolicyVersion.version.desc()).limit(1)
    if for_update and not is_sqlite(db):  # SQLite's BEGIN IMMEDIATE already serialises writers
        query = query.with_for_update()
    return db.scalar(query)


def current_bundle(db: Session) -> protocol.PolicyBundle:
    """The bundle in force (version 0, all defaults, before the first amendment)."""
    row = current_row(db)
    if row is None:
        return protocol.PolicyBundle().sealed()
    return protocol.PolicyBundle.model_validate(row.bundle)


def amend_policy(
    db: Session,
    *,
    actor: str,
    comment: str,
    change: Callable[[protocol.PolicyBundle], protocol.PolicyBundle],
) -> protocol.PolicyBundle:
    row = current_row(db, for_update=True)
    current = protocol.PolicyBundle.model_validate(row.bundle) if row else protocol.PolicyBundle()
    changed = change(current.model_copy(deep=True))
    try:  # re-validate: `change` may have built sections with model_copy, which skips validation
        changed = protocol.PolicyBundle.model_validate(changed.model_dump(mode="json"))
    except ValidationError as exc:
        raise InvalidInput(f"the policy change is not valid: {protocol.validation_message(exc)}") from None
    new = changed.model_copy(update={"version": current.version + 1, "issued_at": utcnow(),
                                     "protocol_version": protocol.PROTOCOL_VERSION}).sealed()
    db.add(PolicyVersion(version=new.version, content_hash=new.content_hash,
                         bundle=new.model_dump(mode="json"), created_by=actor, comment=comment[:300]))
    audit(db, actor=actor, action="policy.amend", target=f"policy:{new.version}",
          detail={"comment": comment[:300], "content_hash": new.content_hash})
    schedule_push(db, protocol.PolicyPush(version=new.version, content_hash=new.content_hash))
    return new


def etag_of(bundle: protocol.PolicyBundle) -> str:
    return f'"{bundle.version}-{bundle.content_hash[:32]}"'
