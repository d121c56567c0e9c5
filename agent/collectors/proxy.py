"""`ProxyCollector`: runs the filtering proxy (mitmdump + the Kalkan addon) as a
supervised child process, keeps the no-bypass firewall in step with the policy,
and installs the school CA.

* The child runs as the proxy's own OS user (`kalkan-proxy` by default), the one
  uid the nftables redirect leaves alone; if that user does not exist (a developer
  machine) it runs as the agent's user and the firewall is not installed.
* If the child dies it is restarted with a growing pause (1 s … 30 s); the number of
  restarts and the last exit code show in `kalkan-agent status`.
* Policy changes need no restart: the addon reloads `policy.json` itself; this
  collector only regenerates the firewall ruleset when its inputs change.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent.collectors.base import Collector, CollectorContext, healthy, unhealthy
from agent.platform.firewall import FirewallError, firewall_adapter
from agent.proxy import ca as ca_mod
from agent.proxy.nftables import DEFAULT_TRANSPARENT_PORT, config_from_policy, render_ruleset
from policy_server.protocol import CollectorHealth, CollectorState, PolicyBundle

ENTRY = Path(__file__).resolve().parents[1] / "proxy" / "mitm_entry.py"
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0  # a child that lived this long resets the back-off


@dataclass
class ProxySettings:
    proxy_user: str = "kalkan-proxy"
    listen_host: str = "127.0.0.1"
    regular_port: int = 3128
    transparent_port: int = DEFAULT_TRANSPARENT_PORT
    firewall: bool = True
    language: str = "ky"
    index: str = ""  # category lists (UT1 folder or compiled index); "" = none yet
    extra_args: tuple[str, ...] = ()


def mitmdump_binary() -> str:
    candidate = Path(sys.executable).parent / "mitmdump"
    return str(candidate) if candidate.exists() else "mitmdump"


def mitmdump_command(settings: ProxySettings, *, state_dir: Path, confdir: Path,
                     seat: str | None, room: str | None = None) -> list[str]:
    """The child's command line (pure: tested on its own)."""
    args = [mitmdump_binary(), "--quiet", "-s", str(ENTRY),
            "--mode", f"regular@{settings.listen_host}:{settings.regular_port}"]
    if settings.transparent_port:
        args += ["--mode", f"transparent@{settings.transparent_port}"]
    args += [
        "--set", f"confdir={confdir}",
        "--set", "connection_strategy=lazy",
        "--set", "stream_large_bodies=8m",
        "--set", f"kalkan_state_dir={state_dir}",
        "--set", f"kalkan_language={settings.language}",
    ]
    if seat:
        args += ["--set", f"kalkan_seat={seat}"]
    if room:
        args += ["--set", f"kalkan_room={room}"]
    if settings.index:
        args += ["--set", f"kalkan_index={settings.index}"]
    return args + list(settings.extra_args)


