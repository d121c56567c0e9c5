"""Backups of the school's database, and a check that a backup can be restored (000 §3.2).

* `make_backup(url, out)` — SQLite: the online backup API (a consistent copy while the
  server keeps running; WAL lets writers go on).  PostgreSQL: `pg_dump --format=custom`.
  The file is written under a temporary name and renamed when complete, so `out` is never
  a half-written backup; an existing `out` is refused, not overwritten.
* `check_backup(path)` — SQLite: `PRAGMA integrity_check`, the schema revision, the
  tables Kalkan needs and their row counts.  PostgreSQL: `pg_restore --list` (the
  archive's table of contents) and a full read of every data block (`pg_restore -f
  /dev/null`), which fails on a truncated or damaged file.

Both return a `BackupReport` a person can read; problems raise `BackupError` with the fix.
The certificates and the CA in the state dir are files: copy them as files (docs/server.md).
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from policy_server.errors import KalkanError

# Tables whose absence means the file is not a Kalkan database (or not a whole one).
REQUIRED_TABLES = ("alembic_version", "schools", "people", "workstations", "events", "incidents",
                   "incident_timeline", "audit_log", "policy_versions")
COUNTED_TABLES = ("events", "incidents", "audit_log", "people", "workstations")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_PG_CUSTOM_MAGIC = b"PGDMP"


class BackupError(KalkanError):
    pass


@dataclass
class BackupReport:
    path: Path
    kind: str  # "sqlite" | "postgresql (pg_dump custom format)"
    size_bytes: int
    revision: str | None = None
    row_counts: dict[str, int] = field(default_factory=dict)  # SQLite only: pg_dump has no counts

    def lines(self) -> list[str]:
        out = [f"{self.path}: {self.kind}, {self.size_bytes:,} bytes"]
        if self.revision:
            out.append(f"schema revision {self.revision}")
        if self.row_counts:
            out.append(", ".join(f"{name}: {n:,}" for name, n in self.row_counts.items()))
        return out


# ----------------------------------------------------------------------------- make


def make_backup(db_url: str, out: Path) -> BackupReport:
    out = Path(out)
    if out.exists():
        raise BackupError(f"{out} already exists; choose a new name (e.g. with today's date) "
                          "or remove it first", code="backup.exists", params={"path": out})
    if not out.parent.is_dir():
        raise BackupError(f"the folder {out.parent} does not exist; create it or choose another --out",
                          code="backup.no_folder", params={"folder": out.parent})
    partial = out.with_name(f".{out.name}.partial")
    partial.unlink(missing_ok=True)
    url = make_url(db_url)
    try:
        if url.get_backend_name() == "sqlite":
            _sqlite_backup(url.database, partial)
        else:
            _pg_dump(db_url, partial)
        os.replace(partial, out)  # complete: only now under its name
    finally:
        partial.unlink(missing_ok=True)
    return check_backup(out)


def _sqlite_backup(database: str | None, partial: Path) -> None:
    if not database or database == ":memory:" or not Path(database).exists():
        raise BackupError(f"no SQLite database at {database!r}; check --state-dir / --db",
                          code="backup.no_database", params={"database": database})
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    target = sqlite3.connect(partial)
    try:
        source.backup(target)  # all pages in one step: one consistent snapshot
    finally:
        target.close()
        source.close()


def _pg_tool(name: str) -> str:
    """The PostgreSQL client program `name`: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   reverse=True)), None)
    if not found:
        raise BackupError(f"{name} not found: install the PostgreSQL client "
                          "(apt-get install postgresql-client)", code="backup.tool_missing",
                          params={"tool": name})
    return found


def _pg_dump(db_url: str, partial: Path) -> None:
    url = make_url(db_url)
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = url.password  # not on the command line, where `ps` would show it
    libpq = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    command = [_pg_tool("pg_dump"), "--format=custom", "--file", str(partial), "--dbname", libpq]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        output = result.stderr.strip() or result.stdout.strip()
        raise BackupError(f"pg_dump failed: {output}", code="backup.pg_dump_failed",
                          params={"output": output})


# ----------------------------------------------------------------------------- check


def check_backup(path: Path) -> BackupReport:
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"{path} is not a file; give the path of a backup made by `kalkan-server backup`",
                          code="backup.not_a_file", params={"path": path})
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_SQLITE_MAGIC):
        return _check_sqlite(path)
    if head.startswith(_PG_CUSTOM_MAGIC):
        return _check_pg_dump(path)
    raise BackupError(f"{path} is neither a SQLite database nor a pg_dump custom-format archive; "
                      "it is not a Kalkan backup (or it is damaged)",
                      code="backup.not_a_backup", params={"path": path})


def _check_sqlite(path: Path) -> BackupReport:
    # immutable=1: read the file exactly as it is, without creating -wal/-shm files beside it.
    connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        try:
            verdict = [row[0] for row in connection.execute("PRAGMA integrity_check")]
            listed = connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            tables = {row[0] for row in listed}
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{path} is damaged ({exc}); use another backup",
                              code="backup.damaged", params={"path": path, "problem": exc}) from None
        if verdict != ["ok"]:
            raise BackupError(f"{path} is damaged: {'; '.join(verdict[:5])}; use another backup",
                              code="backup.damaged", params={"path": path, "problem": "; ".join(verdict[:5])})
        missing = [t for t in REQUIRED_TABLES if t not in tables]
        if missing:
            raise BackupError(f"{path} is a SQLite file but not a Kalkan database: "
                              f"no table(s) {', '.join(missing)}",
                              code="backup.not_kalkan", params={"path": path, "missing": ", ".join(missing)})
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        counts = {t: connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED_TABLES}
    finally:
        connection.close()
    return BackupReport(path=path, kind="sqlite", size_bytes=path.stat().st_size,
                        revision=revision[0] if revision else None, row_counts=counts)


def _check_pg_dump(path: Path) -> BackupReport:
    restore = _pg_tool("pg_restore")
    listing = subprocess.run([restore, "--list", str(path)], capture_output=True, text=True)
    if listing.returncode:
        raise BackupError(f"{path} cannot be read by pg_restore ({listing.stderr.strip()}); "
                          "use another backup", code="backup.damaged",
                          params={"path": path, "problem": listing.stderr.strip()})
    data = {line.split()[-2] for line in listing.stdout.splitlines() if " TABLE DATA " in line}
    if any(name.startswith(("events_browsing", "events_other")) for name in data):
        data.add("events")  # partitioned by month (revision 0402): its rows are its partitions' data
    missing = [t for t in REQUIRED_TABLES if t not in data]
    if missing:
        raise BackupError(f"{path} is a PostgreSQL dump but not of a Kalkan database: no data for "
                          f"{', '.join(missing)}",
                          code="backup.not_kalkan", params={"path": path, "missing": ", ".join(missing)})
    full = subprocess.run([restore, "--file", os.devnull, str(path)], capture_output=True, text=True)
    if full.returncode:
        raise BackupError(f"{path} is damaged or incomplete ({full.stderr.strip()[:300]}); "
                          "use another backup", code="backup.damaged",
                          params={"path": path, "problem": full.stderr.strip()[:300]})
    return BackupReport(path=path, kind="postgresql (pg_dump custom format)", size_bytes=path.stat().st_size)
