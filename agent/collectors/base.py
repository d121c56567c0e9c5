"""The collector plug-in interface.

A collector is one concern of the workstation agent (heartbeat, USB, antivirus,
integrity, idle, network, the filtering proxy).  Like a mitmproxy addon it is a
small class with plain methods; the runtime (`agent.runtime`) owns the loop,
the outbox and the policy, and hands each collector a `CollectorContext`.

Rules every collector follows:
* `start()` returns quickly; long work runs in the collector's own thread(s).
* Everything it observes leaves through `ctx.emit(...)`, which writes the event
  to the durable outbox before anything else happens (never straight to the network).
* `health()` is cheap and never raises; the heartbeat carries it to the server.
* `on_policy(bundle)` applies a new policy bundle without a restart.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from policy_server.protocol import CollectorHealth, CollectorState, PolicyBundle, Subject


class EventSink(Protocol):
    """Where a collector's events go: the outbox in production, a list in tests."""

    def emit(
        self,
        event_type: str,
        data: Any,
        *,
        subject: Subject | None = None,
        clauses: list[str] | None = None,
    ) -> str:
        """Validate, build the envelope, store it durably; return the event id."""
        ...


@dataclass
class CollectorContext:
    """What the runtime gives a collector."""

    sink: EventSink
    state_dir: Path
    seat: str | None = None
    room: str | None = None
    # the platform adapters (agent.platform); a collector picks the ones it needs
    platform: Any = None
    policy: PolicyBundle = field(default_factory=PolicyBundle)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("kalkan.agent"))
    # read-only view of the whole agent (agent.runtime.RuntimeView: every collector's health,
    # outbox depth, drops, policy version, uptime); None in unit tests.  The heartbeat uses it.
    runtime: Any = None

    def emit(self, event_type: str, data: Any, *, subject: Subject | None = None,
             clauses: list[str] | None = None) -> str:
        if subject is None and self.seat:
            subject = Subject(seat=self.seat)
        return self.sink.emit(event_type, data, subject=subject, clauses=clauses)


class Collector(abc.ABC):
    """Base class of every collector plug-in."""

    #: registry name, e.g. "usb"; also the key in the heartbeat's `collectors`
    name: str = ""

    def __init__(self, ctx: CollectorContext) -> None:
        self.ctx = ctx

    @abc.abstractmethod
    def start(self) -> None:
        """Begin work (spawn threads or processes); must return quickly."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop all work and release resources; must be safe to call twice."""

    @abc.abstractmethod
    def health(self) -> CollectorHealth:
        """Current health; cheap, never raises."""

    def on_policy(self, bundle: PolicyBundle) -> None:  # noqa: B027 - optional hook
        """A new policy bundle was applied; default: remember it in the context."""
        self.ctx.policy = bundle


def healthy(detail: str = "") -> CollectorHealth:
    return CollectorHealth(state=CollectorState.ok, detail=detail)


def unhealthy(detail: str, *, failed: bool = False) -> CollectorHealth:
    return CollectorHealth(state=CollectorState.failed if failed else CollectorState.degraded, detail=detail)
