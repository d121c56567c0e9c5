"""The export reader, pure (no database): encodings, delimiters, time formats, row hashes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from policy_server.isuo import imports

MAPPING = {"login": "login", "time": "time", "ip": "ip"}
BISHKEK = timezone(timedelta(hours=6))

logins = st.text(alphabet="abcdefgh.123", min_size=2, max_size=8)
times = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1)).map(
    lambda d: d.replace(microsecond=0)
)
ips = st.sampled_from(["", "10.35.1.7", "10.35.1.9", "192.168.0.10"])


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(logins, times, ips), min_size=1, max_size=30),
    delimiter=st.sampled_from([",", ";", "\t"]),
    encoding=st.sampled_from(["utf-8", "cp1251", "utf-8-sig"]),
    fmt=st.sampled_from(["%Y-%m-%d %H:%M:%S", "%d.%m.%Y %H:%M:%S", "%d/%m/%Y %H:%M:%S"]),
)
def test_every_valid_row_is_read_and_equal_rows_hash_equal(rows, delimiter, encoding, fmt):
    lines = [delimiter.join(["login", "time", "ip"])]
    lines += [delimiter.join([login, at.strftime(fmt), ip]) for login, at, ip in rows]
    parsed = imports.parse_rows(("\r\n".join(lines) + "\r\n").encode(encoding), "e.csv", MAPPING)
    assert [(p.login, p.at, p.ip or "") for p in parsed] == [
        (login.lower(), at.replace(tzinfo=BISHKEK).astimezone(UTC), ip) for login, at, ip in rows
    ]
    assert [p.line for p in parsed] == list(range(2, len(rows) + 2))
    assert len({p.row_hash for p in parsed}) == len({(login.lower(), at, ip) for login, at, ip in rows})


def test_time_forms():
    utc = datetime(2026, 9, 1, 2, 30, tzinfo=UTC)  # 08:30 in Bishkek
    for text in (
        "2026-09-01 08:30:00",
        "2026-09-01 08:30",
        "01.09.2026 08:30",
        "01/09/2026 08:30:00",
        "2026-09-01T08:30:00+06:00",
        "2026-09-01T02:30:00Z",
        datetime(2026, 9, 1, 8, 30),
    ):
        assert imports.parse_time(text) == utc, text
    for bad in ("", "yesterday", "2026-13-01 08:00", "32.01.2026 08:00", None):
        assert imports.parse_time(bad) is None, bad


def test_short_rows_and_blank_lines_are_handled():
    data = b"login;time;ip\n\na.b;2026-09-01 08:30\n;;\n"
    (row,) = imports.parse_rows(data, "e.csv", MAPPING)
    assert row.ip is None and row.line == 3
