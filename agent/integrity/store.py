"""The baseline on disk: root-only, tamper-evident (thin edge).

Threat model, honestly:

* Root on the workstation can do anything, including changing this agent.  No
  local trick stops that; what makes tampering *evident* is the server: every new
  baseline version sends its digest (`integrity.baseline`), chained to the one
  before, and every full check sends the digest it verified.  A digest the server
  never saw, or a broken chain, is an incident (policy_server/rules/integrity.py).
* Locally the baseline is a SQLite file readable only by root (0600 in a 0700
  folder).  Its *seal* is an HMAC-SHA256 of the whole file under a key that lives
  elsewhere (the key folder, default /etc/kalkan/integrity, also root-only); the
  seal, version and digest of the last baseline written are kept beside the key
  (`anchor.json`).  An edited, corrupted, swapped or rolled-back baseline no longer
  matches the anchor: that catches anyone who cannot also rewrite the key folder,
  and the server catches the rest.
* The file is verified once and then read from that verified copy in memory
  (sqlite3 deserialize), so it cannot change between verification and use.
* Writes go to new files renamed into place: never half a baseline.  (A power cut
  between the two renames reads as tampering: rare, and safe in the right direction.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import stat as statmod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agent.integrity.model import FILE, LINK, FileRecord, content_digest, record_key


class BaselineMissing(Exception):
    """No baseline yet: build one with `kalkan-agent integrity baseline`."""


class BaselineTampered(Exception):
    """The baseline on disk is not the one this agent wrote."""


_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (
    path PRIMARY KEY, fkey BLOB NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    ino INTEGER NOT NULL, dev INTEGER NOT NULL, st_mode INTEGER NOT NULL, uid INTEGER NOT NULL,
    gid INTEGER NOT NULL, sha256 TEXT, target BLOB, package TEXT
) WITHOUT ROWID;
"""
# `path` is TEXT when it is valid UTF-8 (nearly always: read back without decoding) and
# the raw bytes as a BLOB otherwise; `fkey` is `model.fast_key`, packed.
_COLUMNS = "path, size, mtime_ns, ctime_ns, ino, dev, st_mode, uid, gid, sha256, target, package"
_INSERT = f"INSERT OR REPLACE INTO files (fkey, {_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
_KEYS = "SELECT path, fkey FROM files"


def _db_path(path: str) -> str | bytes:
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


def _keys(db: sqlite3.Connection) -> dict[str, bytes]:
    keys = dict(db.execute(_KEYS + " WHERE typeof(path) = 'text'"))
    keys.update((os.fsdecode(p), k) for p, k in db.execute(_KEYS + " WHERE typeof(path) = 'blob'"))
    return keys


_TYPE_BITS = {FILE: statmod.S_IFREG, LINK: statmod.S_IFLNK}


def _row(r: FileRecord) -> tuple:
    return (
        record_key(r),
        _db_path(r.path),
        r.size,
        r.mtime_ns,
        r.ctime_ns,
        r.ino,
        r.dev,
        r.mode | _TYPE_BITS[r.kind],
        r.uid,
        r.gid,
        r.sha256,
        os.fsencode(r.target) if r.target is not None else None,
        r.package,
    )


def _record(row: tuple) -> FileRecord:
    path, size, mtime_ns, ctime_ns, ino, dev, st_mode, uid, gid, sha256, target, package = row
    kind = LINK if statmod.S_ISLNK(st_mode) else FILE
    return FileRecord(
        path if isinstance(path, str) else os.fsdecode(path),
        kind,
        size,
        mtime_ns,
        ctime_ns,
        ino,
        dev,
        statmod.S_IMODE(st_mode),
        uid,
        gid,
        sha256,
        os.fsdecode(target) if target is not None else None,
        package,
    )


