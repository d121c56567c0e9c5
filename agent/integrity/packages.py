"""Software inventory and "did the package manager do this?" (thin edge over dpkg's database).

dpkg keeps, per installed package, the paths it owns (`info/<pkg>.list`) and the
MD5 of every regular file as shipped (`info/<pkg>.md5sums`).  A changed file is
explained by the package manager when a package owns it *and* its content is
exactly what that package shipped; a package file whose content differs from its
md5sums was changed by someone else, whoever owns it.  `root`/`admindir` work
like `dpkg --root/--admindir`, so tests use a real dpkg database of their own.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.integrity.diff import ADDED, MODIFIED, PERMISSIONS, REMOVED, Change
from agent.integrity.model import LINK

# Up to this many wanted paths, each .list file is searched for each path (mmap.find in C);
# beyond it, the file is read line by line and each line looked up in a set.
_FEW_PATHS = 32
# The status file's fields `installed()` needs (the rest, descriptions above all, is skipped).
_STATUS_FIELDS = frozenset({"Package", "Status", "Version", "Architecture"})


@dataclass(frozen=True)
class Explanation:
    by_package_manager: bool
    package: str | None


def _md5(path: str) -> str | None:
    h = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _mapped_hits(handle: BinaryIO, wanted: Mapping[bytes, str]) -> list[bytes]:
    """The wanted paths that are whole lines of the open .list file: a substring search in C
    per path over a read-only memory map (nothing of the file is copied into the heap)."""
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        return []
    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
        hits = []
        for key in wanted:
            line = key + b"\n"
            if (
                view.find(b"\n" + line) != -1
                or view[: len(line)] == line  # the first line
                or (size > len(key) and view[size - len(key) - 1 :] == b"\n" + key)  # last, no newline
                or (size == len(key) and view[:] == key)
            ):
                hits.append(key)
        return hits


def _streamed_hits(handle: BinaryIO, wanted: Mapping[bytes, str]) -> list[bytes]:
    """The wanted paths that are lines of the open .list file, reading one line at a time."""
    hits = []
    for line in handle:
        key = line.rstrip(b"\n")
        if key in wanted:
            hits.append(key)
    return hits


class DpkgDatabase:
    """Read-only view of a dpkg database (nothing here runs dpkg)."""

    def __init__(self, admindir: str | Path = "/var/lib/dpkg", root: str | Path = "/") -> None:
        self.admindir = Path(admindir)
        self.info = self.admindir / "info"
        self.root = os.path.normpath(str(root))
        self._md5sums: dict[str, dict[str, str]] = {}

    @property
    def available(self) -> bool:
        return (self.admindir / "status").is_file()

    # --------------------------------------------------------------- paths

    def _package_path(self, path: str) -> str:
        """The path as dpkg records it (without the --root prefix)."""
        if self.root == "/":
            return path
        rel = os.path.relpath(path, self.root)
        return "/" + rel if not rel.startswith("..") else path

    def _list_names(self) -> list[str]:
        """The .list files' names, sorted.  `os.scandir`, not `Path.glob`: the glob of dpkg's
        3 000-file info folder left 0.8 MB of RSS behind in the agent (measured)."""
        try:
            with os.scandir(self.info) as entries:
                return sorted(entry.name for entry in entries if entry.name.endswith(".list"))
        except OSError:
            return []

    def owners_of(self, paths: Iterable[str]) -> dict[str, list[str]]:
        """path → packages listing it, for the given paths only.

        dpkg's .list files name every installed path (113 000 on a desktop, ~10 MiB; one
        file alone can be 4 MiB), and the agent is long-lived: a file read whole, even for
        a moment, leaves the freed memory fragmenting the agent's heap for good (measured:
        +1.2 MB of RSS after one lookup).  So nothing big is ever allocated here: each file
        is either searched through a read-only memory map (few paths: the kernel's page
        cache, not the heap) or streamed line by line (many paths: one short line at a
        time, each freed before the next).  The answer holds only the owned paths.
        """
        wanted = {os.fsencode(self._package_path(p)): p for p in paths}
        found: dict[str, list[str]] = {}
        if not wanted or not self.available:
            return found
        few = len(wanted) <= _FEW_PATHS
        for name in self._list_names():
            package = name[: -len(".list")]
            try:
                with open(os.path.join(self.info, name), "rb") as handle:
                    hits = _mapped_hits(handle, wanted) if few else _streamed_hits(handle, wanted)
            except (OSError, ValueError):  # gone meanwhile, unreadable (ValueError: mmap of an odd file)
                continue
            for key in hits:
                found.setdefault(wanted[key], []).append(package)
        return found

    def owners(self, path: str) -> list[str]:
        return self.owners_of([path]).get(path, [])

    def owner(self, path: str) -> str | None:
        found = self.owners(path)
        return found[0] if found else None

    def owner_lookup(self, paths: Iterable[str]) -> Callable[[str], str | None]:
        """`owner` for many paths at once (a baseline of /usr asks for 60 000): dpkg's
        database is read once, keeping only the owners of `paths`.  Drop the lookup when
        done; it holds nothing else."""
        owners = self.owners_of(paths)

        def lookup(path: str) -> str | None:
            found = owners.get(path)
            return found[0] if found else None

        return lookup

    def forget(self) -> None:
        """Drop the md5sums read during a check (the agent is long-lived; dpkg changes)."""
        self._md5sums = {}

    def shipped_md5(self, package: str, path: str) -> str | None:
        if package not in self._md5sums:
            sums: dict[str, str] = {}
            try:
                for line in (self.info / f"{package}.md5sums").read_bytes().splitlines():
                    digest, _, rel = line.partition(b"  ")
                    sums["/" + os.fsdecode(rel)] = digest.decode()
            except OSError:
                pass
            self._md5sums[package] = sums
        return self._md5sums[package].get(self._package_path(path))

    def touched_since(self, package: str, since_ns: int) -> bool:
        """Was the package (re)installed after `since_ns`?  dpkg rewrites its .list then."""
        try:
            return (self.info / f"{package}.list").stat().st_mtime_ns > since_ns
        except OSError:
            return False

    def stat_override(self, path: str) -> tuple[str, str, int] | None:
        """(user, group, mode) from `dpkg-statoverride`, if the admin set one."""
        try:
            lines = (self.admindir / "statoverride").read_text().splitlines()
        except OSError:
            return None
        want = self._package_path(path)
        for line in lines:
            parts = line.split()
            if len(parts) == 4 and parts[3] == want:
                return parts[0], parts[1], int(parts[2], 8)
        return None

    # --------------------------------------------------------------- explanation

    def explain(self, change: Change, owners: list[str] | None = None) -> Explanation:
        """Whether the package manager explains a change (see the module docstring).
        `owners`: the path's owning packages when the caller looked many up at once
        (`owners_of`); otherwise dpkg's database is read for this one path."""
        if owners is None:
            owners = self.owners(change.path)
        if change.change == REMOVED:
            package = change.old.package if change.old else None
            if package is None:
                return Explanation(False, None)
            # dpkg removed it when the package that had it no longer lists it.
            return Explanation(package not in owners, package)
        if not owners:
            return Explanation(False, None)
        new = change.new
        if change.change in (ADDED, MODIFIED) and new is not None and new.kind != LINK:
            current = _md5(change.path)
            for package in owners:
                shipped = self.shipped_md5(package, change.path)
                if shipped is not None and shipped == current:
                    return Explanation(True, package)
            return Explanation(False, owners[0])
        # Symlinks (no md5 in dpkg) and permission changes: explained when the owning
        # package was (re)installed after the baseline saw the file, or by a statoverride.
        since = change.old.ctime_ns if change.old else 0
        for package in owners:
            if self.touched_since(package, since):
                return Explanation(True, package)
        if change.change == PERMISSIONS and new is not None:
            override = self.stat_override(change.path)
            if override is not None and override[2] == new.mode:
                return Explanation(True, owners[0])
        return Explanation(False, owners[0])

    # --------------------------------------------------------------- inventory

    def installed(self) -> dict[str, str]:
        """Installed packages → version, from the status file.  Read line by line, keeping
        only the four fields needed: the file is ~1 MB, and read whole (as it once was) it
        left its freed memory in the long-lived agent after every check."""
        packages: dict[str, str] = {}
        fields: dict[str, str] = {}

        def end_of_stanza() -> None:
            if fields.get("Status", "").endswith(" installed") and "Package" in fields:
                name = fields["Package"]
                if name in packages:
                    name = f"{name}:{fields.get('Architecture', '')}"
                packages[name] = fields.get("Version", "")
            fields.clear()

        try:
            with open(self.admindir / "status", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if not line.strip():
                        end_of_stanza()
                    elif not line[0].isspace():
                        key, colon, value = line.partition(":")
                        if colon and key in _STATUS_FIELDS:
                            fields[key] = value.strip()
        except OSError:
            return {}
        end_of_stanza()
        return packages


def _command_inventory(prefix: str, argv: list[str], name_col: int, version_col: int) -> dict[str, str]:
    if shutil.which(argv[0]) is None:
        return {}
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    for line in out.splitlines()[1 if prefix == "snap" else 0 :]:
        cols = line.split("\t") if prefix == "flatpak" else line.split()
        if len(cols) > max(name_col, version_col):
            found[f"{prefix}:{cols[name_col]}"] = cols[version_col]
    return found


def inventory(dpkg: DpkgDatabase) -> dict[str, str]:
    """Everything installed: dpkg packages, and snaps and flatpaks where present."""
    found = dict(dpkg.installed())
    found.update(_command_inventory("snap", ["snap", "list"], 0, 1))
    found.update(_command_inventory("flatpak", ["flatpak", "list", "--columns=application,version"], 0, 1))
    return found


def inventory_diff(old: Mapping[str, str], new: Mapping[str, str]) -> tuple[list[str], list[str], list[str]]:
    """(installed, removed, upgraded) as readable lines: "name version", "name old -> new" (pure)."""
    installed = [f"{n} {new[n]}" for n in sorted(new.keys() - old.keys())]
    removed = [f"{n} {old[n]}" for n in sorted(old.keys() - new.keys())]
    upgraded = [f"{n} {old[n]} -> {new[n]}" for n in sorted(old.keys() & new.keys()) if old[n] != new[n]]
    return installed, removed, upgraded
