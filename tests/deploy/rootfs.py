"""A throwaway root for package tests: an overlay of this machine's `/` (changes go to a
folder of the test), entered with `chroot` in new mount, PID and network namespaces.

    root = OverlayRoot(tmp_path / "root")
    root.run("dpkg -i /work/.../kalkan-agent.deb")     # as root, inside; returns CompletedProcess
    root.path("/etc/passwd")                            # a file of the root, seen from outside
                                                         # (only what was changed: the upper layer)

What it is not: a clean Debian 12 install (the dependencies the packages name are those
already on this machine) and not a booted system (no systemd running: the maintainer scripts
take their "no systemd" branch).  The network namespace is empty, so nothing the packages do
(e.g. `kalkan-agent uninstall` removing its nftables table) touches this machine's network.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path


def available() -> str | None:
    """None when overlay roots work here, else why not."""
    if os.geteuid() != 0:
        return "needs root (mount, chroot)"
    for tool in ("unshare", "chroot", "dpkg"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            return f"{tool} missing"
    return None


class OverlayRoot:
    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        for name in ("upper", "work", "merged"):
            (self.base / name).mkdir(parents=True, exist_ok=True)

    def run(
        self,
        command: str,
        *,
        check: bool = True,
        timeout: float = 300,
        binds: tuple[str, ...] = (),
        net: bool = False,
    ) -> subprocess.CompletedProcess:
        """`net=True`: this machine's network namespace (to reach a test server on 127.0.0.1);
        only for steps that change no firewall (install, enrol)."""
        merged = self.base / "merged"
        binds_sh = "".join(f"mkdir -p {merged}{b} && mount --bind {b} {merged}{b} && " for b in binds)
        script = (
            f"mount -t overlay overlay -o lowerdir=/,upperdir={self.base / 'upper'},"
            f"workdir={self.base / 'work'} {merged} && "
            f"mount -t proc proc {merged}/proc && mount -t tmpfs tmpfs {merged}/run && "
            f"{binds_sh}"
            f"exec chroot {merged} /bin/sh -c {shlex.quote('ip link set lo up 2>/dev/null; ' + command)}"
        )
        result = subprocess.run(
            ["unshare", "--mount", "--pid", *([] if net else ["--net"]), "--fork", "/bin/sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C.UTF-8",
                "DEBIAN_FRONTEND": "noninteractive",
            },
        )
        if check and result.returncode:
            raise AssertionError(
                f"in the root: {command!r} exited {result.returncode}\n"
                f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
            )
        return result

    def exists(self, path: str) -> bool:
        return self.run(f"test -e {shlex.quote(path)}", check=False).returncode == 0

    def read(self, path: str) -> str:
        return self.run(f"cat {shlex.quote(path)}").stdout
