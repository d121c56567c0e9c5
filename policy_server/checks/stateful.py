"""Checks run at ingest for events whose verdict needs stored state (called by
`events.ingest.store_batch`, inside the upload's transaction, after the batch is stored).

Only batches with an event of `INGEST_CHECK_TYPES` come here, so the server's hot path
(thousands of browsing events a second) pays one set lookup per event and nothing else.

* `check_baseline_chain` (000 §4.2, §5.6): a new `integrity.baseline` must continue the
  chain of the previous one the server stored for the agent.
* `check_isuo_from_student_lab` (002 §4.4, 000 §6.8): an ISUO session started in a student
  lab outside a lesson, or by a listed student account.  Judged at ingest because it needs
  the lessons in force *now*: the policy keeps only current lessons (ended ones are dropped),
  so a later periodic look could not tell whether a lesson was running.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.db.models import Event
from policy_server.incidents.engine import process_drafts
from policy_server.rules import IncidentDraft, RuleInput
from policy_server.rules.integrity import check_baseline_chain as chain_rule
from policy_server.rules.isuo import isuo_from_student_lab

INGEST_CHECK_TYPES = frozenset({"integrity.baseline", "isuo.session"})


def run_ingest_checks(db: Session, *, events: list[RuleInput]) -> list[int]:
    """Run the ingest-time checks on accepted events of `INGEST_CHECK_TYPES` (already stored);
    their drafts go through the incident engine.  Returns the ids of incidents touched."""
    drafts: list[tuple[IncidentDraft, RuleInput]] = []
    bundle: protocol.PolicyBundle | None = None
    for event in events:
        draft = None
        if event.type == "integrity.baseline":
            draft = check_baseline_chain(db, event=event)
        elif event.type == "isuo.session" and event.data.get("state") == "start":
            if bundle is None:  # read once per batch, only when an ISUO session is in it
                from policy_server.policies.service import current_bundle

                bundle = current_bundle(db)
            draft = check_isuo_from_student_lab(db, event=event, bundle=bundle)
        if draft is not None:
            drafts.append((draft, event))
    return process_drafts(db, drafts) if drafts else []


def previous_baseline(db: Session, *, event: RuleInput) -> dict | None:
    """The data of the agent's stored `integrity.baseline` just before this one (by occurred_at,
    excluding the event itself; one indexed query), or None for the first."""
    return db.scalar(
        select(Event.data)
        .where(Event.agent_id == event.agent_id, Event.type == "integrity.baseline",
               Event.occurred_at <= event.occurred_at, Event.id != event.event_id)
        .order_by(Event.occurred_at.desc(), Event.received_at.desc())
        .limit(1)
    )


def check_baseline_chain(db: Session, *, event: RuleInput) -> IncidentDraft | None:
    """Does this stored `integrity.baseline` continue the agent's chain? (draft if not)"""
    return chain_rule(previous_baseline(db, event=event), event)


def check_isuo_from_student_lab(db: Session, *, event: RuleInput,
                                bundle: protocol.PolicyBundle) -> IncidentDraft | None:
    """An ISUO session start in a student lab outside a lesson, or by a listed student.
    (`db` is not read today: the room and the user are on the event, the lessons and groups
    in the bundle; it stays for the checks' uniform signature.)"""
    return isuo_from_student_lab(event, bundle)
