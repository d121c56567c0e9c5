"""The agent runtime: collectors, outbox, uplink and policy, started and stopped together.

    runtime = AgentRuntime(AgentState(state_dir), platform="linux")
    runtime.run()            # until SIGTERM / SIGINT

What it does, in order:
1. opens the outbox and loads the last good policy bundle from disk (offline start);
2. loads the enabled collectors from the registry.  A collector whose module is
   missing or whose constructor or `start()` fails is kept as a failed entry (its
   health says why) and the agent carries on;
3. if enrolled, starts the uplink (outbox → server), the policy push listener and
   the policy poll;
4. every `status_interval_s` writes `status.json`, and turns pending outbox drops
   into an `agent.events_dropped` event.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from agent.artifacts import ArtifactFetcher
from agent.collectors.base import Collector, CollectorContext, unhealthy
from agent.collectors.registry import COLLECTORS, load_collector_class
from agent.outbox import DEFAULT_MAX_BYTES, Outbox, OutboxSink
from agent.policy import DEFAULT_POLL_S, PolicyManager
from agent.server_client import ServerClient
from agent.state import AgentConfig, AgentState
from agent.tls import PinSet
from agent.upgrade import UpgradeLoop  # upgrades ordered from the console
from agent.uplink import Uplink
from agent.version import agent_version
from policy_server.protocol import CollectorHealth, PolicyBundle, Subject

log = logging.getLogger("kalkan.agent")

PLATFORMS = ("linux", "fake")


CERTS_RETRY_S = 60.0
LESSON_UPLINK_POLL_S = 0.25
IDLE_UPLINK_POLL_S = 1.0


@dataclass
class _Slot:
    """One collector as the runtime sees it: the instance, or why there is none."""

    name: str
    collector: Collector | None = None
    error: str | None = None
    started: bool = False

    def health(self) -> CollectorHealth:
        if self.collector is None:
            return unhealthy(self.error or "not loaded", failed=True)
        if self.error:
            return unhealthy(self.error, failed=True)
        if not self.started:
            return unhealthy("starting")
        try:
            return self.collector.health()
        except Exception as exc:  # health() must never raise; if it does, say so
            return unhealthy(f"health() raised {exc.__class__.__name__}: {exc}", failed=True)


class AgentRuntime:
    def __init__(
        self,
        state: AgentState,
        *,
        collectors: list[str] | None = None,
        platform: str = "linux",
        client: ServerClient | None = None,
        status_interval_s: float = 5.0,
        poll_interval_s: float = DEFAULT_POLL_S,
        outbox_max_bytes: int = DEFAULT_MAX_BYTES,
        heartbeat_s: float | None = None,
    ) -> None:
        if platform not in PLATFORMS:
            raise ValueError(f"unknown platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
        self.state = state
        self.paths = state.paths.ensure()
        self.config: AgentConfig | None = state.load_config() if state.paths.config.is_file() else None
        self.platform = platform
        names = collectors if collectors is not None else (self.config.collectors if self.config else None)
        self.collector_names = list(names) if names is not None else list(COLLECTORS)
        for name in self.collector_names:
            if name not in COLLECTORS:
                raise ValueError(f"unknown collector {name!r}; known: {', '.join(COLLECTORS)}")
        self.heartbeat_s = heartbeat_s or (self.config.heartbeat_s if self.config else 60.0)
        self.status_interval_s = status_interval_s
        self.poll_interval_s = poll_interval_s
        self.outbox = Outbox(self.paths.outbox, max_bytes=outbox_max_bytes)
        self.client = client if client is not None else self._client_from_config()
        self.uplink = Uplink(self.outbox, self.client) if self.client is not None else None
        self.sink = OutboxSink(self.outbox, on_added=self._wake_uplink,
                               seat=self.config.seat if self.config else None)
        # category index and report status from the server (docs/filtering-console.md)
        self.artifacts = ArtifactFetcher(self.paths.root, self.client) if self.client is not None else None
        self.upgrade = UpgradeLoop(self.paths.root) if self.client is not None else None
        self.policy = PolicyManager(state, on_apply=self._apply_policy,
                                    on_reports=self.artifacts.reports_now if self.artifacts else None,
                                    on_upgrade=self.upgrade.wake if self.upgrade else None)
        if self.artifacts is not None and self.policy.current is not None:
            self.artifacts.on_policy(self.policy.current)
        self.slots: dict[str, _Slot] = {}
        self.started_at = time.monotonic()
        self.started_wall = time.time()
        self._stop = threading.Event()
        self._status_now = threading.Event()  # write the status at once (the collectors have started)
        self.collectors_started = threading.Event()  # every collector's start() has returned
        self._certs_due = 0.0  # the server certificate files are checked once at start, then on a change
        self._threads: list[threading.Thread] = []
        self._running = False

    # ------------------------------------------------------------------ set-up

    def _client_from_config(self) -> ServerClient | None:
        if self.config is None:
            log.warning("not enrolled: events stay in the outbox until `kalkan-agent enroll`")
            return None
        return ServerClient(self.config.server_url, token=self.state.read_token(),
                            sha256=self.config.pin_set(on_change=self._store_pins))

    def _store_pins(self, pins: PinSet) -> None:
        """The server announced its next certificate, or switched to it: keep the pins in
        config.json (atomically), so a restart accepts the same ones."""
        assert self.config is not None
        self.config.server_sha256, self.config.server_sha256_next = pins.current, pins.next
        self.state.save_config(self.config)
        self._certs_due = 0.0  # the certificate files follow (status loop: not inside a handshake)

    def _sync_server_certs(self) -> None:
        """server.pem / server.next.pem and apt's trust for the server, as the pins say
        (agent/server_certs.py); on failure tried again a minute later."""
        pins = getattr(self.client, "pins", None)
        if pins is None or time.monotonic() < self._certs_due:
            return
        from agent import server_certs

        try:
            server_certs.sync(self.client, self.paths, pins)
            self._certs_due = float("inf")
        except (OSError, ValueError) as exc:
            log.warning("server certificate files not updated yet: %s", exc)
            self._certs_due = time.monotonic() + CERTS_RETRY_S

    def _wake_uplink(self) -> None:
        if self.uplink is not None:
            self.uplink.wake.set()

    def _context(self) -> CollectorContext:
        return CollectorContext(
            sink=self.sink,
            state_dir=self.paths.root,
            seat=self.config.seat if self.config else None,
            room=self.config.room if self.config else None,
            platform=self.platform,
            policy=self.policy.current or PolicyBundle(),
            log=log,
            runtime=self,
        )

    def _load(self, name: str) -> _Slot:
        try:
            cls = load_collector_class(name)
        except Exception as exc:  # missing module, missing dependency, syntax error …
            return _Slot(name, error=f"cannot load: {exc.__class__.__name__}: {exc}")
        try:
            return _Slot(name, collector=cls(self._context()))
        except Exception as exc:
            return _Slot(name, error=f"cannot create: {exc.__class__.__name__}: {exc}")

    # ------------------------------------------------------------------ RuntimeView (heartbeat)

    def collector_health(self) -> dict[str, CollectorHealth]:
        health = {name: slot.health() for name, slot in self.slots.items()}
        if self.artifacts is not None:
            health["filter_lists"] = self.artifacts.health()
        return health

    def outbox_depth(self) -> int:
        return self.outbox.depth()

    def dropped_totals(self) -> dict[str, int]:
        return self.outbox.drop_totals()

    def policy_version(self) -> int | None:
        return self.policy.version

    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at

    def tls_pins(self) -> list[str]:
        """The server certificate fingerprints this agent accepts (the heartbeat reports them,
        so `kalkan-server tls status` can tell which seats learned the next certificate)."""
        pins = getattr(self.client, "pins", None)
        return pins.pins if pins is not None else []

    # ------------------------------------------------------------------ policy

    def _apply_policy(self, bundle: PolicyBundle) -> None:
        if self.artifacts is not None:
            self.artifacts.on_policy(bundle)
        if self.uplink is not None:
            # A lesson in this room: the teacher sees the seats live (within 1 s), so the proxy's
            # events are picked up 4x a second; otherwise once a second (the bundle carries only
            # this room's lessons).
            self.uplink.idle_poll_s = LESSON_UPLINK_POLL_S if bundle.lessons else IDLE_UPLINK_POLL_S
        for slot in self.slots.values():
            if slot.collector is None:
                continue
            try:
                slot.collector.on_policy(bundle)
            except Exception as exc:
                log.exception("collector %s failed to apply policy %d", slot.name, bundle.version)
                slot.error = f"on_policy({bundle.version}) raised {exc.__class__.__name__}: {exc}"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._stop.clear()
        self.collectors_started.clear()
        # Load every collector before starting any, so the first heartbeat knows them all.
        for name in self.collector_names:
            self.slots[name] = self._load(name)
        # The status file first: a collector slow to start (one that looks through many folders)
        # shows as "starting" instead of the whole agent looking dead to the supervisor.
        self._thread("status", self._status_loop)
        for name, slot in self.slots.items():
            if slot.collector is None:
                log.error("collector %s: %s", name, slot.error)
                continue
            try:
                slot.collector.start()
            except Exception as exc:
                log.exception("collector %s failed to start", name)
                slot.error = f"start() raised {exc.__class__.__name__}: {exc}"
            slot.started = True
        self.collectors_started.set()
        self._status_now.set()
        if self.client is not None and self.uplink is not None:
            self._thread("uplink", self.uplink.run, self._stop)
            self._thread("policy-push", self.policy.run_push, self.client, self._stop)
            self._thread("policy-poll", self.policy.run_poll, self.client, self._stop, self.poll_interval_s)
            if self.artifacts is not None:
                self._thread("artifacts", self.artifacts.run, self._stop)
            if self.upgrade is not None:
                self._thread("upgrade", self.upgrade.run, self.client, self._stop)
        log.info("agent %s started: collectors %s, platform %s, policy version %s", agent_version(),
                 ", ".join(self.collector_names) or "none", self.platform, self.policy.version)

    def _thread(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"agent-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        if not self._running:
            return
        self._stop.set()
        self._status_now.set()
        self._wake_uplink()
        if self.artifacts is not None:
            self.artifacts.wake()
        if self.upgrade is not None:
            self.upgrade.wake()  # (it waits for a push or its next poll)
        self.policy.close_stream()
        for slot in reversed(list(self.slots.values())):
            if slot.collector is not None:
                try:
                    slot.collector.stop()
                except Exception:
                    log.exception("collector %s failed to stop", slot.name)
        for thread in self._threads:
            thread.join(timeout=3)
        self._threads.clear()
        self._write_status(stopping=True)
        if self.client is not None:
            self.client.close()
        self.outbox.close()
        self._running = False
        log.info("agent stopped")

    def run(self) -> None:
        """Start, then wait for SIGTERM or SIGINT, then stop cleanly."""
        def _on_signal(signum: int, _frame: Any) -> None:
            log.info("signal %d: stopping", signum)
            self._stop.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        self.start()
        try:
            # no timeout: on POSIX a signal interrupts the wait and its handler sets the event,
            # so the main thread sleeps until then instead of waking every second
            self._stop.wait()
        finally:
            self.stop()

    # ------------------------------------------------------------------ status

    def _status_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.outbox.pending_drops():
                    seat = self.config.seat if self.config else None
                    self.outbox.report_drops(subject=Subject(seat=seat) if seat else None)
                    self._wake_uplink()
                self._write_status()
                self._sync_server_certs()
            except Exception:
                log.exception("writing status failed")
            self._status_now.wait(self.status_interval_s)
            self._status_now.clear()

    def status(self, *, stopping: bool = False) -> dict[str, Any]:
        uplink = self.uplink.status.as_dict() if self.uplink else None
        return {
            "agent_version": agent_version(),
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "running": not stopping,
            "updated_at": time.time(),
            "started_at": self.started_wall,
            "uptime_s": round(self.uptime_s(), 1),
            "platform": self.platform,
            "enrolled": self.config is not None,
            "agent_id": self.config.agent_id if self.config else None,
            "server_url": self.config.server_url if self.config else None,
            "uplink": uplink,
            "policy": {
                "version": self.policy.version,
                "content_hash": self.policy.current.content_hash if self.policy.current else None,
                "applied_at": self.policy.applied_at,
                "push_connected": self.policy.push_connected,
                "last_error": self.policy.last_error,
            },
            "outbox": {
                "depth": self.outbox.depth(),
                "bytes": self.outbox.size_bytes(),
                "max_bytes": self.outbox.max_bytes,
                "dropped": self.outbox.drop_totals(),
                "rejected": self.outbox.rejected_count(),
            },
            "collectors": {name: h.model_dump(mode="json") for name, h in self.collector_health().items()},
            # the collectors whose start() has not returned yet (the status is written before them)
            "starting": [s.name for s in self.slots.values() if s.collector is not None and not s.started],
            "filter_lists": self.artifacts.status() if self.artifacts is not None else None,
        }

    def _write_status(self, *, stopping: bool = False) -> None:
        from agent import metrics

        status = self.status(stopping=stopping)
        self.state.write_status(status)
        metrics.write(self.state, status)  # metrics.prom beside it (docs/operations.md)
