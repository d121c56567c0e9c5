"""A clean Debian 12 machine for the seat-install test: the cached debootstrap root
(`install/debian-root.sh`), booted with `systemd-nspawn -b` (systemd as PID 1) on a throwaway
overlay, in a network namespace of the test (`dp-seat-*`) where a real kalkan-server listens
on 127.0.0.1 (so the server's certificate, made for 127.0.0.1, is valid for the seat too).

    with SeatNamespace("dp-seat-1") as ns, BootedRoot(base, tmp, ns, hostname="pc05") as seat:
        seat.sh("systemctl is-active kalkan-agent")     # runs inside, as root; CompletedProcess

Nothing the seat does (nftables, the proxy, the agent's own firewall table) reaches this
machine's network: the namespace holds only its loopback.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from tests.support.server import KalkanServerProcess

REPO = Path(__file__).resolve().parents[2]
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
       "HOME": "/root", "TERM": "dumb"}


def available() -> str | None:
    """None when the clean-root test can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn, network namespaces)"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter", "ip"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            return f"{tool} missing (apt-get install debootstrap systemd-container; install/apt-packages.txt)"
    return None


def debian_root() -> Path:
    """The cached clean root (built on first use; a few minutes, then cached by its package list)."""
    out = subprocess.run(["bash", str(REPO / "install/debian-root.sh")], capture_output=True, text=True,
                         timeout=1800, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"install/debian-root.sh failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


class SeatNamespace:
    """A network namespace with its loopback up (the lab's network, on one machine)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = f"/run/netns/{name}"

    def __enter__(self) -> SeatNamespace:
        from tests.support import netns_sweep

        netns_sweep.sweep("dp-seat-")  # a killed run's (owner dead), never another live run's
        netns_sweep.claim(self.name)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        return self

    def __exit__(self, *exc) -> None:
        from tests.support import netns_sweep

        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        netns_sweep.release(self.name)

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], **kw)


class NamespacedServer(KalkanServerProcess):
    """A real kalkan-server process on 127.0.0.1 inside `ns` (the test reads its database file)."""

    def __init__(self, state_dir: Path, ns: SeatNamespace) -> None:
        super().__init__(state_dir)
        self.ns = ns

    def _command(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns.name, *super()._command()]

    def start(self) -> NamespacedServer:
        log = open(self.state_dir / "server.log", "ab")  # noqa: SIM115  (the child keeps it)
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kalkan-server exited with {self.proc.returncode}:\n{self.log_text()}")
            probe = self.ns.run(["curl", "-fsk", "-o", "/dev/null", self.url + "/healthz"],
                                capture_output=True)
            if probe.returncode == 0 and self.cert_path.exists():
                return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"kalkan-server did not answer in {self.ns.name}:\n{self.log_text()}")


class BootedRoot:
    """The clean root booted with systemd as PID 1 (changes go to an overlay of the test)."""

    def __init__(self, lower: Path, base: Path, ns: SeatNamespace, *, hostname: str,
                 binds: tuple[str, ...] = ()) -> None:
        self.lower, self.base, self.ns = Path(lower), Path(base), ns
        self.hostname, self.binds = hostname, binds
        self.merged = self.base / "merged"
        self.proc: subprocess.Popen | None = None
        self.leader: int | None = None
        self.boot_seconds = 0.0

    def __enter__(self) -> BootedRoot:
        for name in ("upper", "work", "merged"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        (self.base / "upper/etc").mkdir(exist_ok=True)  # the PC's name, as the IT person set it
        (self.base / "upper/etc/hostname").write_text(self.hostname + "\n")
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.lower},upperdir={self.base / 'upper'},workdir={self.base / 'work'}",
                        str(self.merged)], check=True)
        began = time.monotonic()
        self.log = open(self.base / "console.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-q", "-b", "-D", str(self.merged), f"--hostname={self.hostname}",
             f"--machine={self.ns.name}", "--register=no", "--keep-unit",
             f"--network-namespace-path={self.ns.path}", "--console=passive",
             # the agent's firewall table and packet capture (the namespace is the seat's own)
             "--capability=CAP_NET_ADMIN,CAP_NET_RAW",
             *[f"--bind={b}" for b in self.binds]],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.leader = self._find_leader()
            deadline, state = time.monotonic() + 120, ""
            while time.monotonic() < deadline:  # (systemctl answers once PID 1 has its bus up)
                out = self.sh("systemctl is-system-running --wait", check=False, timeout=120)
                state = out.stdout.strip()
                if state in ("running", "degraded"):
                    break
                state += out.stderr.strip()
                time.sleep(0.3)
            else:
                raise RuntimeError(f"the seat did not boot ({state}):\n{self.console()}")
        except BaseException:
            self.__exit__()
            raise
        self.boot_seconds = time.monotonic() - began
        return self

    def _find_leader(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self.proc.returncode}:\n{self.console()}")
            kids = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(self.proc.pid)],
                                  capture_output=True, text=True).stdout.split("\n")
            for line in kids:
                parts = line.split()
                if len(parts) == 2 and parts[1] == "systemd":
                    return int(parts[0])
            time.sleep(0.1)
        raise RuntimeError(f"no systemd in the seat:\n{self.console()}")

    def console(self) -> str:
        path = self.base / "console.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def sh(self, command: str, *, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run `command` with /bin/sh inside the seat, as root, in all its namespaces."""
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "-r", "-w",
             "/usr/bin/env", "-i", *[f"{k}={v}" for k, v in ENV.items()], "/bin/sh", "-c", command],
            capture_output=True, text=True, timeout=timeout)
        if check and result.returncode:
            raise AssertionError(f"in the seat: {command!r} exited {result.returncode}\n"
                                 f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
        return result

    def exists(self, path: str) -> bool:
        return self.sh(f"test -e {shlex.quote(path)}", check=False).returncode == 0

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.leader:
                # systemd as PID 1 powers off on SIGRTMIN+4 (a clean shutdown: the agent stops)
                try:
                    os.kill(self.leader, signal.SIGRTMIN + 4)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        subprocess.run(["umount", "-l", str(self.merged)], capture_output=True)


__all__ = ["BootedRoot", "NamespacedServer", "SeatNamespace", "available", "debian_root"]
