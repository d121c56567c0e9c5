"""An agent is bound to the seat and hostname it was enrolled with.

The event body's `subject.seat` and the heartbeat's `hostname` are what the agent *says*;
the workstation row (set at enrolment, changed only by the responsible person with
`kalkan-server rebind-agent`) is what the server *knows*.  Events are stored under the
known seat (events/store.py), never the claimed one, so agent A cannot report under B's
seat, and a heartbeat never renames a workstation.  A claim that differs is a finding:
an incident (000 §5.5: detect unauthorised access; 000 §3.2: monitor the security tools)
linked to the event that made the claim, one per agent and claim while it stays open.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from policy_server import protocol
from policy_server.audit import audit
from policy_server.db.models import Workstation
from policy_server.errors import InvalidInput, NotFound
from policy_server.events.validation import ValidEvent
from policy_server.rules import IncidentDraft, RuleInput, Severity

RULE = "agent.identity_mismatch"
CLAUSES = ("000 §5.5", "000 §3.2")
WINDOW_S = 24 * 3600


def identity_claims(agent: Workstation, accepted: list[ValidEvent]) -> list[tuple[ValidEvent, str, str]]:
    """(event, what, claimed) for each distinct claim that differs from the enrolment: a seat
    in `subject.seat`, a hostname in a heartbeat.  The first event making each claim."""
    claims: dict[tuple[str, str], ValidEvent] = {}
    enrolled_seat = agent.seat
    for v in accepted:
        if v.seat is not None and v.seat != enrolled_seat:
            claims.setdefault(("seat", v.seat), v)
        if v.type == "agent.heartbeat":
            hostname = getattr(v.typed, "hostname", "")
            if hostname and hostname != agent.hostname:
                claims.setdefault(("hostname", hostname[:64]), v)  # fits the incident's title
    return [(v, what, claimed) for (what, claimed), v in claims.items()]


def mismatch_drafts(agent: Workstation, room: str | None,
                    claims: list[tuple[ValidEvent, str, str]]) -> list[tuple[IncidentDraft, RuleInput]]:
    out = []
    where = agent.seat or agent.hostname
    for v, what, claimed in claims:
        enrolled = agent.seat if what == "seat" else agent.hostname
        draft = IncidentDraft(
            rule=RULE,
            title=f"Workstation {where} reports {what} {claimed!r}; it was enrolled as {enrolled or '-'!r}",
            severity=Severity.high,
            clauses=CLAUSES,
            dedup_key=f"{RULE}:{agent.id}:{what}:{claimed}",
            window_s=WINDOW_S,
            params={"where": where, "what": what, "claimed": claimed, "enrolled": enrolled or "-",
                    "event_type": v.type},
        )
        event = RuleInput(event_id=v.id, type=RULE, agent_id=agent.id, occurred_at=v.occurred_at,
                          data={"what": what, "claimed": claimed, "enrolled": enrolled},
                          clauses=CLAUSES, os_user=v.os_user, seat=agent.seat, room=room,
                          hostname=agent.hostname)
        out.append((draft, event))
    return out


def rebind_agent(db: Session, *, agent_id: str, actor: str, seat: str | None = None,
                 hostname: str | None = None, clear_seat: bool = False) -> Workstation:
    """The responsible person changes the seat and/or hostname a workstation is bound to."""
    ws = db.get(Workstation, agent_id)
    if ws is None:
        raise NotFound(f"no workstation with agent id {agent_id!r}; see the workstation list for the ids",
                       code="agent.not_found", params={"agent_id": agent_id})
    seat_field = protocol.Subject.model_fields["seat"].metadata
    max_seat = next((m.max_length for m in seat_field if hasattr(m, "max_length")), 64)
    if seat is not None and not (0 < len(seat.strip()) <= max_seat):
        raise InvalidInput(f"the seat must be 1-{max_seat} characters, not {seat!r}")
    if hostname is not None and not (0 < len(hostname.strip()) <= 253):
        raise InvalidInput(f"the hostname must be 1-253 characters, not {hostname!r}")
    before = {"seat": ws.seat, "hostname": ws.hostname}
    if clear_seat:
        ws.seat = None
    elif seat is not None:
        ws.seat = seat.strip()
    if hostname is not None:
        ws.hostname = hostname.strip()
    audit(db, actor=actor, action="agent.rebind", target=agent_id,
          detail={"before": before, "after": {"seat": ws.seat, "hostname": ws.hostname}})
    return ws