@dataclass
class Baseline:
    """A verified baseline, held as an in-memory SQLite copy plus the fast-path keys."""

    keys: dict[str, bytes]  # path → fast_key, for the fast path
    roots: list[str]
    exclude: list[str] = field(default_factory=list)
    seq: int = 0
    digest: str = ""
    prev_digest: str | None = None
    created_at: str = ""
    reason: str = "created"
    db: sqlite3.Connection | None = None

    def fetch(self, paths: Iterable[str]) -> dict[str, FileRecord]:
        """Full records of these paths (those the baseline has)."""
        if self.db is None:
            return {}
        found = {}
        for path in paths:
            row = self.db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE path = ?", (_db_path(path),)
            ).fetchone()
            if row is not None:
                found[path] = _record(row)
        return found

    def all_records(self) -> dict[str, FileRecord]:
        if self.db is None:
            return {}
        return {r.path: r for r in map(_record, self.db.execute(f"SELECT {_COLUMNS} FROM files"))}

    def __len__(self) -> int:
        return len(self.keys)


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Write a root-only file atomically (new file, fsync, rename)."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _digest_of(db: sqlite3.Connection, *, seq: int, prev_digest: str | None, roots: list[str]) -> str:
    records = sorted(map(_record, db.execute(f"SELECT {_COLUMNS} FROM files")), key=lambda r: r.path)
    return content_digest(records, seq=seq, prev_digest=prev_digest, roots=roots)


