"""Download rules by file type (000 §8.1: no downloading files, multimedia or programs
without permission).

`classify(...)` names the kinds of a response from its URL, file name and content
type; `check_download(policy, group=..., ...)` says whether the group may download
it.  A group's blocked kinds come from ``filtering.download_block[group]``; a group
not listed there gets `DEFAULT_BLOCKED` when it is a student group, nothing otherwise.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

KINDS: dict[str, frozenset[str]] = {
    "executable": frozenset({"exe", "com", "scr", "dll", "bin", "run", "elf", "appimage", "jar"}),
    "installer": frozenset({"msi", "msix", "appx", "deb", "rpm", "apk", "xapk", "dmg", "pkg", "snap",
                            "flatpak", "ipa"}),
    "script": frozenset({"bat", "cmd", "ps1", "vbs", "vbe", "js", "jse", "wsf", "hta", "sh", "py", "reg"}),
    "archive": frozenset({"zip", "rar", "7z", "tar", "gz", "tgz", "bz2", "xz", "zst", "iso", "img", "cab"}),
    "media": frozenset({"mp3", "mp4", "m4a", "m4v", "avi", "mkv", "mov", "wmv", "flv", "webm", "wav", "flac",
                        "ogg", "opus", "aac", "3gp"}),
    "torrent": frozenset({"torrent"}),
}
_CONTENT_TYPES: dict[str, str] = {
    "application/x-msdownload": "executable",
    "application/x-msdos-program": "executable",
    "application/x-executable": "executable",
    "application/x-elf": "executable",
    "application/java-archive": "executable",
    "application/vnd.microsoft.portable-executable": "executable",
    "application/x-msi": "installer",
    "application/x-ms-installer": "installer",
    "application/vnd.debian.binary-package": "installer",
    "application/x-rpm": "installer",
    "application/vnd.android.package-archive": "installer",
    "application/x-apple-diskimage": "installer",
    "application/x-sh": "script",
    "application/x-bat": "script",
    "application/zip": "archive",
    "application/x-zip-compressed": "archive",
    "application/vnd.rar": "archive",
    "application/x-rar-compressed": "archive",
    "application/x-7z-compressed": "archive",
    "application/x-tar": "archive",
    "application/gzip": "archive",
    "application/x-iso9660-image": "archive",
    "application/x-bittorrent": "torrent",
}
DEFAULT_BLOCKED = ("executable", "installer", "script", "archive", "media", "torrent")
CLAUSES = ("000 §8.1",)


def _extension(name: str) -> str:
    base = posixpath.basename(name.strip().strip('"').lower())
    if base.endswith((".tar.gz", ".tar.xz", ".tar.bz2")):
        return "tar"
    return base.rsplit(".", 1)[-1] if "." in base else ""


def filename_from_disposition(header: str | None) -> str | None:
    """The file name in a Content-Disposition header, if any."""
    if not header:
        return None
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        key = key.lower()
        if key == "filename*":
            return unquote(value.split("''", 1)[-1])
        if key == "filename":
            return value.strip('"')
    return None


def classify(*, url: str | None = None, filename: str | None = None, content_type: str | None = None,
             content_disposition: str | None = None) -> frozenset[str]:
    """The kinds (`KINDS` keys) a response is, from any of the clues given."""
    kinds: set[str] = set()
    names = [filename, filename_from_disposition(content_disposition)]
    if url:
        try:
            names.append(unquote(urlsplit(url).path))
        except ValueError:
            pass
    for name in names:
        if name:
            ext = _extension(name)
            for kind, exts in KINDS.items():
                if ext in exts:
                    kinds.add(kind)
    if content_type:
        ctype = content_type.split(";", 1)[0].strip().lower()
        if ctype in _CONTENT_TYPES:
            kinds.add(_CONTENT_TYPES[ctype])
        elif (ctype.startswith(("audio/", "video/")) and content_disposition
              and "attachment" in content_disposition.lower()):
            kinds.add("media")
    return frozenset(kinds)


@dataclass(frozen=True)
class DownloadVerdict:
    action: str  # allow | block
    kinds: tuple[str, ...]  # every kind the response is
    blocked_kinds: tuple[str, ...]  # the ones the group may not download
    rule: str = "download"
    clauses: tuple[str, ...] = CLAUSES
    reason: str = "block.download"

    @property
    def blocked(self) -> bool:
        return self.action == "block"


def blocked_kinds_for(policy, group: str) -> tuple[str, ...]:
    if group in policy.download_block:
        return tuple(policy.download_block[group])
    return DEFAULT_BLOCKED if policy.kind_of(group) == "student" else ()


def check_download(policy, *, group: str, url: str | None = None, filename: str | None = None,
                   content_type: str | None = None, content_disposition: str | None = None
                   ) -> DownloadVerdict:
    """May `group` download this response?  (`policy` is a `FilterPolicy`.)"""
    kinds = classify(url=url, filename=filename, content_type=content_type,
                     content_disposition=content_disposition)
    blocked = tuple(sorted(k for k in kinds if k in blocked_kinds_for(policy, group)))
    if blocked:
        return DownloadVerdict("block", tuple(sorted(kinds)), blocked)
    return DownloadVerdict("allow", tuple(sorted(kinds)), (), reason="allowed")
