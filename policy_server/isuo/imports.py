"""Imports of ISUO's own access records (CSV or XLSX exports).

A *source* (e.g. "ISUO web export") keeps its column mapping: which column holds the login,
the time, the action, the IP address and the record type.  An import:

1. reads the file (CSV: UTF-8 or Windows-1251, comma, semicolon or tab; XLSX: the first
   sheet, through openpyxl in read-only mode) and checks every row;
2. refuses the whole file when any row is bad, naming each bad row's line, the problem and
   the fix (nothing is stored: 000 §5.6 needs a complete log, not half of one);
3. stores each record once: its `row_hash` (SHA-256 of login, UTC time, action, IP, record
   type) is unique, so importing the same file, or an overlapping export, adds only what is new;
4. matches the seat from the school's address plan (IP → seat, workstation) and links the
   proxy's ISUO session at that workstation that overlaps the record's time;
5. runs the cross-checks on the new records (`policy_server.isuo.checks`), in the same
   transaction.

Times without a zone are the school's local time (Asia/Bishkek).  Never stored: any ISUO
content (only who, when, from where, what kind of action).
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import ipaddress
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import PurePath

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.bulk import insert_rows
from policy_server.db.models import IsuoAccess
from policy_server.errors import InvalidInput
from policy_server.isuo import error_texts  # noqa: F401  (registers the codes' texts)
from policy_server.isuo.models import IsuoAddress, IsuoImport, IsuoRecord, IsuoSource
from policy_server.isuo.rules import SCHOOL_TZ, Access
from policy_server.web.i18n import N_

FIELDS = ("login", "time", "action", "ip", "record_type")
REQUIRED = ("login", "time")
FIELD_NAMES = {
    "login": N_("Login"),
    "time": N_("Time"),
    "action": N_("Action"),
    "ip": N_("IP address"),
    "record_type": N_("Record type"),
}
TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%Y-%m-%dT%H:%M:%S",
)
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PROBLEMS_SHOWN = 50
# A proxy session with no recorded end counts as lasting this long for the overlap.
OPEN_SESSION = timedelta(hours=2)
SLACK = timedelta(minutes=2)  # clocks of ISUO and of the workstation differ a little
HASH_CHUNK = 5000  # SQLite: hashes per IN (its limit is 32,766 parameters)


@dataclass(frozen=True)
class RowProblem:
    line: int
    problem: str  # English message id
    fix: str  # English message id
    params: dict = field(default_factory=dict)


class ImportRejected(InvalidInput):
    """The file was not imported: `problems` name each bad row (line, problem, fix)."""

    def __init__(self, problems: list[RowProblem], total_bad: int):
        first = problems[0]
        super().__init__(
            f"{total_bad} bad row(s); first at line {first.line}: {first.problem % first.params}",
            code="isuo.import_rejected",
            params={"n": total_bad, "line": first.line},
        )
        self.problems = problems
        self.total_bad = total_bad


@dataclass(frozen=True)
class ParsedRow:
    line: int
    login: str
    at: datetime
    action: str
    ip: str | None
    record_type: str
    row_hash: str = ""

    def __post_init__(self) -> None:
        text = "\x1f".join(
            (self.login, self.at.astimezone(UTC).isoformat(), self.action, self.ip or "", self.record_type)
        )
        object.__setattr__(self, "row_hash", hashlib.sha256(text.encode()).hexdigest())


@dataclass
class ImportResult:
    import_id: int
    rows_total: int
    rows_new: int
    rows_duplicate: int
    matched_seats: int
    incidents: int = 0


# ----------------------------------------------------------------------------- sources


def clean_mapping(mapping: dict[str, str]) -> dict[str, str]:
    """Field → column header; required fields must name a column (fix named in the error)."""
    cleaned = {f: (mapping.get(f) or "").strip() for f in FIELDS}
    missing = [f for f in REQUIRED if not cleaned[f]]
    if missing:
        raise ImportRejected(
            [
                RowProblem(
                    0,
                    N_("The column mapping names no column for %(field)s."),
                    N_("Type the header of the column that holds it, as in the file's first row."),
                    {"field": missing[0]},
                )
            ],
            1,
        )
    return {f: c for f, c in cleaned.items() if c}


def save_source(db: Session, *, name: str, mapping: dict[str, str], actor: str) -> IsuoSource:
    name = name.strip()[:100]
    if not name:
        raise ImportRejected(
            [
                RowProblem(
                    0,
                    N_("The source has no name."),
                    N_("Name where the file comes from, e.g. ISUO web export."),
                )
            ],
            1,
        )
    cleaned = clean_mapping(mapping)
    source = db.scalar(select(IsuoSource).where(IsuoSource.name == name))
    if source is None:
        source = IsuoSource(name=name, mapping=cleaned, created_at=datetime.now(UTC))
        db.add(source)
        db.flush()
        audit(
            db, actor=actor, action="isuo.source_created", target=f"isuo_source:{source.id}", detail=cleaned
        )
    elif source.mapping != cleaned:
        audit(
            db,
            actor=actor,
            action="isuo.source_mapping_changed",
            target=f"isuo_source:{source.id}",
            detail={"before": source.mapping, "after": cleaned},
        )
        source.mapping = cleaned
    return source


def list_sources(db: Session) -> list[IsuoSource]:
    return list(db.scalars(select(IsuoSource).order_by(IsuoSource.name)))


# ----------------------------------------------------------------------------- reading files


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp1251"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def read_table(data: bytes, file_name: str) -> Iterator[tuple[int, list]]:
    """(line number, cells) of every row, the header first.  XLSX by its zip magic, else CSV."""
    if data[:2] == b"PK" or PurePath(file_name).suffix.lower() == ".xlsx":
        yield from _read_xlsx(data)
    else:
        yield from _read_csv(data)


def _read_csv(data: bytes) -> Iterator[tuple[int, list]]:
    text = _decode(data)
    first = text.split("\n", 1)[0]
    delimiter = max((";", ",", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    for cells in reader:
        if cells and any(c.strip() for c in cells):
            yield reader.line_num, cells


def _read_xlsx(data: bytes) -> Iterator[tuple[int, list]]:
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several kinds for a damaged file
        raise ImportRejected(
            [
                RowProblem(
                    0,
                    N_("The file is not a readable XLSX workbook (%(error)s)."),
                    N_("Save it again from the spreadsheet as .xlsx or as CSV."),
                    {"error": type(exc).__name__},
                )
            ],
            1,
        ) from exc
    try:
        sheet = book.worksheets[0]
        for number, cells in enumerate(sheet.iter_rows(values_only=True), start=1):
            if cells and any(c is not None and str(c).strip() for c in cells):
                yield number, list(cells)
    finally:
        book.close()


@lru_cache(maxsize=4096)
def normal_ip(text: str) -> str | None:
    """'010.35.1.7 ' → None (not an address); the canonical text otherwise (cached: a school has
    a few dozen addresses, an export repeats them)."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def parse_time(value) -> datetime | None:
    """An aware UTC time from a cell: a datetime (XLSX) or text in one of TIME_FORMATS or ISO."""
    if isinstance(value, datetime):
        at = value
    else:
        text = str(value or "").strip()
        if not text:
            return None
        at = None
        try:
            at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            for fmt in TIME_FORMATS:
                try:
                    at = datetime.strptime(text, fmt)
                    break
                except ValueError:
                    continue
        if at is None:
            return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=SCHOOL_TZ)
    return at.astimezone(UTC)


