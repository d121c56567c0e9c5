"""Readers for block-list formats.  Each yields `Entry` objects and reports every bad
line as a `Problem` (file, line number, text, why) through a callback; a bad line is
skipped, the import goes on.  Nothing here decides categories' meaning: the UT1
reader maps folder names through `categories.UT1_MAP`.

Formats:
* **plain**: one domain or URL a line (``example.com``, ``example.com/path``,
  ``http://example.com/x``, ``*.example.com``); ``#`` starts a comment.
* **hosts**: ``0.0.0.0 example.com other.example`` (the address is ignored).
* **adguard**: ``||example.com^`` (options after ``$`` are ignored; exception rules
  ``@@``, cosmetic rules ``##`` and regular expressions are reported and skipped).
* **ut1**: a directory of ``<category>/domains`` and ``<category>/urls``; aliases are
  symbolic links, or (in copies made without symlink support) one-line files that
  name the target folder.  ``expressions`` (regular expressions) are not imported.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .canonical import canonical_host, canonicalize, entry_path, split_canonical
from .categories import CATEGORIES, UT1_MAP

FORMATS = ("plain", "hosts", "adguard", "ut1")


@dataclass(frozen=True)
class Entry:
    """One list entry, canonical: a domain (``path is None``: the host and every
    subdomain) or a URL prefix (``host`` + ``path``, path starting with ``/``)."""

    host: str
    path: str | None
    categories: tuple[str, ...]

    @property
    def expression(self) -> str:
        return self.host if self.path is None else self.host + self.path


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    text: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.why}: {self.text[:120]!r} (line skipped)"


ProblemSink = Callable[[Problem], None]

_PLAIN_DOMAIN = re.compile(r"^[a-z0-9_\-]+(\.[a-z0-9_\-]+)+$")
_HOST_CHARS = re.compile(r"^[a-z0-9_\-.%\[\]:]+$")


def parse_entry(text: str) -> tuple[str, str | None] | str:
    """(host, path or None) of one list entry, or a string saying why it is bad."""
    text = text.strip()
    if not text:
        return "empty entry"
    if text.startswith("*."):
        text = text[2:]
    if _PLAIN_DOMAIN.match(text):
        # The common case (most of a list): already canonical unless it spells an IP.
        return (canonical_host(text) if text[0].isdigit() or "0x" in text else text), None
    if any(c.isspace() for c in text):
        return "an entry may not contain spaces"
    canonical = canonicalize(text if "://" in text else "http://" + text)
    host, path, query = split_canonical(canonical)
    if not host or "." not in host and not host.startswith("["):
        return "not a domain name (a dot is needed, as in example.kg)"
    if "%" in host or not _HOST_CHARS.match(host):
        return "the host name has characters a domain cannot have"
    if path == "/" and query is None:
        return host, None
    return host, entry_path(path, query)


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            yield number, raw.decode("utf-8", "replace")


def read_plain(path: str | os.PathLike, categories: tuple[str, ...], problems: ProblemSink,
               *, fmt: str = "plain") -> Iterator[Entry]:
    """Entries of one list file in format `fmt` ("plain", "hosts" or "adguard")."""
    path = Path(path)
    for number, line in _read_lines(path):
        text = line.strip()
        if not text or text.startswith(("#", "!")) or (fmt == "adguard" and text.startswith("[")):
            continue
        if fmt == "hosts":
            fields = text.split("#", 1)[0].split()
            if len(fields) < 2:
                problems(Problem(str(path), number, text, "a hosts line needs an address and a name"))
                continue
            names = [n for n in fields[1:] if n not in ("localhost", "localhost.localdomain", "local",
                                                         "broadcasthost", "ip6-localhost", "ip6-loopback")]
        elif fmt == "adguard":
            if text.startswith("@@") or "##" in text or "#@#" in text:
                problems(Problem(str(path), number, text, "exception and cosmetic rules are not supported"))
                continue
            match = re.match(r"^\|\|([^\^/$|*]+)\^?(\$.*)?$", text)
            if not match:
                problems(Problem(str(path), number, text, "only ||domain^ rules are supported"))
                continue
            names = [match.group(1)]
        else:
            names = [text.split(" #", 1)[0].strip()]
        for name in names:
            parsed = parse_entry(name)
            if isinstance(parsed, str):
                problems(Problem(str(path), number, text, parsed))
                continue
            yield Entry(parsed[0], parsed[1], categories)


def _ut1_folder(root: Path, name: str) -> Path | None:
    """The real folder of a UT1 category, following symlinks or one-line alias files."""
    path = root / name
    for _ in range(4):
        if path.is_dir():
            return path.resolve()  # a symlinked alias and its target are one folder
        if path.is_file() and path.stat().st_size < 256:
            target = path.read_text("utf-8", "replace").strip()
            if target and "/" not in target and "\n" not in target:
                path = root / target
                continue
        return None
    return None


@dataclass
class Ut1Report:
    imported: dict[str, str]  # UT1 folder → the folder read (an alias shows its target)
    skipped: list[str]  # UT1 folders with no Kalkan category


def read_ut1(root: str | os.PathLike, problems: ProblemSink, *,
             mapping: dict[str, tuple[str, ...]] | None = None,
             report: Ut1Report | None = None) -> Iterator[Entry]:
    """Entries of a UT1 tree.  An alias and its target are read once, with the union of
    both folders' Kalkan categories."""
    root = Path(root)
    mapping = UT1_MAP if mapping is None else mapping
    if not root.is_dir():
        raise FileNotFoundError(f"UT1 directory {root} does not exist; pass the folder that holds adult/, "
                                "games/, … (for example ../shared/data/ut1)")
    by_folder: dict[Path, list[str]] = {}
    names = sorted(p.name for p in root.iterdir())
    for name in names:
        folder = _ut1_folder(root, name)
        if folder is None:
            continue
        if name not in mapping:
            if report is not None:
                report.skipped.append(name)
            continue
        for cat in mapping[name]:
            if cat not in CATEGORIES:
                raise ValueError(f"UT1 mapping names unknown category {cat!r} for {name!r}")
        by_folder.setdefault(folder, [])
        by_folder[folder].extend(c for c in mapping[name] if c not in by_folder[folder])
        if report is not None:
            report.imported[name] = folder.name
    for folder, cats in by_folder.items():
        for kind in ("domains", "urls"):
            file = folder / kind
            if file.is_file():
                yield from read_plain(file, tuple(cats), problems)


def sniff_format(path: str | os.PathLike) -> str:
    """Guess a list file's format from its first meaningful lines."""
    path = Path(path)
    if path.is_dir():
        return "ut1"
    seen = 0
    for _, line in _read_lines(path):
        text = line.strip()
        if not text or text.startswith(("#", "!", "[")):
            continue
        if text.startswith("||"):
            return "adguard"
        first = text.split()[0]
        if re.match(r"^(\d{1,3}\.){3}\d{1,3}$|^::1?$", first) and len(text.split()) > 1:
            return "hosts"
        seen += 1
        if seen > 20:
            break
    return "plain"
