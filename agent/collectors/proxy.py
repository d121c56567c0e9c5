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
* The child's events come back on a pipe it inherits (`kalkan_event_fd`); this
  collector stores them in the outbox, so the proxy's user needs no write access to
  the agent's state.  ISUO session start/end are also relayed to the idle collector
  (`agent.idle.wire.notify_isuo`, 000 §6.8), which only root may tell.
* Once enrolled it fetches the school CA (`GET /api/v1/ca`, pinned) and installs it
  (proxy, system store, Firefox, Chromium), retrying every minute until it succeeds.  That
  work runs in a short-lived child (`kalkan-agent proxy fetch-ca`), so the agent never loads
  `cryptography` (memory goal: docs/agent.md "Footprint").
* On Linux it keeps the `/etc/hosts` line for `report.kalkan` (`agent.proxy.hosts`).

Settings: `<state>/collectors/proxy/settings.json` (optional; keys of `ProxySettings`).
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from agent.collectors.base import Collector, CollectorContext, healthy, unhealthy
from agent.platform.firewall import FirewallError, firewall_adapter
from agent.proxy import ca as ca_mod
from agent.proxy import hosts as hosts_mod
from agent.proxy import kernel_maps
from agent.proxy.events import read_events
from agent.proxy.nftables import DEFAULT_TRANSPARENT_PORT, RulesetError, config_from_policy, render_ruleset
from policy_server.protocol import CollectorHealth, CollectorState, PolicyBundle, Subject

ENTRY = Path(__file__).resolve().parents[1] / "proxy" / "mitm_entry.py"
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0  # a child that lived this long resets the back-off
FIRST_CA_WAIT_S = 60.0  # at most this long mitmdump's first start waits for the first school-CA attempt


SETTINGS_FILE = "settings.json"


EVENT_LOOPS = ("uvloop", "asyncio")


class SettingsError(ValueError):
    pass


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
    fetch_ca: bool = True  # fetch the school CA from the server once enrolled
    ca_retry_s: float = 60.0
    ca_root: str = ""  # where the CA is installed; "" = "/" on Linux, the collector's dir on "fake"
    hosts_file: str = ""  # "" = /etc/hosts on Linux, none on "fake"
    idle_socket: str = ""  # "" = agent.idle.wire.DEFAULT_SOCKET
    event_loop: str = "uvloop"  # mitmdump's event loop: "uvloop" or "asyncio" (mitmdump as it comes)

    @classmethod
    def from_file(cls, path: Path) -> ProxySettings:
        """Settings from a JSON object; a wrong key or type is named, with the fix."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SettingsError(f"{path}: not readable JSON ({exc}); fix it or delete it for the defaults") \
                from None
        if not isinstance(raw, dict):
            raise SettingsError(f"{path}: must be a JSON object of proxy settings")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise SettingsError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            default = getattr(cls(), name)
            if name == "extra_args":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise SettingsError(f"{path}: extra_args must be a list of strings")
                value = tuple(value)
            elif isinstance(default, bool) != isinstance(value, bool) or not isinstance(
                    value, type(default) if not isinstance(default, float) else (int, float)):
                raise SettingsError(f"{path}: {name} must be a {type(default).__name__}, not {value!r}")
            if name == "event_loop" and value not in EVENT_LOOPS:
                raise SettingsError(
                    f"{path}: event_loop must be one of {', '.join(EVENT_LOOPS)}, not {value!r}")
            values[name] = value
        return cls(**values)


def mitmdump_binary() -> str:
    candidate = Path(sys.executable).parent / "mitmdump"
    return str(candidate) if candidate.exists() else "mitmdump"


UVLOOP_MAIN = Path(__file__).resolve().parents[1] / "proxy" / "mitmdump_uvloop.py"


def mitmdump_launcher(event_loop: str) -> list[str]:
    """How mitmdump is started: on uvloop (the default: less CPU per connection the front passes
    through), or mitmdump itself on asyncio's loop (`event_loop: "asyncio"`)."""
    if event_loop == "uvloop":
        return [sys.executable, str(UVLOOP_MAIN)]
    return [mitmdump_binary()]


