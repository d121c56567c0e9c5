"""Several `kalkan-server` replicas behind nginx on one PostgreSQL, each replica on a "host" of
its own (a network namespace), for the scale-out tests and benchmarks/scale.

    from tests.support.replicas import ReplicaRig

    with ReplicaRig(tmp_path / "rig", replicas=2) as rig:
        rig.front                   # a KalkanServerProcess-like handle on nginx: .url, .fingerprint,
                                    # .verify, .db(), .make_enrollment_code(), .create_user(),
                                    # .login(), .enroll(), .agent_client(), .amend_policy()
        rig.replicas[0].url         # one replica directly ("https://10.X.1.2:8443")
        rig.replicas[0].client()    # an httpx.Client on it (pinned to the shared certificate)
        rig.kill(0); rig.start(0)   # SIGKILL a replica (its "host" dies) / start it again
        rig.served_by()             # nginx's access log: the replica address of each request
        rig.push_connections(0)     # open policy streams on replica 0
        rig.last_check_run(0)       # when replica 0 last ran a periodic job (only the leader does)

The picture (addresses from a free 10.X.0.0/16; names prefixed `sc-`):

    test process, agents ──▶ nginx 127.0.0.1:PORT (root namespace; TLS with the server's own
                               │      certificate, re-encrypted to the replicas)
             veth sc<t>r1h 10.X.1.1 ──── 10.X.1.2:8443  netns sc-<t>-r1: kalkan-server
             veth sc<t>r2h 10.X.2.1 ──── 10.X.2.2:8443  netns sc-<t>-r2: kalkan-server
    PostgreSQL (tests/support/postgres.py) listens on 127.0.0.1 and on 10.X.i.1: each replica
    reaches it over its own link, as a replica on another host would over the network.

The replicas share one state dir (the TLS certificate and key, the school CA, the published
filter indexes, the seat packages): on separate hosts that folder is shared storage or copied
once (docs/operations.md "Scale out").  The first replica starts alone (it makes the
certificate and migrates), the others after it.  nginx's configuration is the one shipped in
`install/nginx/kalkan-replicas.conf`, filled in.  Needs root (namespaces) and Debian's nginx
(install/apt-packages.txt); fails with a clear message without them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.support import netns_sweep
from tests.support.postgres import PostgresCluster
from tests.support.server import REPO, KalkanServerProcess, free_port

NGINX_TEMPLATE = REPO / "install" / "nginx" / "kalkan-replicas.conf"
REPLICA_PORT = 8443
START_TIMEOUT_S = 60.0


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and result.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")
    return result


def _free_subnet() -> int:
    """A second octet X with nothing of 10.X.0.0/16 routed on this machine yet."""
    used = _run("ip", "-4", "route", "show", "table", "all").stdout
    nets = []
    for word in re.findall(r"\b10\.\d+\.\d+\.\d+(?:/\d+)?", used):
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.ip_network(word, strict=False))
    start = 64 + os.getpid() % 128
    for k in range(128):
        x = 64 + (start - 64 + k) % 128
        block = ipaddress.ip_network(f"10.{x}.0.0/16")
        if not any(n.overlaps(block) for n in nets):
            return x
    raise RuntimeError("no free 10.X.0.0/16 for the replicas' links")


def pinned_context(cert_path: Path) -> ssl.SSLContext:
    """Trusts exactly the server certificate, whatever address it is reached at."""
    context = ssl.create_default_context(cafile=str(cert_path))
    context.check_hostname = False
    return context


class Replica:
    """One `kalkan-server run` in its own network namespace."""

    def __init__(self, rig: ReplicaRig, index: int) -> None:
        self.rig = rig
        self.index = index  # 1-based, as in the addresses
        self.netns = f"sc-{rig.tag}-r{index}"
        self.host_if = f"sc{rig.tag}r{index}h"
        self.gateway = f"10.{rig.x}.{index}.1"  # the root namespace's end: PostgreSQL, nginx
        self.address = f"10.{rig.x}.{index}.2"
        self.log_path = rig.root / f"replica-{index}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"https://{self.address}:{REPLICA_PORT}"

    def setup_network(self) -> None:
        netns_sweep.claim(self.netns)  # this run owns them (a killed run's are swept at the next start)
        netns_sweep.claim(self.host_if)
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _run("ip", "addr", "add", f"{self.gateway}/30", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        inside = ("ip", "netns", "exec", self.netns)
        _run(*inside, "ip", "addr", "add", f"{self.address}/30", "dev", "eth0")
        _run(*inside, "ip", "link", "set", "eth0", "up")
        _run(*inside, "ip", "link", "set", "lo", "up")

    def teardown_network(self) -> None:
        _run("ip", "netns", "del", self.netns, check=False)  # takes the veth pair with it
        _run("ip", "link", "del", self.host_if, check=False)
        netns_sweep.release(self.netns)
        netns_sweep.release(self.host_if)

    def command(self) -> list[str]:
        rig = self.rig
        return ["ip", "netns", "exec", self.netns, sys.executable, "-m", "policy_server.cli", "run",
                "--state-dir", str(rig.state_dir), "--host", self.address, "--port", str(REPLICA_PORT),
                "--db", rig.db_url_via(self.gateway), "--workers", str(rig.workers),
                "--forwarded-allow-ips", self.gateway, "--log-level", "info"]

    def start(self) -> Replica:
        if self.running:
            return self
        env = {**os.environ, **self.rig.env,
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                         env=env, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica {self.index} exited with {self.proc.returncode}:\n"
                                   f"{self.log_text()}")
            if self.rig.cert_path.exists():
                with contextlib.suppress(httpx.HTTPError, ssl.SSLError, OSError):
                    if httpx.get(self.url + "/healthz", verify=self.rig.verify, timeout=2).status_code == 200:
                        return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"replica {self.index} did not answer /healthz:\n{self.log_text()}")

    @property
    def running(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)

    def kill(self) -> None:
        """SIGKILL: the host dies (its workers too: they are in its process group)."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, **kwargs) -> httpx.Client:
        timeout = kwargs.pop("timeout", 30)
        return httpx.Client(base_url=self.url, verify=self.rig.verify, timeout=timeout, **kwargs)

    def metrics(self) -> str:
        with self.client(headers={"Authorization": f"Bearer {self.rig.metrics_token}"}) as c:
            r = c.get("/metrics")
            r.raise_for_status()
            return r.text

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""


