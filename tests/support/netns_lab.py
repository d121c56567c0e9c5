"""A school computer lab in network namespaces, for the end-to-end tests of every area.

    from tests.support.netns_lab import NetnsLab

    with NetnsLab(hosts=["news.test", "school.test"]) as lab:   # the "internet" namespace
        seat = lab.add_seat("lab1-01", server, room="lab-1")           # enrolled, running agent
        status, body = seat.curl("student", "http://news.test/")      # as the student, transparently
        seat.agent.wait_status(...)

What it builds (everything real, nothing on the machine's own network):

* an **"internet" namespace** (``fl-n<tag>``) with the origin web servers (HTTP 80 and HTTPS
  443, one address, every test host name; certificate from a throwaway origin CA) and the
  seats' DNS resolver (`netns_origins.py`), which resolves the lab's host names to them;
* one **namespace per seat** (``fl-s<N><tag>``), joined to the internet by a veth pair, its
  `/etc/resolv.conf` naming the lab's resolver and `/etc/hosts` the report page's address
  (``ip netns exec`` mounts ``/etc/netns/<ns>/*`` over `/etc`);
* in each seat, the **real agent** (`kalkan-agent run --platform linux`, enrolled with the real
  `kalkan-agent enroll` to the real server process) with its proxy collector: it installs the
  real nftables table it renders from the policy into the seat's namespace and supervises
  mitmdump with the addon as the ``kalkan-proxy`` account (install/install-agent.sh
  ``--account-only``); the student (uid ≥ 1000) has only the proxy's way out;
* the server stays a 127.0.0.1 process of the root namespace (Chromium, the tests and the
  agents' enrolment reach it there); inside each seat the same 127.0.0.1:PORT is a forward to
  it (a listening socket made in the seat's namespace, see `_listen_in`), so the agent's pinned
  server URL is the one it enrolled with.

Cleaned up by `close()` (and the context manager) even when a step fails: processes stopped,
namespaces and their ``/etc/netns`` folders deleted.  Namespaces are prefixed ``fl-``; each
records this process as its owner (`netns_sweep.claim`), and `start()` first sweeps the ``fl-``
namespaces whose owner is dead (a run killed with SIGKILL never reaches `close()`), never those of
another run still alive in another checkout.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tests.support import netns_sweep
from tests.support.agent_process import AgentProcess
from tests.support.proxy_rig import make_ca, make_leaf

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ORIGINS = HERE / "netns_origins.py"
WEB, RESOLVER = "10.79.0.2", "10.79.0.53"
REPORT_ADDRESS = "192.0.2.80"  # agent.proxy.hosts.REPORT_ADDRESS: redirected to the proxy
REGULAR_PORT, TRANSPARENT_PORT = 3128, 3129
STUDENT, TEACHER = "kalkan-t-stu", "kalkan-t-tch"  # as tests/proxy (uids ≥ 1000, made by useradd)
CLONE_NEWNET = 0x40000000
PREFIX = "fl-"  # every namespace of the lab; a killed run's are swept at the next start (netns_sweep)


def sh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def os_account(name: str) -> Account:
    """The OS account `name` (made with useradd if missing: a real uid ≥ 1000)."""
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        sh("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name)
        entry = pwd.getpwnam(name)
    return Account(name, entry.pw_uid, entry.pw_gid)


def proxy_account() -> Account:
    """`kalkan-proxy`, made by install/install-agent.sh --account-only (as on a school PC)."""
    made = subprocess.run(
        [str(REPO / "install" / "install-agent.sh"), "--account-only"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if made.returncode != 0:
        raise RuntimeError(f"install-agent.sh --account-only failed: {made.stderr}")
    return os_account("kalkan-proxy")


# --------------------------------------------------------------------------- a socket in a namespace

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _listen_in(ns: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket made inside namespace `ns` (only this thread switches, and back):
    a socket stays in the namespace it was made in, whichever thread uses it after."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            return socket.create_server((host, port), backlog=64)
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)


class Forward:
    """127.0.0.1:port inside a seat's namespace → 127.0.0.1:port of the root namespace (the server)."""

    def __init__(self, ns: str, port: int) -> None:
        self.port = port
        self.sock = _listen_in(ns, "127.0.0.1", port)
        self.closed = False
        threading.Thread(target=self._accept, name=f"fwd-{ns}", daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.sock.close()


# --------------------------------------------------------------------------- a seat


@dataclass
class Seat:
    name: str
    ns: str
    agent: AgentProcess
    lab: NetnsLab
    forward: Forward | None = None

    @property
    def proxy_dir(self) -> Path:
        return self.agent.state_dir / "collectors" / "proxy"

    def run(self, who: str, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `args` inside the seat's namespace as `who` ("student", "teacher", "root")."""
        prefix = ["ip", "netns", "exec", self.ns]
        if who != "root":
            account = self.lab.accounts[who]
            prefix += ["setpriv", f"--reuid={account.uid}", f"--regid={account.gid}", "--clear-groups"]
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout)

    def curl(self, who: str, url: str, *extra: str, timeout: float = 10) -> tuple[int, str]:
        """(HTTP status, body) of `url` fetched by `who` at this seat, through nothing but the
        seat's own network (the nftables redirect takes web traffic to the proxy); 0 if no answer."""
        result = self.run(
            who,
            ["curl", "-sS", "--max-time", str(timeout), "-w", "\n%{http_code}", url, *extra],
            timeout=timeout + 5,
        )
        body, _, code = result.stdout.rpartition("\n")
        return int(code or 0) if code.isdigit() else 0, body

    def status(self, who: str, url: str, *extra: str) -> int:
        return self.curl(who, url, *extra)[0]

    def blocked(self, who: str, url: str) -> bool:
        status, body = self.curl(who, url)
        return status == 403 or 'id="kalkan-block"' in body

    def logs(self) -> str:
        parts = []
        for path in (self.agent.state_dir / "agent.log", self.proxy_dir / "mitmdump.log"):
            if path.exists():
                parts.append(f"--- {self.name}: {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def nft_table(self) -> str:
        return sh(
            "ip", "netns", "exec", self.ns, "nft", "list", "table", "inet", "kalkan", check=False
        ).stdout


# --------------------------------------------------------------------------- the lab


@dataclass
class NetnsLab:
    hosts: list[str]
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    seats: dict[str, Seat] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.net = f"fl-n{self.tag}"
        # not under pytest's tmp (root-only): the proxy's account and the student must enter it
        self.files = Path(tempfile.mkdtemp(prefix="fl-lab-"))
        self.files.chmod(0o755)
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.accounts: dict[str, Account] = {}
        self.origin_ca_file = self.files / "origin-ca.pem"

    def __enter__(self) -> NetnsLab:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_ns(self, name: str) -> list[str]:
        netns_sweep.claim(name)  # first: a run killed right after `add` leaves a name with a dead owner
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        return ["ip", "netns", "exec", name]

    def start(self) -> NetnsLab:
        if os.geteuid() != 0:
            raise RuntimeError("the netns lab needs root (namespaces, nftables, other uids)")
        netns_sweep.sweep(PREFIX)  # what a killed run (SIGKILL: no close()) left behind
        self.proxy_user = proxy_account()
        self.accounts = {
            "student": os_account(STUDENT),
            "teacher": os_account(TEACHER),
            "proxy": self.proxy_user,
        }
        for who in ("student", "teacher"):  # people, as the table sees them (HUMAN_UID_MIN)
            if self.accounts[who].uid < 1000:
                raise RuntimeError(f"{self.accounts[who].name} has uid {self.accounts[who].uid} < 1000: "
                                   "the seat's table would treat it as a system account")
        in_net = self._add_ns(self.net)
        sh(*in_net, "ip", "link", "set", "lo", "up")
        for address in (WEB, RESOLVER):
            sh(*in_net, "ip", "addr", "add", f"{address}/32", "dev", "lo")
        origin_ca = make_ca("Kalkan lab origin root")
        leaf = make_leaf(origin_ca, self.hosts)
        (self.files / "leaf.pem").write_text(leaf.cert_pem)
        (self.files / "leaf.key").write_text(leaf.key_pem)
        self.origin_ca_file.write_text(origin_ca.cert_pem)
        plan = {"web": [WEB], "resolver": RESOLVER, "zone": {h: WEB for h in self.hosts}}
        (self.files / "plan.json").write_text(json.dumps(plan))
        origins = subprocess.Popen(
            [
                *in_net,
                sys.executable,
                str(ORIGINS),
                str(self.files / "leaf.pem"),
                str(self.files / "leaf.key"),
                str(self.files / "plan.json"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(origins)
        if origins.stdout.readline().strip() != "ready":
            raise RuntimeError("the lab's origin servers did not start")
        return self

    def add_seat(
        self,
        name: str,
        server,
        *,
        room: str | None = "lab-1",
        collectors: tuple[str, ...] = ("proxy",),
        heartbeat_s: float = 1,
        settings: dict | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Seat:
        """A seat namespace with an agent enrolled to `server` and started; with `wait`, returns once
        the proxy answers on the seat (the table installed, mitmdump listening)."""
        number = len(self.seats) + 1
        ns = f"fl-s{number}{self.tag}"
        in_ws = self._add_ns(ns)
        etc = Path("/etc/netns") / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {RESOLVER}\noptions timeout:1 attempts:2\n")
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{REPORT_ADDRESS}\treport.kalkan\n")
        a, b = f"fl{self.tag}{number}a", f"fl{self.tag}{number}b"
        sh("ip", "link", "add", a, "netns", ns, "type", "veth", "peer", "name", b, "netns", self.net)
        for cmd in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"10.79.{number}.2/30", "dev", a],
            ["ip", "link", "set", a, "up"],
            ["ip", "route", "add", "default", "via", f"10.79.{number}.1"],
        ):
            sh(*in_ws, *cmd)
        sh("ip", "netns", "exec", self.net, "ip", "addr", "add", f"10.79.{number}.1/30", "dev", b)
        sh("ip", "netns", "exec", self.net, "ip", "link", "set", b, "up")
        agent = AgentProcess(self.files / name)
        self.files.joinpath(name).chmod(0o755)
        seat = Seat(name, ns, agent, self)
        self.seats[name] = seat
        agent.enroll(server, seat=name, room=room)
        seat.forward = Forward(ns, urlsplit(agent.config["server_url"]).port or 443)
        proxy_settings = {
            "regular_port": REGULAR_PORT,
            "transparent_port": TRANSPARENT_PORT,
            "firewall": True,
            "hosts_file": str(etc / "hosts"),
            "ca_root": str(seat.proxy_dir / "root"),
            "extra_args": ["--set", f"ssl_verify_upstream_trusted_ca={self.origin_ca_file}", *extra_args],
            **(settings or {}),
        }
        seat.proxy_dir.mkdir(parents=True, exist_ok=True)
        (seat.proxy_dir / "settings.json").write_text(json.dumps(proxy_settings))
        old = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})
        try:
            agent.start(
                collectors=list(collectors), platform="linux", heartbeat_s=heartbeat_s, wrap=in_ws[:4]
            )
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        if wait and "proxy" in collectors:
            self.wait_proxy(seat)
        return seat

    def wait_proxy(self, seat: Seat, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listening = sh("ip", "netns", "exec", seat.ns, "ss", "-ltnH", check=False).stdout
            if (
                f":{TRANSPARENT_PORT} " in listening
                and f":{REGULAR_PORT} " in listening
                and "redirect" in seat.nft_table()
            ):
                return
            time.sleep(0.2)
        raise AssertionError(f"the proxy of {seat.name} never listened (or no nftables table)\n{seat.logs()}")

    def logs(self) -> str:
        return "\n".join(seat.logs() for seat in self.seats.values())

    def close(self) -> None:
        for seat in self.seats.values():
            try:
                seat.agent.stop()
            except Exception:
                seat.agent.kill()
            if seat.forward is not None:
                seat.forward.close()
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for ns in reversed(self.namespaces):
            # whatever is still inside (a mitmdump the agent left) goes with its namespace's processes
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
            netns_sweep.release(ns)
        self.namespaces.clear()
        shutil.rmtree(self.files, ignore_errors=True)