def ipv6_loopback_available() -> bool:
    """False on a machine with IPv6 switched off (mitmdump would refuse to start on ::1)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def mitmdump_command(settings: ProxySettings, *, state_dir: Path, confdir: Path,
                     seat: str | None, room: str | None = None, event_fd: int | None = None,
                     kernel_maps: str | None = None) -> list[str]:
    """The child's command line (pure: tested on its own)."""
    args = [*mitmdump_launcher(settings.event_loop), "--quiet", "-s", str(ENTRY),
            "--mode", f"regular@{settings.listen_host}:{settings.regular_port}"]
    if settings.transparent_port:
        # loopback only: the nftables `redirect` of locally made connections goes to 127.0.0.1 / ::1,
        # and nothing on the school's network should reach the proxy
        args += ["--mode", f"transparent@127.0.0.1:{settings.transparent_port}"]
        if ipv6_loopback_available():
            args += ["--mode", f"transparent@::1:{settings.transparent_port}"]
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
    if event_fd is not None:
        args += ["--set", f"kalkan_event_fd={event_fd}"]
    # the kernel relay's maps, made by this (root) process: the proxy's account only adds its
    # own sockets to them; "off" where they could not be made (the proxy relays in user space)
    args += ["--set", f"kalkan_kernel_relay={kernel_maps or 'off'}"]
    return args + list(settings.extra_args)


