"""The agent's HTTP client for the policy server: one pinned httpx client per thread use.

Thin on purpose: it builds requests and returns responses; what to do with them is
decided by `agent.uplink` (events) and `agent.policy` (bundles).
"""

from __future__ import annotations

import platform
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from agent import __version__ as AGENT_VERSION
from agent.tls import pinned_context
from policy_server.protocol import PROTOCOL_VERSION, EnrollRequest, EnrollResponse

EVENTS_PATH = "/api/v1/events"
POLICY_PATH = "/api/v1/policy"
STREAM_PATH = "/api/v1/policy/stream"
ENROLL_PATH = "/api/v1/enroll"
HEALTH_PATH = "/healthz"

USER_AGENT = f"kalkan-agent/{AGENT_VERSION} (protocol {PROTOCOL_VERSION})"


class ServerError(RuntimeError):
    """The server answered in a way the agent cannot use; the message says why."""


def _verify_for(url: str, sha256: str | None) -> Any:
    if url.startswith("https://"):
        if not sha256:
            raise ValueError("an https:// server needs a pinned certificate fingerprint; enrol again")
        return pinned_context(sha256)
    return False  # plain http:// (a server run with --no-tls, e.g. on a test bench): nothing to pin


def error_detail(response: httpx.Response) -> str:
    """The server's person-readable `detail`, or the start of its body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else str(detail)[:300]
    return str(body)[:300]


class ServerClient:
    """Talks to one server with the pinned certificate and the agent's bearer token."""

    def __init__(self, base_url: str, *, token: str | None, sha256: str | None,
                 timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._verify = _verify_for(self.base_url, sha256)
        self._headers = headers
        self._timeout = timeout
        self.http = self._new_client(timeout)

    def _new_client(self, timeout: float | httpx.Timeout) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, verify=self._verify, headers=self._headers,
                            timeout=timeout, trust_env=False)

    def close(self) -> None:
        self.http.close()

    # --- calls
    def healthz(self) -> bool:
        response = self.http.get(HEALTH_PATH, timeout=3.0)
        return response.status_code == 200

    def post_events(self, body: bytes) -> httpx.Response:
        return self.http.post(EVENTS_PATH, content=body, headers={"Content-Type": "application/json"})

    def get_policy(self, etag: str | None = None) -> httpx.Response:
        headers = {"If-None-Match": etag} if etag else {}
        return self.http.get(POLICY_PATH, headers=headers)

    @contextmanager
    def policy_stream(self, read_timeout: float = 90.0) -> Iterator[httpx.Response]:
        """The SSE push channel.  Its own client, so closing it from another thread (on
        stop) does not disturb the uplink's connection."""
        client = self._new_client(httpx.Timeout(10.0, read=read_timeout))
        try:
            with client.stream("GET", STREAM_PATH, headers={"Accept": "text/event-stream"}) as response:
                yield response
        finally:
            client.close()

    def enroll(self, *, code: str, seat: str | None) -> EnrollResponse:
        request = EnrollRequest(
            code=code,
            hostname=socket.gethostname(),
            os=f"{platform.system()} {platform.release()}"[:128],
            agent_version=AGENT_VERSION,
            seat=seat,
        )
        response = self.http.post(ENROLL_PATH, json=request.model_dump(mode="json"))
        if response.status_code >= 400:
            raise ServerError(
                f"the server refused the enrolment ({response.status_code}): {error_detail(response)}"
            )
        return EnrollResponse.model_validate(response.json())
