"""What changed between the baseline and the disk, and how (pure).

The four kinds the regulation's "detect unauthorised changes" (000 §4.2) needs
told apart:

* ``added``       a file that the baseline does not have;
* ``removed``     a baseline file that is gone;
* ``modified``    different content (or a symlink now points elsewhere, or a file
                  became a symlink); ``mtime_restored`` says the modification time
                  was set back to the old one, i.e. someone tried to hide it;
* ``permissions`` same content, different mode or owner.

A change of only the fast-path cache (mtime, ctime, inode: e.g. a file copied
over itself) is no change: the content and permissions are what is protected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.integrity.model import FileRecord

ADDED, MODIFIED, REMOVED, PERMISSIONS = "added", "modified", "removed", "permissions"


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    change: str
    old: FileRecord | None
    new: FileRecord | None
    mtime_restored: bool = False

    @property
    def fingerprint(self) -> tuple:
        """What makes two sightings of a change the same one (so it is reported once)."""
        new = self.new
        return (
            self.path,
            self.change,
            new.sha256 if new else None,
            new.mode if new else None,
            new.uid if new else None,
            new.gid if new else None,
        )


def compare(old: FileRecord | None, new: FileRecord | None) -> Change | None:
    """The change from `old` (baseline) to `new` (disk) for one path, or None."""
    if old is None and new is None:
        return None
    if old is None:
        return Change(new.path, ADDED, None, new)
    if new is None:
        return Change(old.path, REMOVED, old, None)
    if old.kind != new.kind or old.sha256 != new.sha256 or old.target != new.target:
        restored = old.kind == new.kind and old.mtime_ns == new.mtime_ns
        return Change(new.path, MODIFIED, old, new, mtime_restored=restored)
    if (old.mode, old.uid, old.gid) != (new.mode, new.uid, new.gid):
        return Change(new.path, PERMISSIONS, old, new)
    return None


def diff(base: Mapping[str, FileRecord], current: Mapping[str, FileRecord]) -> list[Change]:
    """Every change from `base` to `current`, sorted by path."""
    changes = []
    for path in sorted(base.keys() | current.keys()):
        change = compare(base.get(path), current.get(path))
        if change is not None:
            changes.append(change)
    return changes


def apply_accepted(
    base: Mapping[str, FileRecord],
    current: Mapping[str, FileRecord],
    accepted: Iterable[tuple[str, str | None]],
) -> tuple[dict[str, FileRecord], list[str]]:
    """Move the baseline for changes the responsible person accepted.

    `accepted` holds (path, sha256): the content that was accepted, or None when the
    removal was accepted.  An entry applies only while the disk still shows exactly
    what was accepted: if the file changed again since, the new change is reported.
    Returns the new baseline and the paths it moved.
    """
    moved_base = dict(base)
    moved = []
    for path, sha256 in accepted:
        now = current.get(path)
        if sha256 is None:
            if now is None and path in moved_base:
                del moved_base[path]
                moved.append(path)
        elif now is not None and now.sha256 == sha256:
            if compare(moved_base.get(path), now) is not None:
                moved.append(path)
            moved_base[path] = now
    return moved_base, moved


def rebase(base: Mapping[str, FileRecord], changes: Iterable[Change]) -> dict[str, FileRecord]:
    """The baseline with these changes taken in (e.g. package updates the dpkg database explains)."""
    moved = dict(base)
    for change in changes:
        if change.new is None:
            moved.pop(change.path, None)
        else:
            moved[change.path] = change.new
    return moved