def unreachable_folder(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first folder on the way to `path` that `account` (its own group only, as the child
    runs with no supplementary groups) may not enter; None if all are searchable."""
    for folder in [*reversed(path.resolve().parents), path.resolve()]:
        try:
            st = folder.stat()
        except OSError:
            return folder
        if st.st_uid == account.pw_uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid == account.pw_gid:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return folder
    return None


def drop_privileges(account: pwd.struct_passwd) -> list[str]:
    """Run the child as the proxy's account, with no supplementary groups and no capabilities.

    util-linux `setpriv` rather than Popen(user=…): it switches ids and empties the
    capability sets in one audited tool, and it also starts an interpreter that lives in a
    root-only folder (a developer's pyenv) — Popen's own switch happens before exec and
    would be refused there."""
    return ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--"]


class ProxyCollector(Collector):
    name = "proxy"

    def __init__(self, ctx: CollectorContext, settings: ProxySettings | None = None) -> None:
        super().__init__(ctx)
        self.dir = Path(ctx.state_dir) / "collectors" / "proxy"
        settings_file = self.dir / SETTINGS_FILE
        if settings is None:
            settings = ProxySettings.from_file(settings_file) if settings_file.exists() else ProxySettings()
        self.settings = settings
        self.confdir = self.dir / "mitmproxy"
        self._proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ca_thread: threading.Thread | None = None
        # set once the first school-CA attempt is over (or none is needed): mitmdump's first start
        # waits for it, else mitmdump could write its own CA over the school CA the child just wrote
        self._ca_first_attempt = threading.Event()
        self._lock = threading.Lock()
        self._restart_requested = False
        self.restarts = 0
        self._maps: kernel_maps.Maps | None = None  # made once, kept across restarts
        self.relay_problem = ""
        self.last_exit: int | None = None
        self.problem = ""
        self.firewall_problem = ""
        self.ca_problem = ""
        self.account_problem = ""
        self.events_relayed = 0
        self._ruleset: str | None = None
        self._firewall = firewall_adapter("fake" if ctx.platform == "fake" else "linux")

    # ------------------------------------------------------------------ where things go

    @property
    def ca_root(self) -> Path:
        if self.settings.ca_root:
            return Path(self.settings.ca_root)
        return Path("/") if self.ctx.platform != "fake" else self.dir / "root"

    @property
    def hosts_file(self) -> Path | None:
        if self.settings.hosts_file:
            return Path(self.settings.hosts_file)
        return Path("/etc/hosts") if self.ctx.platform != "fake" else None

    @property
    def idle_socket(self) -> Path:
        from agent.idle.wire import DEFAULT_SOCKET

        return Path(self.settings.idle_socket) if self.settings.idle_socket else DEFAULT_SOCKET

    # ------------------------------------------------------------------ plumbing

    def _named_account(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self.settings.proxy_user)
        except KeyError:
            return None

    def _proxy_account(self) -> pwd.struct_passwd | None:
        """The account the child runs as, or None (then it runs as the agent's own user and the
        firewall is not installed): the account must exist and reach the state dir and the code."""
        account = self._named_account()
        if account is None:
            return None
        for needed in (Path(self.ctx.state_dir), self.dir, ENTRY.parent):
            blocked = unreachable_folder(needed, account)
            if blocked is not None:
                self.account_problem = (f"{account.pw_name} cannot enter {blocked}, so the proxy runs as "
                                        f"root without the firewall redirect; make it searchable "
                                        f"(chmod o+x {blocked})")
                return None
        self.account_problem = ""
        return account

    def _kernel_maps(self) -> kernel_maps.Maps | None:
        """The kernel relay's maps (agent/proxy/kernel_maps.py), made once and kept for every
        restart of the proxy; None (and why, in the health detail) where this kernel or this
        process cannot make them."""
        if self._maps is None and self.relay_problem == "":
            try:
                self._maps = kernel_maps.create_maps()
            except OSError as exc:
                self.relay_problem = f"relay in user space: no BPF sockhash ({exc})"
                self.ctx.log.info("kalkan proxy: %s", self.relay_problem)
        return self._maps

    def _kernel_relay_detail(self) -> str:
        maps = self._maps
        if maps is not None and maps.direct is None:
            return f"relay in the kernel, {maps.why_not_direct}"
        return "relay in the kernel, with the direct path" if maps is not None else "relay in the kernel"

    def _spawn(self) -> subprocess.Popen:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.confdir.mkdir(parents=True, exist_ok=True)
        account = self._proxy_account()
        read_fd, write_fd = os.pipe()
        log_file = open(self.dir / "mitmdump.log", "ab")  # noqa: SIM115 - handed to the child
        maps = self._kernel_maps()
        cmd = mitmdump_command(self.settings, state_dir=Path(self.ctx.state_dir), confdir=self.confdir,
                               seat=self.ctx.seat, room=self.ctx.room, event_fd=write_fd,
                               kernel_maps=maps.option() if maps else None)
        if account is not None:
            os.chown(self.confdir, account.pw_uid, account.pw_gid)
            cmd = drop_privileges(account) + cmd
        env = {**os.environ, "HOME": str(self.dir)}
        try:
            fds = (write_fd, *maps.passed_fds()) if maps else (write_fd,)
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, pass_fds=fds)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            log_file.close()
            os.close(write_fd)  # only the child holds the write end: EOF when it dies
        threading.Thread(target=self._relay_events, args=(read_fd,), name="kalkan-proxy-events",
                         daemon=True).start()
        return proc

    def _supervise(self) -> None:
        backoff = 1.0
        self._ca_first_attempt.wait(FIRST_CA_WAIT_S)
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
            with self._lock:
                requested, self._restart_requested = self._restart_requested, False
            if requested:  # we stopped it ourselves (a new CA): start again at once
                continue
            self.last_exit = code
            self.restarts += 1
            self.problem = f"mitmdump exited with code {code}; restarting (see {self.dir / 'mitmdump.log'})"
            self.ctx.log.error(self.problem)
            if time.monotonic() - started > STABLE_S:
                backoff = 1.0
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    # ------------------------------------------------------------------ events from the child

    def _relay_events(self, read_fd: int) -> None:
        """Store every event the child sends; relay ISUO sessions to the idle collector."""
        with os.fdopen(read_fd, "rb") as stream:
            for event_type, data, subject, clauses in read_events(stream):
                try:
                    who = Subject.model_validate(subject) if subject else None
                    self.ctx.emit(event_type, data, subject=who, clauses=clauses)
                    self.events_relayed += 1
                except Exception as exc:  # a bad event is logged, the next one still counts
                    self.ctx.log.error("proxy event %s not stored: %s", event_type, exc)
                    continue
                if event_type == "isuo.session" and who is not None and who.os_user:
                    self._notify_idle(who.os_user, str(data.get("state", "")))

    def _notify_idle(self, user: str, state: str) -> None:
        from agent.idle.wire import WireError, notify_isuo

        try:
            notify_isuo(user, state, socket_path=self.idle_socket)
        except (WireError, ValueError) as exc:  # the idle collector may be off: the proxy goes on
            self.ctx.log.warning("ISUO %s of %s not passed to idle locking: %s", state, user, exc)

    # ------------------------------------------------------------------ Collector

    def start(self) -> None:
        self._stop.clear()
        self._grant_proxy_access()
        self._apply_firewall(self.ctx.policy)
        self._apply_hosts()
        self._ca_first_attempt.clear()
        if self.settings.fetch_ca:  # now if there is none, later to renew the seat's short-lived CA
            self._ca_thread = threading.Thread(target=self._fetch_ca_until_done, name="kalkan-proxy-ca",
                                               daemon=True)
            self._ca_thread.start()
        else:
            self._ca_first_attempt.set()
        self._thread = threading.Thread(target=self._supervise, name="kalkan-proxy-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._ca_first_attempt.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for thread in (self._thread, self._ca_thread):
            if thread is not None:
                thread.join(15)

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
            relay = self.relay_problem or self._kernel_relay_detail()
            detail = f"mitmdump pid {pid}, restarts {self.restarts}, {relay}"
            if self.problem or self.firewall_problem or self.account_problem:
                return unhealthy(f"{detail}; {self.problem or self.firewall_problem or self.account_problem}")
            if not (self.confdir / ca_mod.SCHOOL_CA_MARK).exists():
                why = f": {self.ca_problem}" if self.ca_problem else ""
                return unhealthy(f"{detail}; no school CA yet (mitmproxy made its own){why}")
            return healthy(detail)
        except Exception as exc:  # health never raises
            return unhealthy(f"health check failed: {exc}")

    def on_policy(self, bundle: PolicyBundle) -> None:
        super().on_policy(bundle)
        self._apply_firewall(bundle)  # the addon reloads policy.json by itself

    # ------------------------------------------------------------------ what the proxy's user may touch

    def _grant_proxy_access(self) -> None:
        """The proxy's user reads `policy.json` (mode 0644, written by the agent) and its own
        confdir; it writes nothing of the agent's (events come over the pipe).  Only the
        folders on the way must be searchable: if an administrator made the state dir
        private, let the proxy's group through it (search only, no listing, no writing)."""
        account = self._named_account()
        if account is None:
            return
        for folder in (Path(self.ctx.state_dir), Path(self.ctx.state_dir) / "collectors", self.dir):
            folder.mkdir(parents=True, exist_ok=True)
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                os.chown(folder, -1, account.pw_gid)
                os.chmod(folder, stat.S_IMODE(mode) | stat.S_IXGRP)
        policy = Path(self.ctx.state_dir) / "policy.json"
        if policy.exists() and not policy.stat().st_mode & stat.S_IROTH:
            os.chown(policy, -1, account.pw_gid)
            os.chmod(policy, stat.S_IMODE(policy.stat().st_mode) | stat.S_IRGRP)

    # ------------------------------------------------------------------ firewall, hosts and CA

    def _apply_firewall(self, bundle: PolicyBundle) -> None:
        if not self.settings.firewall:
            return
        account = self._proxy_account()
        if account is None and self.ctx.platform != "fake":
            self.firewall_problem = self.account_problem or (
                f"no OS user {self.settings.proxy_user!r}: the firewall redirect is not installed; "
                "run install/install-agent.sh (creates it)")
            return
        uid = account.pw_uid if account is not None else 999
        try:
            ruleset = render_ruleset(config_from_policy(bundle, proxy_uid=uid,
                                                        transparent_port=self.settings.transparent_port))
            if ruleset == self._ruleset:
                return
            self._firewall.install(ruleset)
            self._ruleset = ruleset
            self.firewall_problem = ""
        except (FirewallError, RulesetError) as exc:
            self.firewall_problem = str(exc)
            self.ctx.log.error("proxy firewall: %s", exc)

    def _apply_hosts(self) -> None:
        if self.hosts_file is None:
            return
        try:
            hosts_mod.add_entry(self.hosts_file, [hosts_mod.REPORT_HOST])
        except OSError as exc:
            self.ctx.log.error("cannot add %s to %s: %s", hosts_mod.REPORT_HOST, self.hosts_file, exc)

    def _fetch_ca_until_done(self) -> None:
        """Fetch, check and install the seat's CA in a short-lived `kalkan-agent proxy fetch-ca`
        child (it loads `cryptography`, which would otherwise stay in this long-running process),
        then restart mitmdump with it; retry every `ca_retry_s` until it works; again whenever
        it is due for renewal (`ca.proxy_ca_due`: 2 days before the seat's CA ends)."""
        from agent.proxy.ca_fetch import install_school_ca_in_child

        while not self._stop.is_set():
            due = ca_mod.proxy_ca_due(self.confdir)
            if due > 0:  # a valid seat CA: renew it before it ends (docs/security.md "Trust chain")
                self._ca_first_attempt.set()
                if self._stop.wait(min(due, 3600.0)):
                    return
                continue
            try:
                account = self._proxy_account()
                result = install_school_ca_in_child(Path(self.ctx.state_dir), self.ca_root,
                                                    account.pw_uid if account is not None else None,
                                                    stop=self._stop)
                self.ca_problem = ""
                self.ctx.log.info("school CA fetched from the server and installed (%s, %s, %d NSS "
                                  "databases)", result.system, result.firefox, len(result.nss))
                self._restart_for_new_ca()
                continue  # then wait until it is due for renewal
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.ca_problem = str(exc)
                self.ctx.log.warning("school CA: %s; retrying in %.0f s", exc, self.settings.ca_retry_s)
            finally:
                self._ca_first_attempt.set()
            if self._stop.wait(self.settings.ca_retry_s):
                return

    def _restart_for_new_ca(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._restart_requested = True
                self._proc.terminate()  # the supervisor starts it again at once, with the new CA

    @classmethod
    def uninstall(cls, state_dir: Path, *, root: Path = Path("/"), netns: str | None = None,
                  hosts_file: Path | None = None) -> None:
        """`kalkan-agent uninstall`: remove the firewall table, the hosts line and the CA everywhere."""
        from agent.platform.firewall import LinuxFirewall

        LinuxFirewall(netns=netns).remove()
        hosts_mod.remove_entry(hosts_file or root / "etc/hosts")
        ca_mod.remove_everywhere(root)
