"""Leftovers of a killed test run: network namespaces (their `/etc/netns/<name>` folders, and
veths left in the root namespace) that a rig made, swept at the rig's next start.

A rig `claim`s each name before it makes the namespace (or root-namespace link): it writes its
owner, this process's pid and start time, to `/run/kalkan-netns-owners/<name>` (tmpfs: gone at
reboot, like the namespaces themselves), and `release`s it after deleting it.  `sweep(prefix)`
deletes only the names with the rig's prefix whose recorded owner is dead (the pid is gone, or
is now another process: the start time differs).  Another checkout's run of the same rig on this
machine, still alive, keeps its namespaces; a name without an owner record (made by someone
else, or before this existed) is left alone too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

OWNERS = Path("/run/kalkan-netns-owners")
ETC_NETNS = Path("/etc/netns")


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or
    None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def claim(name: str, pid: int | None = None) -> None:
    """Record `pid` (this process by default) as the owner of namespace or link `name`."""
    pid = os.getpid() if pid is None else pid
    OWNERS.mkdir(mode=0o755, parents=True, exist_ok=True)
    (OWNERS / name).write_text(f"{pid} {start_time(pid) or 0}\n")


def release(name: str) -> None:
    (OWNERS / name).unlink(missing_ok=True)


def owner_alive(name: str) -> bool | None:
    """True/False for a recorded owner alive/dead; None if `name` has no (readable) record."""
    try:
        pid_text, started = (OWNERS / name).read_text().split()
        pid = int(pid_text)
    except (FileNotFoundError, ValueError):
        return None
    return start_time(pid) == started


def namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]


def root_links() -> list[str]:
    out = _ip("-o", "link", "show").stdout
    return [line.split(":", 2)[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def sweep(prefix: str) -> list[str]:
    """Delete every namespace, `/etc/netns` folder, root-namespace link and owner record named
    `prefix…` whose recorded owner is dead; the names swept."""
    if not prefix:
        raise ValueError("sweep needs the rig's own prefix")
    live_ns = set(namespaces())
    links = set(root_links())
    candidates = {n for n in live_ns | links if n.startswith(prefix)}
    if ETC_NETNS.is_dir():
        candidates |= {p.name for p in ETC_NETNS.glob(f"{prefix}*")}
    if OWNERS.is_dir():
        candidates |= {p.name for p in OWNERS.glob(f"{prefix}*")}
    swept = []
    for name in sorted(candidates):
        if owner_alive(name) is not False:
            continue  # a live owner, or nobody we can tell: not ours to delete
        if name in live_ns:
            for pid in _ip("netns", "pids", name).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", name)
        if name in links:
            _ip("link", "del", name)
        shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
        release(name)
        swept.append(name)
    return swept
