"""The compiled category index: millions of domains and URL prefixes, each with a set of
categories, in one file that loads in milliseconds by mmap.

File layout (all integers little-endian; version 1)::

    0   magic      8 bytes  b"KALKIDX\\0"
    8   version    u32      FORMAT_VERSION
    12  header_len u32      bytes before the body (a multiple of 8)
    16  entries    u64      number of keys
    24  masks      u32      number of distinct category masks
    28  dir_bits   u32      the key's top bits that index the bucket directory
    32  idx_width  u32      bytes per mask index (1 or 2)
    36  meta_len   u32      length of the JSON metadata that follows the fixed part
    40  sha256     32 bytes of the body (everything after the header)
    72  meta       JSON: category ids in bit order, sources, counts, creation time
    body:  mask table  u64 × masks          (bit i = category ids[i]; bit 63 = "has paths")
           directory   u32 × (2**dir_bits + 1)  first key index of each bucket
           keys        u64 × entries        sorted 64-bit BLAKE2b hashes of the entries
           mask index  u8/u16 × entries     which mask each key has

A domain entry's key is the hash of its host (``example.com``); it matches the host and
every subdomain (squidGuard's semantics).  A URL entry's key is the hash of
``host/path``; it matches that path and everything below it (``host/a`` matches
``/a``, ``/a/…`` and ``/a?…``, not ``/ab``).  A host that has URL entries also gets a
key of its own whose mask carries the "has paths" bit, so that path expressions are
computed only for those few hosts.

Keys are hashes, not strings: 8 bytes instead of ~25, at the price of a false
positive when an unlisted expression has the same 64-bit hash as a listed one
(probability entries / 2**64 per lookup: 2e-13 at 4 million entries).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .canonical import canonical_host, canonicalize, parent_domains, query_subsets, split_canonical
from .categories import CATEGORIES, CategoryTable
from .importers import Entry, Problem, read_plain, read_ut1, sniff_format

MAGIC = b"KALKIDX\0"
FORMAT_VERSION = 1
HAS_PATHS = 1 << 63
_FIXED = struct.Struct("<8sIIQIIII32s")  # 72 bytes
_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes


class IndexError_(ValueError):
    """A file is not a usable Kalkan index (names the problem and what to do)."""


def key_of(expression: str) -> int:
    """The 64-bit key of one expression (``example.com`` or ``example.com/path``)."""
    data = expression.encode("utf-8", "surrogatepass")
    return _from_bytes(_blake2b(data, digest_size=8).digest(), "little")


def path_expressions(path: str, query: str | None) -> list[str]:
    """Every path an URL entry could be to match this request path (letter case folded, as
    entries are kept — `canonical.entry_path`): with the query's parameter subsets (an entry
    with a query matches requests carrying its parameters and more), without the query, then
    each directory with and without its trailing slash."""
    path = path.lower()
    out = []
    if query:
        out.extend(f"{path}?{q}" for q in query_subsets(query))
    elif query is not None:
        out.append(f"{path}?")
    out.append(path)
    pos = path.find("/", 1)
    while pos != -1:
        out.append(path[:pos])
        out.append(path[: pos + 1])
        pos = path.find("/", pos + 1)
    return out


@dataclass(frozen=True)
class Match:
    """What an index knows about one URL."""

    categories: frozenset[str]
    expressions: tuple[str, ...] = ()  # the list entries that matched (host or host/path)


NO_MATCH = Match(frozenset())


class _Lookup:
    """The common lookup logic over any key → mask source (file or overlay)."""

    table: CategoryTable

    def _mask(self, key: int) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _expr_mask(self, expression: str) -> int:
        return self._mask(key_of(expression))

    def lookup_host(self, host: str) -> tuple[int, list[tuple[str, int]], list[str]]:
        """(category mask of the host's domain entries, [(suffix, mask) that matched],
        [suffixes that have URL entries])."""
        mask = 0
        matched: list[tuple[str, int]] = []
        with_paths: list[str] = []
        for suffix in parent_domains(host):
            m = self._expr_mask(suffix)
            if m:
                if m & HAS_PATHS:
                    with_paths.append(suffix)
                    m &= ~HAS_PATHS
                if m:
                    mask |= m
                    matched.append((suffix, m))
        return mask, matched, with_paths

    def lookup(self, canonical_url: str) -> Match:
        """Categories of an already canonical URL (see `canonical.canonicalize`)."""
        host, path, query = split_canonical(canonical_url)
        mask, matched, with_paths = self.lookup_host(host)
        exprs = [s for s, _ in matched]
        if with_paths:
            paths = path_expressions(path, query)
            for suffix in with_paths:
                for p in paths:
                    m = self._expr_mask(suffix + p) & ~HAS_PATHS
                    if m:
                        mask |= m
                        exprs.append(suffix + p)
        if not mask:
            return NO_MATCH
        return Match(self.table.ids_of(mask), tuple(exprs))

    def host_has_paths(self, host: str) -> bool:
        return bool(self.lookup_host(host)[2])

    def categories_of(self, url: str) -> frozenset[str]:
        """Categories of any URL (canonicalised first)."""
        return self.lookup(canonicalize(url)).categories


class Overlay(_Lookup):
    """The school's own entries, on top of a compiled index: adding one site never
    rebuilds millions.  Kept in memory; saved as a small JSON file."""

    def __init__(self, entries: dict[str, Iterable[str]] | None = None):
        self.table = CategoryTable()
        self._masks: dict[int, int] = {}
        self._entries: dict[str, tuple[str, ...]] = {}
        for expression, cats in (entries or {}).items():
            self.add(expression, cats)

    def add(self, entry: str, categories: Iterable[str]) -> str:
        """Add (or extend) one domain or URL-prefix entry; returns its canonical form."""
        from .importers import parse_entry

        cats = tuple(categories)
        for c in cats:
            if c not in CATEGORIES:
                known = ", ".join(sorted(CATEGORIES))
                raise ValueError(f"unknown category {c!r} for {entry!r}; known: {known}")
        parsed = parse_entry(entry)
        if isinstance(parsed, str):
            raise ValueError(f"bad entry {entry!r}: {parsed}")
        host, path = parsed
        expression = host if path is None else host + path
        merged = tuple(dict.fromkeys(self._entries.get(expression, ()) + cats))
        self._entries[expression] = merged
        self._masks[key_of(expression)] = self._masks.get(key_of(expression), 0) | self.table.mask_of(merged)
        if path is not None:
            self._masks[key_of(host)] = self._masks.get(key_of(host), 0) | HAS_PATHS
        return expression

    def entries(self) -> dict[str, tuple[str, ...]]:
        return dict(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def _mask(self, key: int) -> int:
        return self._masks.get(key, 0)

    def save(self, path: str | os.PathLike) -> None:
        tmp = Path(f"{path}.tmp")
        tmp.write_text(json.dumps({"version": 1, "entries": self._entries}, ensure_ascii=False, indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Overlay:
        data = json.loads(Path(path).read_text("utf-8"))
        return cls(data.get("entries", {}))


class CategoryIndex(_Lookup):
    """A compiled index, memory-mapped (nothing is parsed at load), plus an optional
    overlay whose categories are added to the file's."""

    def __init__(self):
        self.table = CategoryTable([])
        self.meta: dict = {}
        self.path: str | None = None
        self.overlay: Overlay | None = None
        self._mm: mmap.mmap | None = None
        self._keys: memoryview | list = []
        self._dir: memoryview | list = [0, 0]
        self._idx: memoryview | list = []
        self._masks: list[int] = []
        self._shift = 64
        self._sha256 = ""
        self._host_cache: dict[str, tuple[int, list, list]] = {}

    # -------------------------------------------------------------- opening

    @classmethod
    def empty(cls, overlay: Overlay | None = None) -> CategoryIndex:
        index = cls()
        index.table = CategoryTable()
        index.overlay = overlay
        return index

    @classmethod
    def open(cls, path: str | os.PathLike, *, overlay: Overlay | None = None, verify: bool = False
             ) -> CategoryIndex:
        """Map an index file.  `verify=True` also checks the body's SHA-256 (reads the
        whole file: do it once after download, not at every start)."""
        index = cls()
        index.path = str(path)
        try:
            with open(path, "rb") as fh:
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise IndexError_(f"index file {path} does not exist; build one with "
                              "`kalkan-filter compile -o {path} --ut1 DIR`") from None
        except ValueError:
            raise IndexError_(f"index file {path} is empty; rebuild it with "
                              "`kalkan-filter compile`") from None
        if len(mm) < _FIXED.size or mm[:8] != MAGIC:
            raise IndexError_(f"{path} is not a Kalkan index (bad magic); rebuild it with "
                              "`kalkan-filter compile`")
        magic, version, header_len, n, n_masks, dir_bits, width, meta_len, digest = _FIXED.unpack_from(mm, 0)
        if version != FORMAT_VERSION:
            raise IndexError_(f"{path} has index format {version}, this Kalkan reads {FORMAT_VERSION}; "
                              "rebuild it with this version's `kalkan-filter compile`")
        expected = header_len + 8 * n_masks + 4 * ((1 << dir_bits) + 1) + 8 * n + width * n
        expected_padded = header_len + _pad8(expected - header_len)
        if len(mm) not in (expected, expected_padded):
            raise IndexError_(f"{path} is truncated or damaged ({len(mm)} bytes, expected {expected}); "
                              "download or compile it again")
        index.meta = json.loads(bytes(mm[_FIXED.size:_FIXED.size + meta_len]).decode("utf-8"))
        index.table = CategoryTable(list(index.meta["categories"]))
        index._sha256 = digest.hex()
        view = memoryview(mm)
        pos = header_len
        index._masks = list(view[pos:pos + 8 * n_masks].cast("Q"))
        pos += 8 * n_masks
        index._dir = view[pos:pos + 4 * ((1 << dir_bits) + 1)].cast("I")
        pos += 4 * ((1 << dir_bits) + 1)
        index._keys = view[pos:pos + 8 * n].cast("Q")
        pos += 8 * n
        index._idx = view[pos:pos + width * n].cast("B" if width == 1 else "H")
        index._shift = 64 - dir_bits
        index._mm = mm
        index.overlay = overlay
        if overlay is not None:
            index._merge_overlay_table()
        if verify:
            index.verify()
        return index

    def _merge_overlay_table(self) -> None:
        for cat in self.overlay.table.ids if self.overlay else ():
            if cat not in self.table.ids:
                self.table.ids.append(cat)

    def with_overlay(self, overlay: Overlay | None) -> CategoryIndex:
        """This index with `overlay` on top (the mapped file is shared, not copied)."""
        other = object.__new__(CategoryIndex)
        other.__dict__.update(self.__dict__)
        other.table = CategoryTable(list(self.table.ids))
        other.overlay = overlay
        other._host_cache = {}
        other._merge_overlay_table()
        return other

    def verify(self) -> None:
        """Check the body's SHA-256 against the header; raises IndexError_ if damaged."""
        if self._mm is None:
            return
        header_len = _FIXED.unpack_from(self._mm, 0)[2]
        actual = hashlib.sha256(memoryview(self._mm)[header_len:]).hexdigest()
        if actual != self._sha256:
            raise IndexError_(f"{self.path} is damaged (content hash {actual[:12]}… does not match the "
                              f"header's {self._sha256[:12]}…); download or compile it again")

    def close(self) -> None:
        self._keys = self._idx = []
        self._dir = [0, 0]
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # views still alive elsewhere; the map closes when they go
            self._mm = None

    # -------------------------------------------------------------- lookups

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def sha256(self) -> str:
        return self._sha256

    def _mask(self, key: int) -> int:
        keys = self._keys
        b = key >> self._shift
        lo, hi = self._dir[b], self._dir[b + 1]
        i = bisect_left(keys, key, lo, hi)
        if i < hi and keys[i] == key:
            return self._masks[self._idx[i]]
        return 0

    def _expr_mask(self, expression: str) -> int:
        key = key_of(expression)
        mask = self._mask(key)
        if self.overlay is not None:
            extra = self.overlay._mask(key)
            if extra:
                # overlay bits are in the overlay's table; translate to ours
                translated = self.table.mask_of(self.overlay.table.ids_of(extra & ~HAS_PATHS))
                mask |= translated | (extra & HAS_PATHS)
        return mask

    def lookup_host(self, host: str):
        cached = self._host_cache.get(host)
        if cached is None:
            if len(self._host_cache) > 8192:
                self._host_cache.clear()
            cached = self._host_cache[host] = super().lookup_host(host)
        return cached

    def info(self) -> dict:
        size = len(self._mm) if self._mm is not None else 0
        n = len(self)
        return {
            "path": self.path,
            "format_version": FORMAT_VERSION,
            "entries": n,
            "bytes": size,
            "bytes_per_entry": round(size / n, 2) if n else None,
            "sha256_body": self._sha256,
            "categories": self.table.ids,
            **{k: v for k, v in self.meta.items() if k not in ("categories",)},
            "overlay_entries": len(self.overlay) if self.overlay else 0,
        }


