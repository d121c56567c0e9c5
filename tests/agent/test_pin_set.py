"""The agent's pins during a certificate rotation (agent/tls.py PinSet) and the server's file
switch (policy_server/certs/rotation.py), without processes; the real run is
tests/agent/test_cert_rotation.py."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.server_client import HttpSession, ServerClient
from agent.state import AgentConfig, AgentState
from agent.tls import PinMismatch, PinSet
from policy_server.certs import rotation
from policy_server.errors import Conflict
from policy_server.tls import cert_fingerprint, ensure_server_cert

A, B, C = "a" * 64, "b" * 64, "c" * 64


def der_with(fingerprint: str, monkeypatch) -> bytes:
    """A DER stand-in whose SHA-256 is `fingerprint` (der_sha256 patched for the test)."""
    monkeypatch.setattr("agent.tls.der_sha256", lambda der: der.decode())
    return fingerprint.encode()


def headers(value: str) -> Message:
    message = Message()
    message["Kalkan-Next-Pin"] = value
    return message


def test_an_announced_pin_is_accepted_beside_the_pinned_one_then_replaces_it(monkeypatch):
    seen: list[list[str]] = []
    pins = PinSet(A, on_change=lambda p: seen.append(p.pins))
    assert pins.announce(f"sha256:{B}") is True
    assert pins.pins == [A, B] and seen == [[A, B]]
    pins.check(der_with(A, monkeypatch))  # the served one still works
    assert pins.pins == [A, B]
    pins.check(der_with(B, monkeypatch))  # the server switched: B is the pin, A dropped
    assert pins.pins == [B] and seen[-1] == [B]
    with pytest.raises(PinMismatch, match="not the pinned .*enrol this workstation again"):
        pins.check(der_with(A, monkeypatch))


def test_nothing_but_a_well_formed_new_pin_changes_the_set(monkeypatch):
    calls = []
    pins = PinSet(A, on_change=calls.append)
    assert not pins.announce(None) and not pins.announce("") and not pins.announce("sha256:xyz")
    assert not pins.announce(A.upper())  # the pinned one itself
    assert calls == [] and pins.pins == [A]
    pins.announce(B)
    assert not pins.announce(B)  # heard again: nothing to store
    assert pins.announce(C) and pins.pins == [A, C]  # made again (--replace): the newer one
    with pytest.raises(PinMismatch, match="nor the announced next") as info:
        pins.check(der_with(B, monkeypatch))
    assert "kalkan-server tls activate" in str(info.value)


def test_an_announcement_over_plain_http_is_never_believed():
    pins = PinSet(A)
    plain = HttpSession("http://127.0.0.1:9", context=None, headers={}, timeout=1, pins=pins)
    plain.heard(headers(B))
    assert pins.pins == [A]
    pinned = ServerClient("https://127.0.0.1:9", token=None, sha256=pins)
    pinned.http.heard(headers(B))
    assert pins.pins == [A, B]


def test_the_next_pin_is_kept_in_config_json_and_an_old_config_still_loads(tmp_path: Path):
    state = AgentState(tmp_path)
    state.save_config(AgentConfig(server_url="https://s:8443", agent_id="x", server_sha256=A))
    config = state.load_config()
    assert config.server_sha256_next is None and config.pin_set().pins == [A]
    config.server_sha256_next = B
    state.save_config(config)
    assert state.load_config().pin_set().pins == [A, B]
    assert AgentConfig(server_url="http://s", agent_id="x", server_sha256=None).pin_set() is None


def test_activate_switches_the_files_and_keeps_the_old_ones(tmp_path: Path):
    files = rotation.CertFiles(tmp_path / "tls" / "server.crt", tmp_path / "tls" / "server.key")
    ensure_server_cert(files.cert, files.key)
    for path in (files.cert, files.key):  # the service's own user owns them (the command runs as root)
        if os.geteuid() == 0:
            os.chown(path, 4242, 4243)
    old = cert_fingerprint(files.cert)
    made = rotation.make_next(files, school_hosts=["school-9.test", "10.0.0.9"], extra_names=[])
    assert "school-9.test" in made.dns_names and "10.0.0.9" in made.ip_addresses
    with pytest.raises(Conflict) as info:
        rotation.make_next(files, school_hosts=[], extra_names=[])
    assert info.value.code == "tls.next_exists"

    now = datetime.now(UTC)
    seen = rotation.SeatPins("id", "seat-1", "lab", now - timedelta(days=3), [old])
    ready = rotation.readiness([seen], fingerprint=made.next, days=14, now=now)
    with pytest.raises(Conflict) as info:
        rotation.activate(files, ready=ready)
    assert info.value.code == "tls.seats_not_ready" and info.value.params["names"] == "seat-1"
    assert cert_fingerprint(files.cert) == old

    done = rotation.activate(files, ready=ready, force=True)
    assert (done.previous, done.current) == (old, made.next) == (old, cert_fingerprint(files.cert))
    assert cert_fingerprint(files.previous[0]) == old and rotation.next_fingerprint(files) is None
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # a matching pair
    assert files.key.stat().st_mode & 0o077 == 0 and files.previous[1].stat().st_mode & 0o077 == 0
    if os.geteuid() == 0:
        for path in (files.cert, files.key, *files.previous):
            assert (path.stat().st_uid, path.stat().st_gid) == (4242, 4243), path


def test_a_withdrawn_next_pin_is_dropped_but_never_the_pinned_one():
    calls = []
    pins = PinSet(A, B, on_change=calls.append)
    assert not pins.withdraw(f"sha256:{C}") and not pins.withdraw("garbage") and not pins.withdraw(None)
    assert not pins.withdraw(A) and pins.pins == [A, B]  # the pinned certificate stays
    session = ServerClient("https://127.0.0.1:9", token=None, sha256=pins).http
    message = Message()
    message["Kalkan-Withdrawn-Pin"] = f"sha256:{B}"
    session.heard(message)
    assert pins.pins == [A] and len(calls) == 1


def test_status_shows_the_pins_and_says_what_to_do_on_a_mismatch_in_each_language():
    from agent.cli import format_status

    report = {"state_dir": "/var/lib/kalkan-agent", "enrolled": True, "agent_id": "x", "server_url": "https://s",
              "seat": "s1", "room": "lab", "server_sha256": A, "server_sha256_next": B,
              "server_reachable": False, "server_error": "PinMismatch: …",
              "server_error_code": "pin_mismatch",
              "running": False, "policy_version": None, "outbox_depth": 0, "collectors": {}}
    texts = {lang: format_status(report, lang) for lang in ("en", "ru", "ky")}
    assert "AA:AA" in texts["en"] and "BB:BB" in texts["en"]
    assert "next, announced by the server" in texts["en"]
    assert "enrol it again: kalkan-agent enroll --force" in texts["en"]
    assert "зарегистрируйте его заново" in texts["ru"] and "кайра каттаңыз" in texts["ky"]
    assert "kalkan-server tls activate" in texts["ky"]
