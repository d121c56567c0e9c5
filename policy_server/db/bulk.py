"""Many-row INSERTs through the database driver, for the ingest hot path.

SQLAlchemy builds every row of an `executemany` through its compiler and per-column type
processors; psycopg then adapts each row as its own pipelined statement.  At hundreds of
rows per batch that cost more than the database's own work.  `insert_rows` sends the rows
the cheap way for each backend, inside the caller's transaction (the session's connection):

* **PostgreSQL**: one statement, `INSERT … SELECT … FROM unnest(col1[], col2[], …)`, the
  columns travelling as binary arrays (no per-value quoting), the query text constant so
  psycopg prepares it once per connection.  Optional `ON CONFLICT (…) DO NOTHING` and
  `RETURNING`.
* **SQLite**: `cursor.executemany` of one prepared `INSERT`; times converted with
  SQLAlchemy's own SQLite format so the ORM reads them back unchanged.

Values are given as Python values: aware datetimes, dicts/lists for JSON columns (or JSON
text already made, as `Json(text)`), strings, ints, bools, None (SQL NULL, also in a JSON
column, where SQLAlchemy would store the JSON text `null`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import JSON, Boolean, Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

from policy_server.db.models import UtcDateTime

ANY_CONFLICT = ("*",)  # `on_conflict_do_nothing=ANY_CONFLICT`: `ON CONFLICT DO NOTHING`, no target


@dataclass(frozen=True, slots=True)
class Json:
    """JSON text that is already serialized: stored as is."""

    text: str


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Json):
        return value.text
    return orjson.dumps(value).decode()


def _is_json(column) -> bool:
    return isinstance(column.type, JSON)  # JsonType (JSON, JSONB on PostgreSQL) included


@cache
def _postgres_sql(table: Table, columns: tuple[str, ...], on_conflict: tuple[str, ...] | None,
                  returning: tuple[str, ...] | None,
                  constants: tuple[str, ...] = ()) -> tuple[str, tuple[bool, ...]]:
    dialect = postgresql.psycopg.dialect()
    arrays, selects, is_json = [], [], []
    for i, name in enumerate(columns):
        column = table.c[name]
        json_column = _is_json(column)
        sql_type = "text" if json_column else column.type.compile(dialect=dialect)
        arrays.append(f"%(c{i})b::{sql_type}[]")
        selects.append(f"u.c{i}::jsonb" if json_column else f"u.c{i}")
        is_json.append(json_column)
    for i, name in enumerate(constants):  # one value for every row: a plain parameter, not an array
        column = table.c[name]
        cast = "jsonb" if _is_json(column) else column.type.compile(dialect=dialect)
        selects.append(f"%(k{i})s::{cast}")
    names = ", ".join(f"c{i}" for i in range(len(columns)))
    sql = (f"INSERT INTO {table.name} ({', '.join((*columns, *constants))}) SELECT {', '.join(selects)} "
           f"FROM unnest({', '.join(arrays)}) AS u({names})")
    if on_conflict == ANY_CONFLICT:  # whichever unique index the row hits (a partitioned table's)
        sql += " ON CONFLICT DO NOTHING"
    elif on_conflict:
        sql += f" ON CONFLICT ({', '.join(on_conflict)}) DO NOTHING"
    if returning:
        sql += f" RETURNING {', '.join(returning)}"
    return sql, tuple(is_json)


def sqlite_utc_text(value: datetime | None) -> str | None:
    """An aware time as SQLAlchemy stores a `UtcDateTime` in SQLite ("2025-01-01 08:00:00.000000")."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the database; use datetime.now(UTC)")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


Converter = Callable[[Any], Any] | None  # None: the value goes to SQLite as it is


@cache
def _sqlite_sql(table: Table, columns: tuple[str, ...]) -> tuple[str, tuple[Converter, ...]]:
    dialect = sqlite.dialect()
    converters: list[Converter] = []
    for name in columns:
        column = table.c[name]
        if _is_json(column):
            converters.append(_json_text)
        elif isinstance(column.type, UtcDateTime):
            converters.append(sqlite_utc_text)
        elif isinstance(column.type, Boolean):
            converters.append(lambda v: None if v is None else int(bool(v)))
        else:
            converters.append(column.type.dialect_impl(dialect).bind_processor(dialect))
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})", tuple(converters)