def _pad8(n: int) -> int:
    return (n + 7) & ~7


# ------------------------------------------------------------------ compiling


@dataclass(frozen=True)
class Source:
    """One input of `compile_index`: a list file or a UT1 directory."""

    path: str
    format: str = "auto"  # plain | hosts | adguard | ut1 | auto
    categories: tuple[str, ...] = ()  # required unless format is ut1


@dataclass
class CompileStats:
    entries: int = 0  # lines that became entries (before de-duplication)
    keys: int = 0  # distinct keys written
    problems: int = 0
    sources: list[str] = field(default_factory=list)
    skipped_ut1: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0
    sha256: str = ""


def _count_lines(path: Path) -> int:
    if path.is_dir():
        return sum(_count_lines(f) for f in path.glob("*/domains")) + sum(
            _count_lines(f) for f in path.glob("*/urls"))
    total = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            total += chunk.count(b"\n")
    return total


def entries_of(source: Source, problems: Callable[[Problem], None], stats: CompileStats) -> Iterable[Entry]:
    from .importers import Ut1Report

    fmt = sniff_format(source.path) if source.format == "auto" else source.format
    if fmt == "ut1":
        report = Ut1Report({}, [])
        yield from read_ut1(source.path, problems, report=report)
        stats.skipped_ut1.extend(report.skipped)
        return
    if not source.categories:
        raise ValueError(f"list {source.path} needs its categories (e.g. --list games={source.path})")
    for c in source.categories:
        if c not in CATEGORIES:
            known = ", ".join(sorted(CATEGORIES))
            raise ValueError(f"unknown category {c!r} for {source.path}; known: {known}")
    if not Path(source.path).is_file():
        raise FileNotFoundError(f"list file {source.path} does not exist")
    yield from read_plain(source.path, source.categories, problems, fmt=fmt)


