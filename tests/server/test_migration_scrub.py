"""Revisions 0105 (incidents stored before the personal-data change: titles, params and dedup
keys re-derived the new way, the OS user moved to its column) and 0106 (the auto-close
resolution as a code): a database seeded the old way, then `upgrade heads` (SQLite and
PostgreSQL)."""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from policy_server.db.migrate import alembic_config, upgrade
from policy_server.db.session import make_engine
from policy_server.rules import RuleInput, evaluate, load_all_rules

AGENT = "0f0e0d0c-0000-4000-8000-000000000001"
T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
STUDENT = "student7"
URL = "http://bad.example/some/page/?q=student7"


def _old_incident(incident_id: int, rule: str, title: str, params: dict, key: str, *,
                  os_user: str | None = STUDENT, resolution: str | None = None) -> dict:
    return {"id": incident_id, "rule": rule, "title": title, "params": json.dumps(params),
            "severity": "medium", "clauses": "[]", "dedup_key": key, "status": "new" if not resolution
            else "resolved", "agent_id": AGENT, "seat": "s-1", "os_user": os_user, "first_seen_at": T0,
            "last_seen_at": T0, "window_ends_at": T0 + timedelta(hours=1), "event_count": 1,
            "resolution": resolution, "created_at": T0}


OLD = [
    _old_incident(1, "web.report", f"Bad page reported: {URL}",
                  {"url": URL, "host": "bad.example", "comment": "student7 found it"},
                  "web.report:bad.example/some/page"),
    _old_incident(2, "net.bypass", "Filter bypass attempt (vpn) by student7",
                  {"kind": "vpn", "dst_ip": "10.0.0.9", "dst_port": 1194, "detail": "", "occurrences": 1,
                   "seat": "s-1", "os_user": STUDENT},
                  f"net.bypass:{AGENT}:{STUDENT}:vpn", os_user=None),
    _old_incident(3, "web.blocked", "Blocked pages requested at s-1",
                  {"host": "bad.example", "categories": ["adult"], "group": None},
                  f"web.blocked:{AGENT}:{STUDENT}"),
    _old_incident(4, "av.threat", "Malware Eicar found on s-1",
                  {"seat": "s-1", "os_user": STUDENT, "path": "/home/student7/Downloads/x.exe",
                   "signature": "Eicar", "source": "full", "quarantined": True},
                  f"av.threat:{AGENT}:/home/student7/Downloads/x.exe"),
    _old_incident(5, "integrity.changed", "Unauthorised change (modified) of /home/student7/.bashrc on s-1",
                  {"path": "/home/student7/.bashrc", "change": "modified"}, f"integrity.changed:{AGENT}:x"),
    _old_incident(6, "web.unblock_request", "Request to unblock bad.example",
                  {"url": URL, "host": "bad.example", "categories": [], "comment": "please, student7"},
                  "web.unblock_request:bad.example"),
    _old_incident(7, "agent.collector_failed", "usb not working on pc-1", {"failed": ["usb"]},
                  f"agent.collector_failed:{AGENT}", os_user=None,
                  resolution="The condition cleared by itself: the agent reported at 2026-11-02 12:30 UTC "
                             "that it is gone."),
]


def _rule_now(event_type: str, data: dict, os_user: str | None = STUDENT):
    """What today's rules make of the same event."""
    load_all_rules()
    (draft,) = evaluate(RuleInput(event_id="e", type=event_type, agent_id=AGENT, occurred_at=T0, data=data,
                                  os_user=os_user, seat="s-1", hostname="pc-1"))
    return draft


@pytest.fixture
def migrated(db_url):
    engine = make_engine(db_url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0104_incidents_by_agent")  # the incidents as they were
        conn.execute(sa.text(
            "INSERT INTO workstations (id, hostname, seat, token_hash, token_revoked, os, agent_version, "
            "protocol_version, enrolled_at, health) VALUES (:id, 'pc-1', 's-1', 'x', false, 'linux', '1', 1, "
            ":at, '{}')"), {"id": AGENT, "at": T0})
        columns = list(OLD[0])
        conn.execute(sa.text(f"INSERT INTO incidents ({', '.join(columns)}) VALUES "
                             f"({', '.join(':' + c for c in columns)})"), OLD)
    upgrade(engine)  # heads: 0105 and 0106 among them
    with engine.connect() as conn:
        rows = {r["id"]: dict(r) for r in conn.execute(sa.text("SELECT * FROM incidents")).mappings()}
    for row in rows.values():
        for column in ("params", "resolution_params"):
            if isinstance(row[column], str):
                row[column] = json.loads(row[column])
    yield rows
    engine.dispose()


def test_no_student_name_or_url_is_left_in_titles_params_or_keys(migrated):
    for row in migrated.values():
        stored = json.dumps([row["title"], row["params"], row["dedup_key"]], ensure_ascii=False)
        assert STUDENT not in stored and "/some/page" not in stored, stored


def test_titles_and_keys_are_what_the_rules_make_now(migrated):
    report = _rule_now("web.report", {"url": "http://bad.example/some/page"})
    assert (migrated[1]["title"], migrated[1]["dedup_key"]) == (report.title, report.dedup_key)
    assert migrated[1]["params"] == report.params == {"host": "bad.example"}
    bypass = _rule_now("net.bypass", {"kind": "vpn", "dst_ip": "10.0.0.9", "dst_port": 1194})
    assert (migrated[2]["title"], migrated[2]["dedup_key"]) == (bypass.title, bypass.dedup_key)
    blocked = _rule_now("web.blocked", {"url": "http://bad.example/x", "categories": ["adult"]})
    assert migrated[3]["dedup_key"] == blocked.dedup_key
    threat = _rule_now("av.threat", {"path": "/home/student7/Downloads/x.exe", "signature": "Eicar",
                                     "quarantined": True})
    assert migrated[4]["dedup_key"] == threat.dedup_key
    assert migrated[4]["params"]["path"] == threat.params["path"] == "/home/…/Downloads/x.exe"
    assert migrated[5]["title"] == "Unauthorised change (modified) of /home/…/.bashrc on s-1"
    assert migrated[6]["params"] == {"host": "bad.example", "categories": []}


def test_the_os_user_moves_to_its_column_where_the_readers_view_takes_it(migrated):
    assert migrated[2]["os_user"] == STUDENT  # it was only in the params
    assert migrated[1]["os_user"] == STUDENT and "os_user" not in migrated[4]["params"]


def test_the_english_auto_close_text_becomes_a_code(migrated):
    row = migrated[7]
    assert row["resolution"] is None and row["resolution_code"] == "condition_cleared"
    assert row["resolution_params"] == {"cleared_at": "2026-11-02T12:30:00+00:00"}


def test_scrubbing_again_changes_nothing(migrated):
    scrub = importlib.import_module("policy_server.migrations.versions.0105_incidents_scrub_pii").scrub
    for row in migrated.values():
        again = scrub(row, "pc-1")
        assert again == {k: row[k] for k in ("title", "params", "dedup_key", "os_user")}
