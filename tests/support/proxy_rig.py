"""A real mitmdump with the Kalkan addon in front of real local origin servers.

Used by tests/proxy and tests/e2e/test_proxy_*.  Everything listens on 127.0.0.1;
fake host names reach the origins through the proxy's own upstream mapping
(tests/support/upstream_map.py), never through DNS.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.collectors.proxy import UVLOOP_MAIN, mitmdump_launcher

REPO = Path(__file__).resolve().parents[2]
MITMDUMP = Path(sys.executable).parent / "mitmdump"
ENTRY = REPO / "agent" / "proxy" / "mitm_entry.py"
UPSTREAM_MAP = Path(__file__).resolve().parent / "upstream_map.py"
# how the tests start the proxy: as the agent does (mitmdump on uvloop)
LAUNCH = mitmdump_launcher("uvloop")


def launch_of(checkout: Path) -> list[str]:
    """How an older checkout's agent starts mitmdump (the benchmarks' `--before`): on uvloop
    where it has the launcher, else mitmdump itself."""
    launcher = checkout / UVLOOP_MAIN.relative_to(REPO)
    return [sys.executable, str(launcher)] if launcher.exists() else [str(MITMDUMP)]


# --------------------------------------------------------------------------- certificates


@dataclass
class Pem:
    cert_pem: str
    key_pem: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def sha256(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def make_ca(name: str) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return _pem(cert, key)


def make_leaf(ca: Pem, hosts: list[str]) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return _pem(cert, key)


def _pem(cert: x509.Certificate, key) -> Pem:
    return Pem(cert.public_bytes(serialization.Encoding.PEM).decode(),
               key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode(), cert, key)


# --------------------------------------------------------------------------- origin servers


BIG = bytes(range(256)) * (16 * 1024)


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with what it received (so tests see SafeSearch rewrites)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall
    seen: list[dict] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        record = {"method": self.command, "path": self.path, "host": self.headers.get("host", ""),
                  "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body.decode("latin-1")}
        self.seen.append(record)
        if self.path.startswith("/file.exe"):
            payload, ctype = b"MZ" + b"\0" * 64, "application/x-msdownload"
        elif self.path.startswith("/big"):  # 4 MiB, and what was uploaded: relays under flow control
            payload, ctype = BIG + hashlib.sha256(body).hexdigest().encode(), "application/octet-stream"
        else:
            payload = (f"<!doctype html><html><head><title>origin {record['host']}</title></head>"
                       f"<body><h1 id='origin'>ORIGIN OK {record['host']}</h1></body></html>").encode()
            ctype = "text/html; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Origin-Echo", json.dumps({"path": record["path"], "host": record["host"]}))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, *args) -> None:
        pass


@dataclass
class Origin:
    http_port: int
    https_port: int
    leaf: Pem
    ca: Pem
    seen: list[dict]
    servers: list = field(default_factory=list)

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def start_origin(hosts: list[str], tmp: Path) -> Origin:
    ca = make_ca("Test Origin Root")
    leaf = make_leaf(ca, hosts)
    (tmp / "leaf.pem").write_text(leaf.cert_pem + ca.cert_pem)
    (tmp / "leaf.key").write_text(leaf.key_pem)
    (tmp / "origin-ca.pem").write_text(ca.cert_pem)
    handler = type("Echo", (_EchoHandler,), {"seen": []})
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    secure = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp / "leaf.pem", tmp / "leaf.key")
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    for server in (plain, secure):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return Origin(plain.server_address[1], secure.server_address[1], leaf, ca, handler.seen, [plain, secure])


# --------------------------------------------------------------------------- the proxy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mitmdump exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class ProxyProcess:
    port: int
    state_dir: Path
    confdir: Path
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def policy_path(self) -> Path:
        return self.state_dir / "policy.json"

    def write_policy(self, bundle) -> None:
        from agent.state import atomic_write

        atomic_write(self.policy_path, bundle.model_dump_json(indent=1))

    def events(self, event_type: str | None = None) -> list[dict]:
        from agent.outbox import Outbox

        path = self.state_dir / "outbox.sqlite"
        if not path.exists():
            return []
        with Outbox(path) as box:
            rows = [json.loads(e.body) if isinstance(e.body, str) else e.body
                    for e in box.peek_batch(max_events=1000, max_bytes=16 * 1024 * 1024)]
        return [r for r in rows if event_type is None or r["type"] == event_type]

    def wait_events(self, event_type: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(event_type)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def report_through_proxy(port: int, event_fd: int) -> dict:
    """Send the report page's form through the proxy on `port` (a typed URL, a comment) and
    return the event the proxy wrote on its pipe; the read end `event_fd` is closed after."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"}))
    with opener.open("http://report.kalkan/send", data=b"typed=http%3A%2F%2Fx.test%2F&comment=c",
                     timeout=20) as response:
        assert response.status == 200
    with os.fdopen(event_fd, "rb") as pipe:
        return json.loads(pipe.readline())


def env_options(extra: list[str]) -> list[str]:
    """`KALKAN_TEST_PROXY_SET="kalkan_front=true …"`: every test mitmdump with these options too (the
    whole suite with another option), except those the test sets itself.  (mitmproxy drops every
    option a script defines when one of them is given twice.)"""
    own = {extra[i + 1].partition("=")[0] for i, arg in enumerate(extra[:-1]) if arg == "--set"}
    return [arg for option in os.environ.get("KALKAN_TEST_PROXY_SET", "").split()
            if option.partition("=")[0] not in own for arg in ("--set", option)]


def start_proxy(state_dir: Path, *, school_ca: Pem, upstream: dict[str, tuple[str, int]] | None = None,
                seat: str = "lab1-01", language: str = "ky", extra: list[str] | None = None,
                bundle=None, user: tuple[int, int] | None = None,
                upstream_ca: Path | None = None, prefix: list[str] | None = None,
                ready_s: float = 30.0, launch: list[str] | None = None) -> ProxyProcess:
    """`prefix`: a command that runs mitmdump (the instruction benchmark's valgrind), given
    `ready_s` to listen; `launch`: how mitmdump is started (default `LAUNCH`, as the agent does)."""
    from agent.proxy.ca import write_proxy_ca

    state_dir.mkdir(parents=True, exist_ok=True)
    confdir = state_dir / "mitmproxy"
    write_proxy_ca(confdir, school_ca.cert_pem, school_ca.key_pem)
    port = free_port()
    proxy = ProxyProcess(port, state_dir, confdir, None, state_dir / "mitmdump.log")  # type: ignore[arg-type]
    if bundle is not None:
        proxy.write_policy(bundle)
    mapping = ",".join(f"{k}={v[0]}:{v[1]}" for k, v in (upstream or {}).items())
    cmd = [*(prefix or []), *(launch or LAUNCH), "--quiet", "-s", str(ENTRY), "-s", str(UPSTREAM_MAP),
           "--mode", f"regular@127.0.0.1:{port}",
           "--set", f"confdir={confdir}", "--set", "connection_strategy=lazy",
           *(["--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}"] if upstream_ca else []),
           "--set", f"kalkan_state_dir={state_dir}", "--set", f"kalkan_seat={seat}",
           "--set", f"kalkan_language={language}", "--set", f"test_upstream_map={mapping}",
           *env_options(extra or []), *(extra or [])]
    kwargs = {"user": user[0], "group": user[1], "extra_groups": []} if user else {}
    log = open(proxy.log, "ab")  # noqa: SIM115
    proxy.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "HOME": str(state_dir)}, **kwargs)
    log.close()
    wait_port(port, ready_s, proc=proxy.proc)
    return proxy