class ReplicaRig:
    def __init__(self, root: Path | str, *, replicas: int = 2, workers: int = 1,
                 env: dict[str, str] | None = None, access_log: bool = True) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("the replica rig makes network namespaces: run the tests as root")
        if shutil.which("nginx") is None:
            raise RuntimeError("nginx is not installed: apt-get install nginx (install/apt-packages.txt)")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.root / "state"
        self.tag = f"{os.getpid() % 100000}"
        self.x = _free_subnet()
        self.workers = workers
        self.access_log = access_log
        self.metrics_token = "scale-metrics-token-0123456789"
        self.env = {"KALKAN_METRICS_TOKEN": self.metrics_token, **(env or {})}
        self.replicas = [Replica(self, i + 1) for i in range(replicas)]
        self.nginx_port = free_port()
        self.nginx_dir = self.root / "nginx"
        self.nginx: subprocess.Popen | None = None
        self.postgres: PostgresCluster | None = None
        self.database = "kalkan"
        self.front: KalkanServerProcess | None = None

    # ------------------------------------------------------------------ paths and URLs

    @property
    def cert_path(self) -> Path:
        return self.state_dir / "tls" / "server.crt"

    @property
    def key_path(self) -> Path:
        return self.state_dir / "tls" / "server.key"

    @property
    def verify(self) -> ssl.SSLContext:
        return pinned_context(self.cert_path)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.nginx_port}"

    def db_url_via(self, host: str) -> str:
        return f"postgresql+psycopg://{self.postgres.user}@{host}:{self.postgres.port}/{self.database}"

    # ------------------------------------------------------------------ life

    def start(self) -> ReplicaRig:
        # a run killed with SIGKILL left its sc-<t>-rN namespaces and sc<t>rNh veths: those whose
        # recorded owner is dead go (never another live run's, in another checkout)
        netns_sweep.sweep("sc")
        try:
            for replica in self.replicas:
                replica.setup_network()
            self.postgres = PostgresCluster(listen=("127.0.0.1", *(r.gateway for r in self.replicas)),
                                            trust_networks=(f"10.{self.x}.0.0/16",))
            self.postgres.start()
            self.front = KalkanServerProcess(self.state_dir, self.postgres.url(self.database),
                                             port=self.nginx_port)
            for replica in self.replicas:  # one after the other: the first makes the certificate
                replica.start()
            self._start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_nginx(self) -> None:
        self.nginx_dir.mkdir(parents=True, exist_ok=True)
        # nginx's workers run as nobody and spool request bodies (event batches) to disk: their
        # temp folders sit in a folder of their own under /tmp, reachable by nobody.
        tmp = self.nginx_tmp = Path(tempfile.mkdtemp(prefix="sc-nginx-"))
        os.chmod(tmp, 0o711)
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp / name).mkdir(parents=True, exist_ok=True)
            shutil.chown(tmp / name, "nobody")
        upstreams = "\n    ".join(f"server {r.address}:{REPLICA_PORT} max_fails=3 fail_timeout=10s;"
                                   for r in self.replicas)
        values = {"@REPLICAS@": upstreams, "@LISTEN@": f"127.0.0.1:{self.nginx_port}",
                  "@CERT@": str(self.cert_path), "@KEY@": str(self.key_path)}
        lines = []
        for line in NGINX_TEMPLATE.read_text().splitlines():
            if not line.lstrip().startswith("#"):  # the header explains the same markers
                for marker, value in values.items():
                    line = line.replace(marker, value)
            lines.append(line)
        site = "\n".join(lines) + "\n"
        (self.nginx_dir / "kalkan.conf").write_text(site)
        access = "access_log off;"
        if self.access_log:
            access = (f"log_format kalkan '$request_method $uri $status $upstream_addr';\n"
                      f"    access_log {self.nginx_dir / 'access.log'} kalkan;")
        (self.nginx_dir / "nginx.conf").write_text(f"""
user nobody nogroup;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {self.nginx_dir / 'nginx.pid'};
error_log {self.nginx_dir / 'error.log'} warn;
events {{ worker_connections 10000; }}
http {{
    {access}
    client_body_temp_path {tmp / 'body'};
    proxy_temp_path {tmp / 'proxy'};
    fastcgi_temp_path {tmp / 'fastcgi'};
    uwsgi_temp_path {tmp / 'uwsgi'};
    scgi_temp_path {tmp / 'scgi'};
    include {self.nginx_dir / 'kalkan.conf'};
}}
""")
        conf = ["nginx", "-p", str(self.nginx_dir), "-c", str(self.nginx_dir / "nginx.conf"),
                "-e", str(self.nginx_dir / "error.log")]
        _run(*conf, "-t")
        self.nginx = subprocess.Popen([*conf, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                      stderr=open(self.nginx_dir / "stderr.log", "ab"),  # noqa: SIM115
                                      start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.nginx_port), 0.5):
                return
            if self.nginx.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.nginx_dir / 'error.log').read_text()}")
            time.sleep(0.05)
        raise RuntimeError("nginx did not listen")

    def stop(self) -> None:
        if self.nginx and self.nginx.poll() is None:
            self.nginx.terminate()
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.nginx.pid, signal.SIGKILL)
                self.nginx.wait()
        for replica in self.replicas:
            replica.stop()
        if self.front is not None:
            self.front.stop()  # only its database handle: it runs no process
        if self.postgres is not None:
            self.postgres.stop()
        for replica in self.replicas:
            replica.teardown_network()
        if getattr(self, "nginx_tmp", None) is not None:
            shutil.rmtree(self.nginx_tmp, ignore_errors=True)

    def __enter__(self) -> ReplicaRig:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers

    def kill(self, index: int) -> None:
        self.replicas[index].kill()

    def served_by(self) -> list[tuple[str, str, str, str]]:
        """(method, path, status, replica address) of each request nginx passed on."""
        path = self.nginx_dir / "access.log"
        rows = []
        for line in path.read_text().splitlines() if path.exists() else ():
            parts = line.split(" ")
            if len(parts) >= 4:
                rows.append((parts[0], parts[1], parts[2], parts[3].rsplit(":", 1)[0]))
        return rows

    def push_connections(self, index: int) -> int:
        """Open policy streams on that replica (its /metrics)."""
        return sum(int(float(line.rsplit(" ", 1)[1])) for line in self.replicas[index].metrics().splitlines()
                   if line.startswith("kalkan_push_connections{"))

    def last_check_run(self, index: int) -> float:
        """Unix time a periodic job last finished in that replica (0: never), from its /metrics:
        only the leader runs them."""
        times = [float(line.rsplit(" ", 1)[1]) for line in self.replicas[index].metrics().splitlines()
                 if line.startswith("kalkan_check_last_run_timestamp_seconds{")]
        return max(times, default=0.0)
