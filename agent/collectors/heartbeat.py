"""The heartbeat collector: every N seconds, one `agent.heartbeat` saying how the agent is.

It carries every collector's health, the outbox depth, the drops so far, the policy
version in force and the uptime (000 §3.2: monitor that the security tools work).
The server marks the workstation's last-seen time and health from it.
"""

from __future__ import annotations

import socket
import threading
from typing import Protocol

from agent.collectors.base import Collector, CollectorContext, healthy, unhealthy
from agent.version import agent_version
from policy_server.protocol import CollectorHealth, Heartbeat

DEFAULT_INTERVAL_S = 60.0
# The first beat waits (at most this long) for the other collectors' start: sent at once it would
# report them "starting", and the fleet page would show every seat booted in the morning as
# degraded until the next beat.
FIRST_BEAT_WAIT_S = 30.0


class RuntimeView(Protocol):
    """What the heartbeat reads from the runtime (agent.runtime.AgentRuntime provides it)."""

    heartbeat_s: float

    def collector_health(self) -> dict[str, CollectorHealth]: ...
    def outbox_depth(self) -> int: ...
    def dropped_totals(self) -> dict[str, int]: ...
    def policy_version(self) -> int | None: ...
    def uptime_s(self) -> float: ...
    def tls_pins(self) -> list[str]: ...


def build_heartbeat(view: RuntimeView | None, *, own_name: str = "heartbeat") -> Heartbeat:
    """The heartbeat data from a runtime view (pure: easy to test)."""
    if view is None:
        return Heartbeat(agent_version=agent_version(), hostname=socket.gethostname())
    collectors = {name: health for name, health in view.collector_health().items() if name != own_name}
    return Heartbeat(
        agent_version=agent_version(),
        hostname=socket.gethostname(),
        policy_version=view.policy_version(),
        outbox_depth=view.outbox_depth(),
        dropped_events=view.dropped_totals(),
        collectors=collectors,
        uptime_s=round(view.uptime_s(), 1),
        tls_pins=view.tls_pins() if hasattr(view, "tls_pins") else [],
    )


class HeartbeatCollector(Collector):
    name = "heartbeat"

    def __init__(self, ctx: CollectorContext) -> None:
        super().__init__(ctx)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None
        self.sent = 0

    @property
    def interval_s(self) -> float:
        view = self.ctx.runtime
        return float(getattr(view, "heartbeat_s", None) or DEFAULT_INTERVAL_S)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="collector-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def beat(self) -> str:
        """Emit one heartbeat now; returns its event id."""
        event_id = self.ctx.emit("agent.heartbeat", build_heartbeat(self.ctx.runtime, own_name=self.name))
        self.sent += 1
        return event_id

    def _wait_for_the_others(self) -> None:
        started = getattr(self.ctx.runtime, "collectors_started", None)  # (absent: a test's view)
        waited = 0.0
        while started is not None and not started.is_set() and waited < FIRST_BEAT_WAIT_S:
            if self._stop.wait(0.05):
                return
            waited += 0.05

    def _run(self) -> None:
        self._wait_for_the_others()
        while not self._stop.is_set():
            try:
                self.beat()
                self._last_error = None
            except Exception as exc:  # keep beating; health tells the person
                self.ctx.log.exception("heartbeat failed")
                self._last_error = str(exc)
            self._stop.wait(self.interval_s)

    def health(self) -> CollectorHealth:
        if self._last_error:
            return unhealthy(f"last heartbeat failed: {self._last_error}")
        if self._thread is None or not self._thread.is_alive():
            return unhealthy("not running", failed=True)
        return healthy(f"every {self.interval_s:g} s, {self.sent} sent")
