"""The uplink: sends the outbox to the server in batches, deletes only what arrived.

Delivery is at-least-once: an event leaves the outbox only when the server answered
it `accepted` or `duplicate` (the server stores each id once, so re-sending after a
crash is harmless).  An event the server `rejected` is moved to the outbox's
`rejected` table with the server's reason (shown by `kalkan-agent status`), so a bad
event is neither retried forever nor silently lost.

Failures (server down, network) back off exponentially with jitter, so a lab of thirty
workstations does not hammer a server that has just come back; the wait is capped
(`BACKOFF_CAP_S`) and starts again from the bottom as soon as the server answers at all
(any HTTP status), so a retry that lands in a short restart gap never leaves an agent
waiting minutes while the server is up.  A *refused* connection (nothing listens: the
server is restarting) is retried within `REFUSED_RETRY_S`: it costs the server nothing,
and the agent is there in the first seconds after the restart.  A 503 (database
unavailable, disk full) is waited out as its `Retry-After` says (capped too), never split:
no event is at fault.

A batch the server keeps failing with a 500 (`REFUSALS_BEFORE_SPLIT` times in a row) is
halved until the one event at fault is found; that event is moved to `rejected` only once
the server has stored the events after it (a probe), so a server that fails on everything
never has the whole outbox moved aside.
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
BACKOFF_CAP_S = 30.0
REFUSED_RETRY_S = 2.0  # nothing listens (the server is restarting): trying again costs it nothing
REFUSALS_BEFORE_SPLIT = 2  # a 500 for the same batch this many times in a row: split it
# A batch is answered once the server has stored it; a busy server queues batches for up to
# 20 s (policy_server/events/ingest.py INGEST_WAIT_S) and then answers 503 "send it again in
# 1 s".  Waiting longer than that for the answer means never giving up on a batch the server
# then stores anyway — giving up made the agent send it again, to wait in the queue once more.
EVENTS_TIMEOUT_S = 60.0
UNAVAILABLE = (502, 503, 504)  # the server (or its database) cannot work now: wait, never split


class UplinkError(RuntimeError):
    """A send failed in a way worth retrying later.  `answered`: the server answered (so the
    backoff starts again from the bottom); `retry_after`: the wait it asked for, seconds."""

    def __init__(self, message: str, *, answered: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.answered = answered
        self.retry_after = retry_after
        self.refused = False  # the connection was refused: nothing listens, e.g. a restart


class UplinkAuthError(UplinkError):
    """The server refused our token (revoked?): retry slowly, tell the person via status."""


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": half the delay fixed, half random, so
    retries spread out but never collapse to zero."""

    base_s: float = 1.0
    cap_s: float = BACKOFF_CAP_S
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
    last_answer_at: float | None = None  # any HTTP answer, error or not
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
        self.batch_events_default = batch_events
        self.batch_bytes = batch_bytes
        self.backoff = backoff or Backoff()
        self.idle_poll_s = idle_poll_s
        self.status = UplinkStatus()
        self.wake = threading.Event()  # set by the sink when an event is added
        self._refused: tuple[str, int] | None = None  # (first id, size) of the batch refused last
        self._refusals = 0
        self._split = False  # the last send halved the batch

    # ------------------------------------------------------------------ one batch

    def send_once(self) -> int:
        """Send the oldest batch; return how many events left the outbox (0: it was empty).
        Raises UplinkError when the send should be retried after a backoff."""
        batch = self.outbox.peek_batch(self.batch_events, self.batch_bytes)
        if not batch:
            return 0
        response = self._post(batch)
        code = response.status_code
        if code in (400, 413, 422):
            return self._split_or_reject(batch, response)
        if code >= 500 and code not in UNAVAILABLE:
            return self._refused_batch(batch, response)
        self._refused, self._refusals = None, 0
        return self._delivered(response)

    def _post(self, batch: list) -> Response:
        """POST the events; any answer but 401/403 (and 5xx, for the caller) comes back."""
        body = b'{"events":[' + b",".join(event.body.encode() for event in batch) + b"]}"
        try:
            response = self.client.post_events(body, timeout=EVENTS_TIMEOUT_S)
        except TransportError as exc:
            error = UplinkError(f"cannot reach the server: {exc}")
            error.refused = isinstance(exc.__cause__, ConnectionRefusedError)
            raise error from exc
        self._answered()
        code = response.status_code
        if code in (401, 403):
            self.status.token_refused = True
            raise UplinkAuthError(f"the server refused the agent token ({code}: {error_detail(response)}); "
                                  "if this workstation was revoked, enrol it again", answered=True)
        self.status.token_refused = False
        if code in UNAVAILABLE:
            raise UplinkError(f"the server answered {code}: {error_detail(response)}", answered=True,
                              retry_after=_retry_after(response))
        return response

    def _delivered(self, response: Response) -> int:
        code = response.status_code
        if code >= 300:
            raise UplinkError(f"the server answered {code}: {error_detail(response)}", answered=True)
        try:
            result = BatchResult.model_validate(response.json())
        except ValueError as exc:
            raise UplinkError(f"the server's answer is not a batch result: {exc}", answered=True) from exc
        self._stored()
        # after a split, grow back (the culprit may be further on, so not all at once)
        self.batch_events = min(self.batch_events_default, self.batch_events * 2)
        delivered = self.outbox.remove([*result.accepted, *result.duplicates])
        for rejected in result.rejected:
            if rejected.id is not None:
                log.warning("server rejected event %s: %s", rejected.id, rejected.error)
                if self.outbox.reject(rejected.id, rejected.error):
                    self.status.rejected += 1
        self.status.sent += delivered
        # Ids the server did not mention stay in the outbox and go again with the next batch.
        return delivered + len(result.rejected)

    def _refused_batch(self, batch: list, response: Response) -> int:
        """The server failed (500) on this batch.  Once is a hiccup (retry); again and again
        means an event in it makes the server fail: halve the batch until it is one event,
        then move that one aside if the server stores the events after it."""
        detail = f"{response.status_code}: {error_detail(response)}"
        key = (batch[0].id, len(batch))
        self._refusals = self._refusals + 1 if key == self._refused else 1
        self._refused = key
        if self._refusals < REFUSALS_BEFORE_SPLIT:
            raise UplinkError(f"the server failed on a batch of {len(batch)} ({detail})", answered=True)
        self._refused, self._refusals = None, 0
        if len(batch) > 1:
            self.batch_events = max(1, len(batch) // 2)
            self._split = True
            log.info("the server keeps failing on a batch of %d (%s); trying %d", len(batch), detail,
                     self.batch_events)
            return 0
        suspect = batch[0]
        # The probe: the events after the suspect (or an empty batch, which the server still
        # stores as a visit).  Stored: the server works and the suspect is at fault.
        after = self.outbox.peek_batch(self.batch_events_default, self.batch_bytes, after_seq=suspect.seq)
        probe = self._post(after)
        if probe.status_code >= 300:
            raise UplinkError(f"the server fails on every batch ({detail}); keeping the events",
                              answered=True)
        sent = self._delivered(probe)
        log.warning("event %s (%s) moved aside: the server failed on it alone %d times while storing "
                    "others: %s", suspect.id, suspect.type, REFUSALS_BEFORE_SPLIT, detail)
        if self.outbox.reject(suspect.id, f"the server failed on this event alone ({detail})"):
            self.status.rejected += 1
        return sent + 1

    def _split_or_reject(self, batch: list, response: Response) -> int:
        """The server refused the batch as a whole (too large, malformed): halve it to find
        the culprit; a single event refused this way is moved aside with the reason."""
        detail = error_detail(response)
        if len(batch) > 1:
            self.batch_events = max(1, len(batch) // 2)
            self._split = True
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
                delay = self.backoff.next_delay()  # the first step again when the server answered
                if exc.refused:  # a refused connection costs the server nothing: come back soon,
                    # so a restart's first seconds are not missed by an agent sleeping 30 s
                    delay = min(delay, REFUSED_RETRY_S / 2 + self.backoff.rng.uniform(0, REFUSED_RETRY_S / 2))
                if exc.retry_after is not None:
                    delay = min(max(exc.retry_after, delay), self.backoff.cap_s)
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
            if self._split:  # a smaller batch goes at once
                self._split = False
                continue
            if sent == 0 or self.outbox.depth() == 0:
                self.batch_events = max(self.batch_events, self.batch_events_default)
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

    def _answered(self) -> None:
        """The server answered (any status): it is up, so the backoff starts from the bottom."""
        self.backoff.reset()
        self.status.reachable = True
        self.status.last_answer_at = time.time()

    def _stored(self) -> None:
        self.status.last_success_at = time.time()


def _retry_after(response: Response) -> float | None:
    """`Retry-After` in seconds (the delta form; an HTTP date is not worth parsing here)."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