def parse_rows(data: bytes, file_name: str, mapping: dict[str, str]) -> list[ParsedRow]:
    """Every data row, checked.  Raises `ImportRejected` naming the bad rows (all of the file)."""
    if len(data) > MAX_FILE_BYTES:
        raise ImportRejected(
            [
                RowProblem(
                    0,
                    N_("The file is larger than 50 MB."),
                    N_("Export a shorter period (e.g. one month) and import each file."),
                )
            ],
            1,
        )
    rows = read_table(data, file_name)
    header = next(rows, None)
    if header is None:
        raise ImportRejected(
            [
                RowProblem(
                    0,
                    N_("The file is empty."),
                    N_("Export the access records again; the first row names the columns."),
                )
            ],
            1,
        )
    header_line, names = header
    index = {str(n).strip().lower(): i for i, n in enumerate(names) if n is not None}
    columns: dict[str, int] = {}
    for f, column in mapping.items():
        i = index.get(column.strip().lower())
        if i is None:
            raise ImportRejected(
                [
                    RowProblem(
                        header_line,
                        N_("No column %(column)s (for %(field)s) in the first row; it has: %(found)s."),
                        N_(
                            "Correct the column mapping to one of the headers found, "
                            "or export with that column."
                        ),
                        {
                            "column": column,
                            "field": f,
                            "found": ", ".join(str(n) for n in names if n is not None),
                        },
                    )
                ],
                1,
            )
        columns[f] = i
    parsed: list[ParsedRow] = []
    problems: list[RowProblem] = []
    bad = 0

    width = max(columns.values()) + 1
    i_login, i_time = columns["login"], columns["time"]
    i_action, i_ip, i_type = columns.get("action"), columns.get("ip"), columns.get("record_type")

    def cell_text(cells: list, i: int | None, limit: int) -> str:
        value = cells[i] if i is not None else None
        return "" if value is None else str(value).strip()[:limit]

    for line, cells in rows:
        if len(cells) < width:
            cells = [*cells, *([None] * (width - len(cells)))]
        login = cell_text(cells, i_login, 128).lower()
        at = parse_time(cells[i_time])
        ip_text = cell_text(cells, i_ip, 45)
        problem = None
        if not login:
            problem = RowProblem(
                line, N_("The login is empty."), N_("Fill in the login or delete the row from the file.")
            )
        elif at is None:
            problem = RowProblem(
                line,
                N_("The time %(value)s is not a date and time."),
                N_("Write it as 2026-09-01 08:30:00 or 01.09.2026 08:30."),
                {"value": str(cells[i_time] or "")[:40]},
            )
        elif ip_text:
            normal = normal_ip(ip_text)
            if normal is None:
                problem = RowProblem(
                    line,
                    N_("%(value)s is not an IP address."),
                    N_("Write it as 10.35.1.7, or leave the cell empty."),
                    {"value": ip_text},
                )
            ip_text = normal
        if problem is not None:
            bad += 1
            if len(problems) < MAX_PROBLEMS_SHOWN:
                problems.append(problem)
            continue
        parsed.append(
            ParsedRow(
                line, login, at, cell_text(cells, i_action, 64), ip_text or None, cell_text(cells, i_type, 64)
            )
        )
    if problems:
        raise ImportRejected(problems, bad)
    return parsed


