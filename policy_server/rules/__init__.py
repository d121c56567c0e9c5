"""Incident rules: pure functions from one event to an incident draft (or None).

A rule never touches the database.  The incident engine (policy_server.incidents)
calls every rule registered for an event's type, then merges each draft into an
open incident with the same `dedup_key` inside the draft's aggregation window, or
opens a new one.  One module per domain registers its rules with `@rule(...)`;
`ALL_RULE_MODULES` lists them so the engine can import them all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


@dataclass(frozen=True)
class RuleInput:
    """What a rule sees: the stored event, flattened to plain data."""

    event_id: str
    type: str
    agent_id: str
    occurred_at: datetime
    data: dict[str, Any]
    clauses: tuple[str, ...] = ()
    os_user: str | None = None
    seat: str | None = None
    room: str | None = None
    hostname: str | None = None


@dataclass(frozen=True)
class IncidentDraft:
    rule: str  # the rule's name, e.g. "web.report"
    title: str  # English one-liner; the web pages translate by `rule` + `params`
    severity: Severity
    clauses: tuple[str, ...]
    dedup_key: str  # drafts with the same key inside the window join one incident
    window_s: int = 600
    params: dict[str, Any] = field(default_factory=dict)
    notify: tuple[str, ...] = ()  # roles to tell, e.g. ("class_teacher",) for 001 §2.7
    # Open the incident only when this many drafts with the key fall inside `window_s`
    # (counted across batches; e.g. the 5th blocked page in 10 minutes).  1 = at once.
    open_after: int = 1
    # The window is the lesson at the event's time in the seat's room (the running lesson, else
    # the timetable's period), not `window_s` from the first event; `window_s` only when the
    # room has neither (issue 9: "repeated attempts by one seat in a lesson", 001 §2.7).
    lesson_window: bool = False


# --- personal data (001 §2.15, 002 §3.1, docs/security.md) ------------------------------
# An incident's `title`, `params` and `dedup_key` carry no student's OS user name and no URL a
# student opened: the director and the district viewer read titles, and keys end up in logs.
# The incident keeps the OS user in its own column (`Incident.os_user`) and the events keep
# the URLs; the reader's view (`incidents.service.reader_params`) adds them for those who may
# see them.  Rules use these helpers for what they still need to group or show.

_HOME = re.compile(r"(?i)(/home/|/Users/|[A-Z]:\\Users\\|/var/mail/|/run/user/)([^/\\]+)")


def pseudonym(value: str | None) -> str:
    """A stable stand-in for an OS user name in a dedup key (same user -> same key)."""
    if not value:
        return "-"
    return "u" + hashlib.sha256(f"kalkan-dedup:{value}".encode()).hexdigest()[:16]


def digest(value: str) -> str:
    """A stable short digest of a URL (or path) for a dedup key."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def redact_path(path: str | None) -> str | None:
    """A file path without the account's name in it (/home/student7/x -> /home/…/x)."""
    if path is None:
        return None
    return _HOME.sub(lambda m: m.group(1) + "…", str(path))


Rule = Callable[[RuleInput], IncidentDraft | None]

RULES: dict[str, list[Rule]] = {}

ALL_RULE_MODULES = (
    "policy_server.rules.web",
    "policy_server.rules.antivirus",
    "policy_server.rules.usb",
    "policy_server.rules.integrity",
    "policy_server.rules.idle",
    "policy_server.rules.network",
    "policy_server.rules.agent",
    "policy_server.rules.isuo",  # no @rule: pure checks that policy_server.checks calls
)


def rule(*event_types: str) -> Callable[[Rule], Rule]:
    """Register a rule for one or more event types."""

    def register(fn: Rule) -> Rule:
        for event_type in event_types:
            RULES.setdefault(event_type, []).append(fn)
        return fn

    return register


def load_all_rules() -> None:
    """Import every rule module that exists (a domain not built yet is skipped)."""
    import importlib

    for module in ALL_RULE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def evaluate(event: RuleInput) -> list[IncidentDraft]:
    """Every draft the registered rules make of one event (pure)."""
    drafts = []
    for fn in RULES.get(event.type, ()):
        draft = fn(event)
        if draft is not None:
            drafts.append(draft)
    return drafts
