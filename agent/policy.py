"""Policy on the agent: verify, keep and apply bundles; listen for pushes.

* A bundle is applied only if its `content_hash` checks out; a bad one is refused
  and the last good bundle stays in force (on disk as `policy.json`).
* The agent starts with the last good bundle from disk, so it works offline.
* The server's push channel (`GET /api/v1/policy/stream`, server-sent events whose
  `data:` is a `PolicyPush`) says a new version exists; the agent then fetches it
  with `GET /api/v1/policy` (If-None-Match) and applies it, well within 2 s.
  A slow poll is the fallback when the push channel is down.
* The same channel says when reports sent from this seat were decided (`data:` is
  ``{"reports": "decided"}``): `on_reports` (the runtime: read the report status now), and when
  a rollout of a new agent version started (``{"upgrade": "started"}``): `on_upgrade` (the
  runtime: ask the server whether it is this seat's turn, agent/upgrade.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from agent.server_client import ServerClient, TransportError, error_detail
from agent.state import AgentState
from agent.uplink import Backoff
from policy_server.protocol import PolicyBundle, PolicyPush

log = logging.getLogger("kalkan.agent.policy")

DEFAULT_POLL_S = 300.0


class PolicyError(ValueError):
    """A bundle the agent refuses; the message says why."""


def _raw_hash(raw: dict[str, Any]) -> str:
    """The content hash over the JSON as the server sent it (same canonical form as
    `PolicyBundle.compute_hash`).  Checking the raw JSON keeps working when this agent
    knows newer bundle fields (with defaults) that an older server does not send."""
    body = {k: v for k, v in raw.items() if k not in ("content_hash", "issued_at")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def verify_bundle(raw: Any) -> PolicyBundle:
    """Parse and check a bundle from the server; raise PolicyError naming the problem."""
    if not isinstance(raw, dict):
        raise PolicyError("the policy bundle is not a JSON object")
    try:
        bundle = PolicyBundle.model_validate(raw)
    except ValueError as exc:
        raise PolicyError(f"the policy bundle does not match the protocol: {exc}") from None
    if not bundle.content_hash:
        raise PolicyError("the policy bundle has no content_hash")
    if bundle.content_hash not in (_raw_hash(raw), bundle.compute_hash()):
        raise PolicyError(f"the policy bundle's content_hash {bundle.content_hash[:12]}… does not match "
                          "its content; it was damaged on the way or by the server")
    return bundle


def parse_sse(lines: Iterator[str]) -> Iterator[str]:
    """Yield the `data` of each server-sent event (several data lines joined by newlines)."""
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


class PolicyManager:
    """Holds the bundle in force and applies new ones.  `on_apply(bundle)` is called for
    every applied bundle (the runtime passes it to every collector)."""

    def __init__(self, state: AgentState, on_apply: Callable[[PolicyBundle], None],
                 on_reports: Callable[[], None] | None = None,
                 on_upgrade: Callable[[], None] | None = None) -> None:
        self.state = state
        self.on_apply = on_apply
        self.on_reports = on_reports
        self.on_upgrade = on_upgrade
        self.current: PolicyBundle | None = state.load_policy()
        self.etag: str | None = None
        self.applied_at: float | None = None
        self.last_error: str | None = None
        self.push_connected = False
        self._lock = threading.Lock()

    @property
    def version(self) -> int | None:
        return self.current.version if self.current else None

    def apply_raw(self, raw: Any) -> bool:
        """Verify and apply a bundle; False if it is the one already in force."""
        bundle = verify_bundle(raw)
        with self._lock:
            if self.current is not None and bundle.content_hash == self.current.content_hash:
                return False
            if self.current is not None and bundle.version < self.current.version:
                # Not refused: a restored server may legitimately go back. Worth a line in the log.
                log.warning("policy version goes back from %d to %d", self.current.version, bundle.version)
            self.state.save_policy(bundle, raw)  # last good bundle first, then collectors
            self.current = bundle
            self.applied_at = time.time()
            self.last_error = None
        log.info("applied policy version %d (%s…)", bundle.version, bundle.content_hash[:12])
        self.on_apply(bundle)
        return True

    def fetch(self, client: ServerClient) -> bool:
        """GET the bundle (If-None-Match); apply it if new.  Raises TransportError or
        PolicyError when it could not."""
        response = client.get_policy(self.etag if self.current is not None else None)
        if response.status_code == 304:
            return False
        if response.status_code != 200:
            raise PolicyError(f"GET policy answered {response.status_code}: {error_detail(response)}")
        try:
            raw = response.json()
        except ValueError:
            raise PolicyError("GET policy did not answer JSON") from None
        changed = self.apply_raw(raw)
        self.etag = response.headers.get("ETag")
        return changed

    def try_fetch(self, client: ServerClient) -> bool:
        try:
            return self.fetch(client)
        except (TransportError, PolicyError) as exc:
            self.last_error = str(exc)
            log.warning("policy fetch failed: %s", exc)
            return False

    # ------------------------------------------------------------------ threads

    def run_push(self, client: ServerClient, stop: threading.Event) -> None:
        """Listen on the push channel; reconnect with backoff.  Each push whose hash differs
        from the bundle in force triggers a fetch."""
        backoff = Backoff(base_s=1.0)  # capped at BACKOFF_CAP_S (30 s)
        while not stop.is_set():
            try:
                with client.policy_stream() as response:
                    if response.status_code != 200:
                        response.read()
                        raise PolicyError(f"push channel answered {response.status_code}: "
                                          f"{error_detail(response)}")
                    self.push_connected = True
                    backoff.reset()
                    self._stream = response
                    for data in parse_sse(response.iter_lines()):
                        if stop.is_set():
                            return
                        self._on_push(data, client)
            except (TransportError, PolicyError) as exc:
                if stop.is_set():
                    return
                self.last_error = f"push channel: {exc}"
                log.info("policy push channel: %s", exc)
            finally:
                self.push_connected = False
                self._stream = None
            stop.wait(backoff.next_delay())

    def _on_push(self, data: str, client: ServerClient) -> None:
        if data.startswith('{"reports"'):  # reports from this seat were decided (not a policy)
            if self.on_reports is not None:
                self.on_reports()
            return
        if data.startswith('{"upgrade"'):  # a rollout started (not a policy)
            if self.on_upgrade is not None:
                self.on_upgrade()
            return
        try:
            push = PolicyPush.model_validate_json(data)
        except ValueError:
            log.info("ignoring a push message that is not a PolicyPush: %.100s", data)
            return
        if self.current is not None and push.content_hash == self.current.content_hash:
            return
        if push.bundle is not None:  # the bundle came with the push: verify and apply, no request
            try:
                self.apply_raw(push.bundle)
                self.etag = None  # the next poll asks once in full, then conditionally again
                return
            except PolicyError as exc:
                log.warning("the pushed bundle does not verify (%s); fetching it", exc)
        self.try_fetch(client)

    def close_stream(self) -> None:
        """Unblock the push thread on stop: it sits in a blocking read of the stream, which
        only a socket shutdown interrupts (close() from another thread does not)."""
        stream = getattr(self, "_stream", None)
        if stream is None:
            return
        stream.shutdown()

    def run_poll(self, client: ServerClient, stop: threading.Event,
                 interval_s: float = DEFAULT_POLL_S) -> None:
        """Fetch at start, then every `interval_s` (the fallback when pushes are missed)."""
        while not stop.is_set():
            self.try_fetch(client)
            stop.wait(interval_s)
