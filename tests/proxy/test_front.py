"""The front listener (agent/proxy/front.py): the same decisions as the addon in mitmproxy, on a
table of CONNECTs and ClientHellos sent as real student and teacher accounts to two real
mitmdumps, one with `kalkan_front=true` and one without; interception handed to mitmproxy still
works; a raw byte stream is refused and reported."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.proxy.conftest import base_bundle, upstream_for
from tests.support.proxy_rig import start_proxy

# One probe: optional CONNECT head, then optional TLS (server name, trusting both CAs) and a GET,
# or raw bytes.  Prints what the client saw.
PROBE = r"""
import json, socket, ssl, sys
spec = json.loads(sys.argv[1])
out = {}
sock = socket.create_connection(("127.0.0.1", spec["port"]), timeout=spec.get("timeout", 10))
try:
    sock.sendall(spec["head"].encode("latin-1"))
    if spec["head"].startswith("CONNECT"):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        out["connect"] = head.split(b"\r\n", 1)[0].decode("latin-1")
        if not out["connect"].split(" ")[1:2] == ["200"]:
            raise SystemExit(print(json.dumps(out)))
    else:
        data = sock.recv(65536)
        out["http"] = data.split(b"\r\n", 1)[0].decode("latin-1")
        raise SystemExit(print(json.dumps(out)))
    if spec.get("raw"):
        sock.sendall(spec["raw"].encode())
        try:
            out["raw_reply"] = sock.recv(4096).decode("latin-1")
        except OSError as exc:
            out["raw_reply"] = type(exc).__name__
        raise SystemExit(print(json.dumps(out)))
    ctx = ssl.create_default_context()
    for ca in spec["cas"]:
        ctx.load_verify_locations(ca)
    ctx.check_hostname = False
    try:
        tls = ctx.wrap_socket(sock, server_hostname=spec["sni"] or None)
    except (OSError, ssl.SSLError) as exc:
        out["tls"] = "closed"
        raise SystemExit(print(json.dumps(out)))
    issuer = dict(x[0] for x in tls.getpeercert()["issuer"])
    out["tls"] = issuer.get("commonName")
    tls.sendall(f"GET / HTTP/1.1\r\nHost: {spec['sni']}\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while b"\r\n" not in data:
        chunk = tls.recv(4096)
        if not chunk:
            break
        data += chunk
    out["status"] = data.split(b"\r\n", 1)[0].decode("latin-1")
finally:
    sock.close()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def proxies(tmp_path_factory, pki, origin, origin_ca_file, accounts):
    made = {}
    for name, on in (("mitmproxy", "false"), ("front", "true")):
        extra = ["--set", f"kalkan_front={on}"]
        made[name] = start_proxy(tmp_path_factory.mktemp(f"front-{name}"), school_ca=pki["school"],
                                 upstream=upstream_for(origin), bundle=base_bundle(),
                                 upstream_ca=origin_ca_file, extra=extra)
    yield made
    for proc in made.values():
        proc.stop()


def probe(account, proxy, head: str, *, sni: str = "", raw: str = "", cas=(), timeout: float = 10) -> dict:
    spec = {"port": proxy.port, "head": head, "sni": sni, "raw": raw, "cas": [str(c) for c in cas],
            "timeout": timeout}
    result = account.run(["/usr/bin/python3", "-c", PROBE, json.dumps(spec)])
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def connect(host: str) -> str:
    return f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n"


# (who, head, SNI, raw bytes, what the client must see)  — the same through both proxies
TABLE = [
    ("teacher", connect("news.test:443"), "news.test", "", {"tls": "origin"}),  # passed through
    ("student", connect("bank.test:443"), "bank.test", "", {"tls": "origin"}),  # never intercepted
    ("teacher", connect("emis.edu.gov.kg:443"), "emis.edu.gov.kg", "", {"tls": "origin"}),  # ISUO
    ("student", connect("emis.edu.gov.kg:443"), "emis.edu.gov.kg", "", {}),
    ("student", connect("bad.test:443"), "bad.test", "", {"tls": "school", "status": "403"}),  # block page
    ("student", connect("www.google.com:443"), "www.google.com", "", {"tls": "school"}),  # SafeSearch
    ("student", connect("school.test:443"), "school.test", "", {}),  # whatever the addon decides
    ("student", connect("bank.test:443"), "bad.test", "", {"tls": "school"}),  # fronting: stricter wins
    ("teacher", connect("bank.test:443"), "news.test", "", {}),
    ("student", connect("news.test:22"), "", "", {"connect": "403"}),  # a port that is not the web's
    ("student", connect("school.test:443"), "", "SSH-2.0-OpenSSH_9.6\r\n", {"raw_reply": ""}),  # raw
    ("student", connect("198.51.100.7:443"), "", "", {}),  # an IP literal, no name in the hello
    ("student", "GET http://school.test/ HTTP/1.1\r\nHost: school.test\r\n\r\n", "", "", {"http": "200"}),
    ("student", "GET http://bad.test/ HTTP/1.1\r\nHost: bad.test\r\n\r\n", "", "", {"http": "403"}),
]


def _seen(got: dict, origin_cn: str, school_cn: str) -> dict:
    seen = dict(got)
    if "tls" in seen:
        seen["tls"] = {origin_cn: "origin", school_cn: "school"}.get(seen["tls"], seen["tls"])
    for key in ("connect", "http", "status"):
        if key in seen:
            seen[key] = seen[key].split(" ")[1] if " " in seen[key] else seen[key]
    return seen


@pytest.mark.parametrize(("who", "head", "sni", "raw", "expected"), TABLE)
def test_front_decides_as_the_addon(proxies, accounts, origin, pki, origin_ca_file, school_ca_file, who, head,
                                    sni, raw, expected):
    account = accounts[who]
    cas = (origin_ca_file, school_ca_file)
    origin_cn = dict(x[0] for x in _cert_subject(origin.ca.cert_pem))["commonName"]
    school_cn = dict(x[0] for x in _cert_subject(pki["school"].cert_pem))["commonName"]
    through_mitmproxy = _seen(probe(account, proxies["mitmproxy"], head, sni=sni, raw=raw, cas=cas),
                              origin_cn, school_cn)
    through_front = _seen(probe(account, proxies["front"], head, sni=sni, raw=raw, cas=cas),
                          origin_cn, school_cn)
    assert through_front == through_mitmproxy
    for key, value in expected.items():
        assert through_front.get(key) == value, (key, through_front)


def test_raw_stream_is_reported_through_the_front(proxies, accounts):
    probe(accounts["student"], proxies["front"], connect("school.test:443"), raw="SSH-2.0-OpenSSH_9.6\r\n")
    events = proxies["front"].wait_events("net.bypass")
    assert any(e["data"]["kind"] == "raw" and e["data"]["dst_port"] == 443 for e in events), events


def test_front_reports_passed_through_hosts_like_the_addon(proxies, accounts, origin_ca_file):
    probe(accounts["teacher"], proxies["front"], connect("emis.edu.gov.kg:443"), sni="emis.edu.gov.kg",
          cas=(origin_ca_file,))
    started = proxies["front"].wait_events("isuo.session")
    assert any(e["data"]["state"] == "start" for e in started), started


class Recorder:
    """A TCP "origin" that records, per connection, the bytes it received (it never answers)."""

    def __init__(self) -> None:
        import socket
        import threading
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[bytearray] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            got = bytearray()
            self.received.append(got)
            threading.Thread(target=self._read, args=(conn, got), daemon=True).start()

    @staticmethod
    def _read(conn, got: bytearray) -> None:
        with conn:
            while chunk := conn.recv(65536):
                got += chunk


def test_an_early_dial_sends_nothing_before_the_decision(tmp_path, pki, accounts, school_ca_file):
    """news.test passes through for teachers only.  The owner is looked up before the early dial,
    so a student's CONNECT to it is not dialled at all (the student gets the school's block page).
    A teacher's CONNECT to it is dialled early; a ClientHello naming another, blocked site is then
    decided on that name: the server gets a connection and not one byte.  The teacher's own hello
    for news.test reaches it (the positive control)."""
    recorder = Recorder()
    proxy = start_proxy(tmp_path / "early", school_ca=pki["school"], bundle=base_bundle(),
                        upstream={"news.test:443": ("127.0.0.1", recorder.port)})
    try:
        seen = probe(accounts["student"], proxy, connect("news.test:443"), sni="news.test",
                     cas=(school_ca_file,))
        assert seen.get("tls") == "Kalkan Test School CA", seen  # intercepted: the block page's TLS
        time.sleep(0.3)
        assert recorder.received == [], "a student's CONNECT to a teachers' site was dialled"
        seen = probe(accounts["teacher"], proxy, connect("news.test:443"), sni="bad.test",
                     cas=(school_ca_file,))
        assert seen.get("tls") == "Kalkan Test School CA", seen  # bad.test's block page
        time.sleep(0.3)
        # only the front dials early: on uvloop (as the agent runs it) the front took the listener
        assert len(recorder.received) >= 1, "no early dial: the test no longer tests it"
        assert "/uvloop/" in Path(f"/proc/{proxy.proc.pid}/maps").read_text(), "not on uvloop"
        assert all(len(got) == 0 for got in recorder.received), [bytes(g[:40]) for g in recorder.received]
        # the recorder never answers: the teacher's probe gives up after a second
        probe(accounts["teacher"], proxy, connect("news.test:443"), sni="news.test", timeout=1)
        hellos = [got for got in recorder.received if got.startswith(b"\x16\x03")]
        assert hellos, "the teacher's hello never came"
    finally:
        proxy.stop()
        recorder.server.close()


def test_front_logged_no_error(proxies):
    log = proxies["front"].log.read_text()
    assert "Traceback" not in log, log[-3000:]


def _cert_subject(pem: str):
    import ssl
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(pem)
        f.flush()
        return ssl._ssl._test_decode_cert(f.name)["subject"]  # type: ignore[attr-defined]