# ----------------------------------------------------------------------------- seats and proxy sessions


class ProxySessions:
    """The proxy's ISUO sessions per workstation, for overlap lookups (bisect on start)."""

    def __init__(self, db: Session, *, since: datetime, until: datetime):
        self.by_agent: dict[str, list[tuple[datetime, datetime, int, str | None]]] = defaultdict(list)
        rows = db.execute(
            select(
                IsuoAccess.agent_id,
                IsuoAccess.started_at,
                IsuoAccess.ended_at,
                IsuoAccess.id,
                IsuoAccess.seat,
            ).where(
                IsuoAccess.source == "proxy",
                IsuoAccess.agent_id.is_not(None),
                IsuoAccess.started_at >= since - OPEN_SESSION,
                IsuoAccess.started_at <= until,
            )
        )
        self.all: list[tuple[datetime, datetime, int, str | None, str]] = []
        for agent, start, end, access_id, seat in rows:
            end = end or start + OPEN_SESSION
            self.by_agent[agent].append((start, end, access_id, seat))
            self.all.append((start, end, access_id, seat, agent))
        for sessions in self.by_agent.values():
            sessions.sort()
        self.all.sort()
        self._starts = {a: [s[0] for s in v] for a, v in self.by_agent.items()}
        self._all_starts = [s[0] for s in self.all]

    def at_agent(self, agent_id: str, at: datetime) -> int | None:
        sessions = self.by_agent.get(agent_id)
        if not sessions:
            return None
        i = bisect.bisect_right(self._starts[agent_id], at + SLACK)
        for start, end, access_id, _seat in reversed(sessions[max(0, i - 8) : i]):
            if start - SLACK <= at <= end + SLACK:
                return access_id
        return None

    def only_one_at(self, at: datetime) -> tuple[int, str | None, str] | None:
        """The one session anywhere in the school overlapping `at` (None if zero or several)."""
        i = bisect.bisect_right(self._all_starts, at + SLACK)
        hits = [s for s in self.all[max(0, i - 64) : i] if s[0] - SLACK <= at <= s[1] + SLACK]
        if len(hits) != 1:
            return None
        _start, _end, access_id, seat, agent = hits[0]
        return access_id, seat, agent