def compile_index(sources: Iterable[Source | Iterable[Entry]], out_path: str | os.PathLike, *,
                  on_problem: Callable[[Problem], None] | None = None,
                  on_progress: Callable[[int, int], None] | None = None,
                  meta: dict | None = None) -> CompileStats:
    """Build an index file from list sources (or iterables of `Entry`).  Writes to a
    temporary file and renames it, so a failed compile leaves no half-written index."""
    started = time.perf_counter()
    stats = CompileStats()
    table = CategoryTable()
    sources = list(sources)
    total = sum(_count_lines(Path(s.path)) for s in sources if isinstance(s, Source)) or 0

    def problem(p: Problem) -> None:
        stats.problems += 1
        if on_problem:
            on_problem(p)

    masks: dict[int, int] = {}
    get = masks.get
    done = 0
    for source in sources:
        if isinstance(source, Source):
            stats.sources.append(f"{source.format}:{source.path}")
            entries = entries_of(source, problem, stats)
        else:
            entries = source
        for entry in entries:
            mask = table.mask_of(entry.categories)
            key = key_of(entry.expression)
            masks[key] = get(key, 0) | mask
            if entry.path is not None:
                hk = key_of(entry.host)
                masks[hk] = get(hk, 0) | HAS_PATHS
            stats.entries += 1
            done += 1
            if on_progress and done % 50000 == 0:
                on_progress(done, max(total, done))
    if on_progress:
        on_progress(max(total, done), max(total, done))
    _write(out_path, masks, table, stats, meta or {})
    stats.seconds = round(time.perf_counter() - started, 3)
    return stats


