"""Certificate pinning against a real local TLS server with a self-signed certificate."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agent.server_client import ServerClient, TransportError
from agent.tls import (
    PinMismatch,
    fetch_certificate,
    normalise_fingerprint,
    pinned_context,
    pretty_fingerprint,
)
from tests.agent.conftest import json_answer, make_self_signed


def test_fetch_certificate_gives_its_sha256(https_endpoint, self_signed) -> None:
    pem, sha256 = fetch_certificate(https_endpoint.url)
    assert sha256 == self_signed.sha256
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    assert https_endpoint.requests == []  # only a handshake, no request


def test_pinned_client_talks_to_the_pinned_server(https_endpoint, self_signed) -> None:
    https_endpoint.handler = lambda *a: json_answer(200, {"status": "ok"})
    client = ServerClient(https_endpoint.url, token="secret", sha256=self_signed.sha256)
    assert client.healthz()
    assert https_endpoint.requests[0][2]["authorization"] == "Bearer secret"


def test_other_certificate_refused_before_the_token_leaves(https_endpoint, tmp_path: Path) -> None:
    https_endpoint.handler = lambda *a: json_answer(200, {"status": "ok"})
    other = make_self_signed(tmp_path / "other", name="other")
    client = ServerClient(https_endpoint.url, token="secret", sha256=other.sha256)
    with pytest.raises(TransportError, match="not the pinned") as info:
        client.healthz()
    assert isinstance(info.value.__cause__, PinMismatch)
    assert https_endpoint.requests == []  # the server never saw the request or the token
    # The same client still refuses on the next try (nothing half-trusted is kept).
    with pytest.raises(TransportError, match="not the pinned"):
        client.post_events(b'{"events": []}')
    assert https_endpoint.requests == []


def test_pinned_context_with_plain_httpx(https_endpoint, self_signed) -> None:
    """The context also pins for httpx (the tests' and tools' client)."""
    https_endpoint.handler = lambda *a: json_answer(200, {})
    assert httpx.get(https_endpoint.url, verify=pinned_context(self_signed.sha256)).status_code == 200
    wrong = "00" * 32
    with pytest.raises(httpx.ConnectError) as info:
        httpx.get(https_endpoint.url, verify=pinned_context(wrong))
    assert isinstance(info.value.__context__, PinMismatch) or "pinned" in str(info.value)


def test_fingerprint_forms() -> None:
    hexd = "ab" * 32
    assert normalise_fingerprint(pretty_fingerprint(hexd)) == hexd
    assert normalise_fingerprint("sha256:" + hexd.upper()) == hexd
    with pytest.raises(ValueError, match="64 hex digits"):
        normalise_fingerprint("abc")


def test_https_without_pin_refused() -> None:
    with pytest.raises(ValueError, match="pinned certificate"):
        ServerClient("https://127.0.0.1:1", token="t", sha256=None)