# ----------------------------------------------------------------------------- import


def stored_hashes(db: Session, hashes: list[str]) -> set[str]:
    """Which of these row hashes are stored already: PostgreSQL in one query (`= ANY` of one
    array parameter), SQLite in chunks of IN lists."""
    if not hashes:
        return set()
    if db.get_bind().dialect.name == "postgresql":
        rows = db.execute(
            text("SELECT row_hash FROM isuo_records WHERE row_hash = ANY(CAST(:h AS text[]))"), {"h": hashes}
        )
        return {h for (h,) in rows}
    found: set[str] = set()
    for i in range(0, len(hashes), HASH_CHUNK):
        found.update(
            db.scalars(select(IsuoRecord.row_hash).where(IsuoRecord.row_hash.in_(hashes[i : i + HASH_CHUNK])))
        )
    return found


def import_file(
    db: Session,
    *,
    source: IsuoSource,
    data: bytes,
    file_name: str,
    actor: str,
    run_checks: bool = True,
    now: datetime | None = None,
) -> ImportResult:
    """Import one export (see the module docstring).  Never commits; raises ImportRejected."""
    rows = parse_rows(data, file_name, source.mapping)
    if not rows:
        raise ImportRejected(
            [
                RowProblem(
                    1,
                    N_("The file has a header but no records."),
                    N_("Export a period in which ISUO was used."),
                )
            ],
            1,
        )
    unique: dict[str, ParsedRow] = {}
    for row in rows:
        unique.setdefault(row.row_hash, row)
    hashes = list(unique)
    existing = stored_hashes(db, hashes)
    new = [unique[h] for h in hashes if h not in existing]
    first_at, last_at = min(r.at for r in rows), max(r.at for r in rows)
    record = IsuoImport(
        source_id=source.id,
        file_name=PurePath(file_name).name[:200] or "upload",
        file_sha256=hashlib.sha256(data).hexdigest(),
        rows_total=len(rows),
        rows_new=len(new),
        first_at=first_at,
        last_at=last_at,
        actor=actor,
        imported_at=datetime.now(UTC),
    )
    db.add(record)
    db.flush()
    plan = {a.ip: (a.seat, a.agent_id) for a in db.scalars(select(IsuoAddress))}
    sessions = ProxySessions(db, since=first_at, until=last_at) if new else None
    out = []
    matched = 0
    for row in new:
        seat, agent_id = plan.get(row.ip, (None, None)) if row.ip else (None, None)
        proxy_id = None
        if agent_id is not None:
            proxy_id = sessions.at_agent(agent_id, row.at)
        elif seat is None:
            only = sessions.only_one_at(row.at)
            if only is not None:
                proxy_id, seat, agent_id = only
        matched += seat is not None
        out.append(
            (
                row.row_hash,
                record.id,
                row.login,
                row.at,
                row.action,
                row.ip,
                row.record_type,
                seat,
                agent_id,
                proxy_id,
            )
        )
    insert_rows(
        db.connection(),
        IsuoRecord.__table__,
        (
            "row_hash",
            "import_id",
            "login",
            "at",
            "action",
            "ip",
            "record_type",
            "seat",
            "agent_id",
            "proxy_access_id",
        ),
        out,
    )
    audit(
        db,
        actor=actor,
        action="isuo.imported",
        target=f"isuo_import:{record.id}",
        detail={
            "source": source.name,
            "file": record.file_name,
            "sha256": record.file_sha256,
            "rows": len(rows),
            "new": len(new),
        },
    )
    result = ImportResult(record.id, len(rows), len(new), len(rows) - len(new), matched)
    if run_checks and new:
        from policy_server.isuo import checks

        accesses = sorted(
            (
                Access(
                    key=f"rec:{o[0][:16]}",
                    at=o[3],
                    login=o[2],
                    seat=o[7],
                    agent_id=o[8],
                    action=o[4],
                    proxy_linked=o[9] is not None,
                )
                for o in out
            ),
            key=lambda a: a.at,
        )
        result.incidents = len(checks.check_new_accesses(db, accesses))
    return result