class ProxyCollector(Collector):
    name = "proxy"

    def __init__(self, ctx: CollectorContext, settings: ProxySettings | None = None) -> None:
        super().__init__(ctx)
        self.settings = settings or ProxySettings()
        self.dir = Path(ctx.state_dir) / "collectors" / "proxy"
        self.confdir = self.dir / "mitmproxy"
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.restarts = 0
        self.last_exit: int | None = None
        self.problem = ""
        self.firewall_problem = ""
        self._ruleset: str | None = None
        self._firewall = firewall_adapter("fake" if ctx.platform == "fake" else "linux")

    # ------------------------------------------------------------------ plumbing

    def _proxy_account(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self.settings.proxy_user)
        except KeyError:
            return None

    def _spawn(self) -> subprocess.Popen:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.confdir.mkdir(parents=True, exist_ok=True)
        account = self._proxy_account()
        kwargs: dict = {}
        if account is not None:
            os.chown(self.confdir, account.pw_uid, account.pw_gid)
            kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        log_file = open(self.dir / "mitmdump.log", "ab")  # noqa: SIM115 - handed to the child
        cmd = mitmdump_command(self.settings, state_dir=Path(self.ctx.state_dir), confdir=self.confdir,
                               seat=self.ctx.seat, room=self.ctx.room)
        env = {**os.environ, "HOME": str(self.dir)}
        try:
            return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, **kwargs)
        finally:
            log_file.close()

    def _supervise(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with self._lock:
                    self._proc = self._spawn()
                proc = self._proc
            except Exception as exc:
                self.problem = f"cannot start mitmdump: {exc}"
                self.ctx.log.error(self.problem)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            self.problem = ""
            code = proc.wait()
            if self._stop.is_set():
                return
            self.last_exit = code
            self.restarts += 1
            self.problem = f"mitmdump exited with code {code}; restarting (see {self.dir / 'mitmdump.log'})"
            self.ctx.log.error(self.problem)
            if time.monotonic() - started > STABLE_S:
                backoff = 1.0
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    # ------------------------------------------------------------------ Collector

    def start(self) -> None:
        self._stop.clear()
        self._apply_firewall(self.ctx.policy)
        self._thread = threading.Thread(target=self._supervise, name="kalkan-proxy-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._thread is not None:
            self._thread.join(15)

    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def health(self) -> CollectorHealth:
        try:
            if self._stop.is_set():
                return CollectorHealth(state=CollectorState.stopped, detail="stopped")
            pid = self.pid()
            if pid is None:
                return unhealthy(self.problem or "mitmdump is not running", failed=self.restarts > 5)
            detail = f"mitmdump pid {pid}, restarts {self.restarts}"
            if self.problem or self.firewall_problem:
                return unhealthy(f"{detail}; {self.problem or self.firewall_problem}")
            if not (self.confdir / ca_mod.SCHOOL_CA_MARK).exists():
                return unhealthy(f"{detail}; no school CA yet (mitmproxy made its own)")
            return healthy(detail)
        except Exception as exc:  # health never raises
            return unhealthy(f"health check failed: {exc}")

    def on_policy(self, bundle: PolicyBundle) -> None:
        super().on_policy(bundle)
        self._apply_firewall(bundle)  # the addon reloads policy.json by itself

    # ------------------------------------------------------------------ firewall and CA

    def _apply_firewall(self, bundle: PolicyBundle) -> None:
        if not self.settings.firewall:
            return
        account = self._proxy_account()
        if account is None and self.ctx.platform != "fake":
            self.firewall_problem = (f"no OS user {self.settings.proxy_user!r}: the firewall redirect is "
                                     "not installed; create it with `useradd --system kalkan-proxy`")
            return
        uid = account.pw_uid if account is not None else 999
        ruleset = render_ruleset(config_from_policy(bundle, proxy_uid=uid,
                                                    transparent_port=self.settings.transparent_port))
        if ruleset == self._ruleset:
            return
        try:
            self._firewall.install(ruleset)
            self._ruleset = ruleset
            self.firewall_problem = ""
        except FirewallError as exc:
            self.firewall_problem = str(exc)
            self.ctx.log.error("proxy firewall: %s", exc)

    def install_ca(self, cert_pem: str, key_pem: str, root: Path = Path("/")) -> None:
        """Give the proxy the school CA and make the browsers trust it (restart picks it up)."""
        account = self._proxy_account()
        ca_mod.write_proxy_ca(self.confdir, cert_pem, key_pem,
                              owner_uid=account.pw_uid if account is not None else None)
        ca_mod.install_everywhere(cert_pem, root)
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.terminate()  # the supervisor restarts it with the new CA

    @classmethod
    def uninstall(cls, state_dir: Path, *, root: Path = Path("/"), netns: str | None = None) -> None:
        """`kalkan-agent uninstall`: remove the firewall table and the CA everywhere."""
        from agent.platform.firewall import LinuxFirewall

        LinuxFirewall(netns=netns).remove()
        ca_mod.remove_everywhere(root)
