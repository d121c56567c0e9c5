"""The uplink: sends the outbox to the server in batches, deletes only what arrived.

Delivery is at-least-once: an event leaves the outbox only when the server answered
it `accepted` or `duplicate` (the server stores each id once, so re-sending after a
crash is harmless).  An event the server `rejected` is moved to the outbox's
`rejected` table with the server's reason (shown by `kalkan-agent status`), so a bad
event is neither retried forever nor silently lost.

Failures (server down, 5xx, network) back off exponentially with jitter, so a
lab of thirty workstations does not hammer a server that has just come back.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field

from agent.outbox import Outbox
from agent.server_client import Response, ServerClient, TransportError, error_detail
from policy_server.protocol import MAX_BATCH_BYTES, BatchResult

log = logging.getLogger("kalkan.agent.uplink")

DEFAULT_BATCH_EVENTS = 500
# Leave room for the batch wrapper under the server's limit.
DEFAULT_BATCH_BYTES = min(1024 * 1024, MAX_BATCH_BYTES - 1024)


class UplinkError(RuntimeError):
    """A send failed in a way worth retrying later."""


class UplinkAuthError(UplinkError):
    """The server refused our token (revoked?): retry slowly, tell the person via status."""


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": half the delay fixed, half random, so
    retries spread out but never collapse to zero."""

    base_s: float = 1.0
    cap_s: float = 300.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        ceiling = min(self.cap_s, self.base_s * 2 ** min(self.failures - 1, 30))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class UplinkStatus:
    """What the uplink last saw, for status.json and `kalkan-agent status`."""

    reachable: bool | None = None  # None: not tried yet
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    token_refused: bool = False
    sent: int = 0
    rejected: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Uplink:
    def __init__(
        self,
        outbox: Outbox,
        client: ServerClient,
        *,
        batch_events: int = DEFAULT_BATCH_EVENTS,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        backoff: Backoff | None = None,
        idle_poll_s: float = 1.0,
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.backoff = backoff or Backoff()
        self.idle_poll_s = idle_poll_s
        self.status = UplinkStatus()
        self.wake = threading.Event()  # set by the sink when an event is added

    # ------------------------------------------------------------------ one batch

    def send_once(self) -> int:
        """Send the oldest batch; return how many events left the outbox (0: it was empty).
        Raises UplinkError when the send should be retried after a backoff."""
        batch = self.outbox.peek_batch(self.batch_events, self.batch_bytes)
        if not batch:
            return 0
        body = b'{"events":[' + b",".join(event.body.encode() for event in batch) + b"]}"
        try:
            response = self.client.post_events(body)
        except TransportError as exc:
            raise UplinkError(f"cannot reach the server: {exc}") from exc
        code = response.status_code
        if code in (401, 403):
            self.status.token_refused = True
            raise UplinkAuthError(f"the server refused the agent token ({code}: {error_detail(response)}); "
                                  "if this workstation was revoked, enrol it again")
        self.status.token_refused = False
        if code < 500:
            self._reached()
        if code in (400, 413, 422):
            return self._split_or_reject(batch, response)
        if code >= 300:
            raise UplinkError(f"the server answered {code}: {error_detail(response)}")
        try:
            result = BatchResult.model_validate(response.json())
        except ValueError as exc:
            raise UplinkError(f"the server's answer is not a batch result: {exc}") from exc
        delivered = self.outbox.remove([*result.accepted, *result.duplicates])
        for rejected in result.rejected:
            if rejected.id is not None:
                log.warning("server rejected event %s: %s", rejected.id, rejected.error)
                if self.outbox.reject(rejected.id, rejected.error):
                    self.status.rejected += 1
        self.status.sent += delivered
        # Ids the server did not mention stay in the outbox and go again with the next batch.
        return delivered + len(result.rejected)

    def _split_or_reject(self, batch: list, response: Response) -> int:
        """The server refused the batch as a whole (too large, malformed): halve it to find
        the culprit; a single event refused this way is moved aside with the reason."""
        detail = error_detail(response)
        if len(batch) > 1:
            self.batch_events = max(1, len(batch) // 2)
            log.info("server refused a batch of %d (%s); trying %d", len(batch), detail, self.batch_events)
            return 0
        event = batch[0]
        log.warning("server refused event %s (%s) on its own: %s", event.id, event.type, detail)
        if self.outbox.reject(event.id, f"{response.status_code}: {detail}"):
            self.status.rejected += 1
        return 1

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        """Send until stopped: back-to-back while there is a backlog, then wait for a wake-up
        (or `idle_poll_s`, for events another process such as the proxy added)."""
        while not stop.is_set():
            try:
                sent = self.send_once()
            except UplinkError as exc:
                self._failed(str(exc))
                delay = self.backoff.next_delay()
                if isinstance(exc, UplinkAuthError):
                    delay = max(delay, 60.0)
                log.warning("%s; retrying in %.1f s", exc, delay)
                self._sleep(stop, delay, wakeable=False)
                continue
            except Exception as exc:  # a bug must not kill the uplink thread
                log.exception("uplink error")
                self._failed(f"internal error: {exc}")
                self._sleep(stop, self.backoff.next_delay(), wakeable=False)
                continue
            if sent == 0 or self.outbox.depth() == 0:
                self.batch_events = max(self.batch_events, DEFAULT_BATCH_EVENTS)
                self._sleep(stop, self.idle_poll_s)

    def _sleep(self, stop: threading.Event, seconds: float, *, wakeable: bool = True) -> None:
        """Wait `seconds`; a new event cuts the wait short unless we are backing off
        (then only `stop` does, so a failing server is not hammered)."""
        if not wakeable:
            stop.wait(seconds)
            return
        self.wake.clear()
        if not stop.is_set():
            self.wake.wait(seconds)  # the runtime sets `wake` on stop as well

    def _failed(self, message: str) -> None:
        self.status.reachable = False
        self.status.last_error = message
        self.status.last_error_at = time.time()

    def _reached(self) -> None:
        self.backoff.reset()
        self.status.reachable = True
        self.status.last_success_at = time.time()