class BaselineStore:
    """`state_dir/baseline.sqlite` is the baseline; `key_dir/key` the HMAC key and
    `key_dir/anchor.json` the last version, digest and seal written."""

    def __init__(self, state_dir: Path, key_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.key_dir = Path(key_dir)
        self.db_path = self.state_dir / "baseline.sqlite"
        self.key_path = self.key_dir / "key"
        self.anchor_path = self.key_dir / "anchor.json"

    def exists(self) -> bool:
        return self.db_path.exists()

    def _key(self, *, create: bool) -> bytes:
        if not self.key_path.exists():
            if not create:
                raise BaselineTampered(f"the baseline key {self.key_path} is missing")
            _private_dir(self.key_dir)
            _write_private(self.key_path, (secrets.token_hex(32) + "\n").encode())
        return bytes.fromhex(self.key_path.read_text().strip())

    def _anchor(self) -> dict | None:
        try:
            return json.loads(self.anchor_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BaselineTampered(f"the baseline anchor {self.anchor_path} is unreadable: {exc}") from None

    def anchor_digest(self) -> tuple[int, str] | None:
        """The last (version, digest) written, even when the baseline itself is damaged."""
        try:
            anchor = self._anchor()
        except BaselineTampered:
            return None
        return (int(anchor["seq"]), anchor["digest"]) if anchor else None

    # ------------------------------------------------------------------ reading

    def load(self) -> Baseline:
        """The verified baseline; raises BaselineMissing or BaselineTampered (saying why)."""
        if not self.db_path.exists():
            raise BaselineMissing(f"no baseline at {self.db_path}")
        data = self.db_path.read_bytes()
        anchor = self._anchor()
        if anchor is None:
            raise BaselineTampered(f"the baseline anchor {self.anchor_path} is missing")
        seal = hmac.new(self._key(create=False), data, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(seal, str(anchor.get("seal", ""))):
            raise BaselineTampered(
                f"{self.db_path} is not the baseline last written (version {anchor.get('seq')}, digest "
                f"{str(anchor.get('digest'))[:12]}…): it was edited, replaced or rolled back"
            )
        db = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            db.deserialize(data)
            meta = dict(db.execute("SELECT key, value FROM meta"))
            keys = _keys(db)
            baseline = Baseline(
                keys=keys,
                roots=json.loads(meta["roots"]),
                exclude=json.loads(meta["exclude"]),
                seq=int(meta["seq"]),
                digest=meta["digest"],
                prev_digest=meta["prev_digest"] or None,
                created_at=meta["created_at"],
                reason=meta["reason"],
                db=db,
            )
        except (sqlite3.Error, KeyError, ValueError, TypeError) as exc:
            db.close()
            raise BaselineTampered(f"the baseline file {self.db_path} is damaged: {exc}") from None
        if baseline.digest != anchor.get("digest") or baseline.seq != anchor.get("seq"):
            raise BaselineTampered("the baseline's version or digest differs from the anchor's")
        return baseline

    def lookup(self, path: str) -> FileRecord | None:
        """One record straight from disk, for the real-time watch (the periodic checks verify
        the seal; reading the file here keeps the agent's memory small)."""
        if not self.db_path.exists():
            return None
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            row = db.execute(f"SELECT {_COLUMNS} FROM files WHERE path = ?", (_db_path(path),)).fetchone()
        finally:
            db.close()
        return _record(row) if row else None

    # ------------------------------------------------------------------ writing

    def save(
        self,
        records: Mapping[str, FileRecord],
        *,
        roots: list[str],
        exclude: list[str],
        reason: str,
        previous: tuple[int, str] | None,
    ) -> Baseline:
        """A whole new baseline version, chained to `previous` (seq, digest) if any."""
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.executescript(_SCHEMA)
        db.executemany(_INSERT, (_row(r) for r in records.values()))
        seq, prev_digest = (previous[0] + 1, previous[1]) if previous else (0, None)
        return self._commit(
            db, roots=roots, exclude=exclude, reason=reason, seq=seq, prev_digest=prev_digest, digest=None
        )

    def update(
        self,
        base: Baseline,
        *,
        upserts: Iterable[FileRecord],
        deletes: Iterable[str],
        roots: list[str],
        exclude: list[str],
        reason: str,
        content_changed: bool,
    ) -> Baseline:
        """Apply changes to `base`.  A new version when the protected content changed; else
        the same version and digest with a fresh seal (only the fast-path cache moved)."""
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.deserialize(base.db.serialize())
        db.executemany(_INSERT, (_row(r) for r in upserts))
        db.executemany("DELETE FROM files WHERE path = ?", ((_db_path(p),) for p in deletes))
        if content_changed or sorted(roots) != sorted(base.roots):
            return self._commit(
                db,
                roots=roots,
                exclude=exclude,
                reason=reason,
                seq=base.seq + 1,
                prev_digest=base.digest,
                digest=None,
            )
        return self._commit(
            db,
            roots=roots,
            exclude=exclude,
            reason=base.reason,
            seq=base.seq,
            prev_digest=base.prev_digest,
            digest=base.digest,
        )

    def _commit(
        self,
        db: sqlite3.Connection,
        *,
        roots: list[str],
        exclude: list[str],
        reason: str,
        seq: int,
        prev_digest: str | None,
        digest: str | None,
    ) -> Baseline:
        if digest is None:
            digest = _digest_of(db, seq=seq, prev_digest=prev_digest, roots=roots)
        created_at = datetime.now(UTC).isoformat(timespec="seconds")
        meta = {
            "seq": str(seq),
            "digest": digest,
            "prev_digest": prev_digest or "",
            "roots": json.dumps(roots),
            "exclude": json.dumps(exclude),
            "created_at": created_at,
            "reason": reason,
        }
        db.execute("DELETE FROM meta")
        db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        db.commit()
        data = db.serialize()
        seal = hmac.new(self._key(create=True), data, hashlib.sha256).hexdigest()
        _private_dir(self.state_dir)
        _write_private(self.db_path, data)
        _write_private(self.anchor_path, json.dumps({"seq": seq, "digest": digest, "seal": seal}).encode())
        keys = _keys(db)
        return Baseline(
            keys=keys,
            roots=list(roots),
            exclude=list(exclude),
            seq=seq,
            digest=digest,
            prev_digest=prev_digest,
            created_at=created_at,
            reason=reason,
            db=db,
        )