def _sqlite_params(converters: Sequence[Converter], rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    todo = [(i, convert) for i, convert in enumerate(converters) if convert is not None]
    out = []
    for row in rows:
        row = list(row)
        for i, convert in todo:
            row[i] = convert(row[i])
        out.append(row)
    return out


def insert_rows(connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                *, on_conflict_do_nothing: Sequence[str] | None = None,
                returning: Sequence[str] | None = None,
                constants: dict[str, Any] | None = None) -> list[tuple]:
    """Insert `rows` (tuples in `columns` order); returns the RETURNING rows (PostgreSQL only).

    `constants` are columns with the same value in every row (e.g. the agent of a batch): on
    PostgreSQL they travel once, not as an array of copies.

    On SQLite `on_conflict_do_nothing` and `returning` are refused: the caller decides what is
    new before inserting (see events/store.py), so a conflict there is an error, not silence.
    """
    if not rows:
        return []
    columns = tuple(columns)
    constants = constants or {}
    raw = connection.connection.dbapi_connection
    if connection.dialect.name == "postgresql":
        sql, is_json = _postgres_sql(table, columns, tuple(on_conflict_do_nothing or ()) or None,
                                     tuple(returning or ()) or None, tuple(constants))
        params = _postgres_column_params(rows, is_json)
        for i, value in enumerate(constants.values()):
            params[f"k{i}"] = _json_text(value) if _is_json(table.c[list(constants)[i]]) else value
        with raw.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if returning else []
    if on_conflict_do_nothing or returning:
        raise ValueError("insert_rows on SQLite takes no on_conflict_do_nothing/returning")
    if constants:
        columns = (*columns, *constants)
        same = tuple(constants.values())
        rows = [(*row, *same) for row in rows]
    sql, converters = _sqlite_sql(table, columns)
    cursor = raw.cursor()
    try:
        cursor.executemany(sql, _sqlite_params(converters, rows))
    finally:
        cursor.close()
    return []


@cache
def _postgres_update_sql(table: Table, key: str, columns: tuple[str, ...]) -> tuple[str, tuple[bool, ...]]:
    dialect = postgresql.psycopg.dialect()
    names = (key, *columns)
    arrays, is_json = [], []
    for i, name in enumerate(names):
        column = table.c[name]
        json_column = _is_json(column)
        arrays.append(f"%(c{i})b::{'text' if json_column else column.type.compile(dialect=dialect)}[]")
        is_json.append(json_column)
    sets = ", ".join(f"{name} = u.c{i + 1}{'::jsonb' if is_json[i + 1] else ''}"
                     for i, name in enumerate(columns))
    aliases = ", ".join(f"c{i}" for i in range(len(names)))
    sql = (f"UPDATE {table.name} SET {sets} FROM unnest({', '.join(arrays)}) AS u({aliases}) "
           f"WHERE {table.name}.{key} = u.c0")
    return sql, tuple(is_json)


def update_rows(connection: Connection, table: Table, key: str, columns: Sequence[str],
                rows: Sequence[Sequence[Any]]) -> None:
    """Update many rows by `key`: each row is (key value, *new values in `columns` order)."""
    if not rows:
        return
    columns = tuple(columns)
    raw = connection.connection.dbapi_connection
    if connection.dialect.name == "postgresql":
        sql, is_json = _postgres_update_sql(table, key, columns)
        params = _postgres_column_params(rows, is_json)
        with raw.cursor() as cursor:
            cursor.execute(sql, params)
        return
    _, converters = _sqlite_sql(table, (key, *columns))
    sql = f"UPDATE {table.name} SET {', '.join(f'{c} = ?' for c in columns)} WHERE {key} = ?"
    cursor = raw.cursor()
    try:
        # The key goes last here: `SET … WHERE key = ?`.
        cursor.executemany(sql, _sqlite_params((*converters[1:], converters[0]),
                                               [(*row[1:], row[0]) for row in rows]))
    finally:
        cursor.close()


def _postgres_column_params(rows, is_json) -> dict[str, list]:
    """One array parameter per column (`c0`, `c1`, …) for the unnest() statements; JSON
    columns as text, which PostgreSQL casts back."""
    params = {}
    for i, json_column in enumerate(is_json):
        values = [row[i] for row in rows]
        params[f"c{i}"] = [_json_text(v) for v in values] if json_column else values
    return params