def _write(out_path, masks: dict[int, int], table: CategoryTable, stats: CompileStats, meta: dict) -> None:
    keys = array("Q", sorted(masks))
    n = len(keys)
    distinct = sorted(set(masks.values()))
    if len(distinct) > 65535:
        raise ValueError("more than 65535 distinct category combinations; this format cannot hold them")
    width = 1 if len(distinct) <= 256 else 2
    position = {m: i for i, m in enumerate(distinct)}
    idx = array("B" if width == 1 else "H", (position[masks[k]] for k in keys))
    dir_bits = max(0, min(24, (n // 4).bit_length()))
    shift = 64 - dir_bits
    directory = array("I", [0]) * ((1 << dir_bits) + 1)
    # directory[b] = index of the first key whose top bits are >= b
    bucket = 0
    for i, key in enumerate(keys):
        top = key >> shift
        while bucket <= top:
            directory[bucket] = i
            bucket += 1
    while bucket <= (1 << dir_bits):
        directory[bucket] = n
        bucket += 1
    body = [array("Q", distinct).tobytes(), directory.tobytes(), keys.tobytes(), idx.tobytes()]
    body_bytes = b"".join(body)
    body_bytes += b"\0" * (_pad8(len(body_bytes)) - len(body_bytes))
    digest = hashlib.sha256(body_bytes).digest()
    meta_json = json.dumps({
        "categories": table.ids,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sources": stats.sources,
        "input_entries": stats.entries,
        "problems": stats.problems,
        **meta,
    }, ensure_ascii=False).encode("utf-8")
    header_len = _pad8(_FIXED.size + len(meta_json))
    header = _FIXED.pack(MAGIC, FORMAT_VERSION, header_len, n, len(distinct), dir_bits, width,
                         len(meta_json), digest) + meta_json
    header += b"\0" * (header_len - len(header))
    tmp = Path(f"{out_path}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(header)
        fh.write(body_bytes)
    os.replace(tmp, out_path)
    stats.keys = n
    stats.bytes = len(header) + len(body_bytes)
    stats.sha256 = hashlib.sha256(header + body_bytes).hexdigest()


def index_for_policy(base: CategoryIndex | None, site_categories: dict[str, Iterable[str]]
                     ) -> CategoryIndex | None:
    """The index a decision uses under one policy: the compiled lists (`base`, or none) with
    the school's own categorisation (`filtering.site_categories`) on top.  The one code path
    of `kalkan-filter check` and the workstation proxy, so both decide the same."""
    overlay = Overlay(site_categories) if site_categories else None
    if base is None:
        return CategoryIndex.empty(overlay) if overlay is not None else None
    return base.with_overlay(overlay) if overlay is not None else base


def build_overlay_from_lists(site_categories: dict[str, Iterable[str]]) -> Overlay:
    """An overlay from a policy's ``site_categories`` (entry → category ids)."""
    return Overlay({entry: list(cats) for entry, cats in site_categories.items()})


__all__ = [
    "CategoryIndex", "Overlay", "index_for_policy",
    "Match", "Source", "CompileStats", "compile_index", "key_of",
    "IndexError_", "FORMAT_VERSION", "canonical_host", "path_expressions", "parent_domains",
]
