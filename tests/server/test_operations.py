"""Operations from the command line: backup and its check (000 §3.2), retention of the records
of minors' internet use (001 §2.15) with its audit record (004 §3.6).  SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from policy_server import protocol
from policy_server.cli import main
from policy_server.db.models import AuditRecord, Event, Incident, IncidentEvent, IncidentStatus, TimelineEntry
from policy_server.db.session import make_engine, make_sessionmaker
from policy_server.scope import Viewer

NOW = datetime.now(UTC)


def cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def report(i: int) -> protocol.EventEnvelope:
    return protocol.make_event("web.report", {"url": f"http://bad{i}.example/"})


def count(url: str, model=Event) -> int:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as db:
            return db.scalar(select(func.count()).select_from(model))
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- backup


def backup_args(db_url: str, tmp_path: Path) -> tuple[str, ...]:
    return ("backup", "--db", db_url, "--state-dir", str(tmp_path / "state"))


def _restore(backup: Path, db_url: str, postgres_cluster) -> str:
    """A database made from the backup alone; its URL."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{backup}"
    target = postgres_cluster.create_database()
    libpq = make_url(target).set(drivername="postgresql").render_as_string(hide_password=False)
    subprocess.run([str(postgres_cluster.bin / "pg_restore"), "--no-owner", "--dbname", libpq, str(backup)],
                   check=True, capture_output=True)
    return target


def test_backup_is_complete_restorable_and_audited(api, db_url, tmp_path, capsys, request):
    _, auth = api.enroll()
    api.post(auth, *[report(i) for i in range(7)])
    out = tmp_path / "kalkan-backup"
    code, text = cli(capsys, *backup_args(db_url, tmp_path), "--out", str(out))
    assert code == 0, text
    assert "backup written and checked" in text and out.is_file()
    assert not list(tmp_path.glob(".kalkan-backup.partial"))
    if db_url.startswith("sqlite"):
        assert "events: 7" in text
    code, text = cli(capsys, "check-backup", str(out))
    assert code == 0 and "backup OK" in text, text
    cluster = request.getfixturevalue("postgres_cluster") if not db_url.startswith("sqlite") else None
    restored = _restore(out, db_url, cluster)
    assert count(restored) == 7 and count(restored, Incident) == 7
    with api.db() as db:
        (record,) = db.scalars(select(AuditRecord).where(AuditRecord.action == "backup.created"))
        assert record.target == str(out) and record.detail["bytes"] == out.stat().st_size
    # A second backup to the same name is refused, the first left as it was.
    size = out.stat().st_size
    code, text = cli(capsys, *backup_args(db_url, tmp_path), "--out", str(out))
    assert code == 2 and "already exists" in text and out.stat().st_size == size


def test_damaged_or_foreign_backup_is_refused(api, db_url, tmp_path, capsys):
    _, auth = api.enroll()
    api.post(auth, *[report(i) for i in range(300)])
    out = tmp_path / "b"
    assert cli(capsys, *backup_args(db_url, tmp_path), "--out", str(out))[0] == 0
    damaged = tmp_path / "damaged"
    data = out.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])
    code, text = cli(capsys, "check-backup", str(damaged))
    assert code == 2 and "damaged" in text, text
    foreign = tmp_path / "notes.txt"
    foreign.write_text("hello")
    code, text = cli(capsys, "check-backup", str(foreign))
    assert code == 2 and "not a Kalkan backup" in text
    code, text = cli(capsys, "check-backup", str(tmp_path / "missing"))
    assert code == 2 and "is not a file" in text


# ----------------------------------------------------------------------------- retention


def blocked(at: datetime, os_user: str) -> protocol.EventEnvelope:
    return protocol.make_event("web.blocked", {"url": "http://x.example/", "host": "x.example"},
                               subject=protocol.Subject(os_user=os_user), occurred_at=at)


def usage(at: datetime) -> protocol.EventEnvelope:
    return protocol.make_event("web.usage", {"period_start": at.isoformat(), "period_end": at.isoformat(),
                                             "counts": {"edu.kg": 3}}, occurred_at=at)


def test_retention_removes_old_browsing_events_keeps_open_evidence_and_audits(api, db_url, tmp_path, capsys):
    _, auth = api.enroll()
    old = NOW - timedelta(days=100)
    resolved_attempts = [blocked(old + timedelta(seconds=i), "st1") for i in range(5)]
    open_attempts = [blocked(old + timedelta(seconds=i), "st2") for i in range(5)]
    old_usage = [usage(old + timedelta(minutes=i)) for i in range(3)]
    recent_usage = [usage(NOW - timedelta(days=10)) for _ in range(2)]
    old_report = protocol.make_event("web.report", {"url": "http://r.example/"}, occurred_at=old)
    api.post(auth, *resolved_attempts, *open_attempts, *old_usage, *recent_usage, old_report)
    from policy_server.incidents.service import resolve

    with api.db() as db:
        first, second = db.scalars(
            select(Incident).where(Incident.rule == "web.blocked").order_by(Incident.id))
        assert (first.os_user, second.os_user) == ("st1", "st2")
        resolve(db, incident_id=first.id, viewer=Viewer.system(), reason="talked to the student")
        db.commit()
        resolved_id, open_id = first.id, second.id
    args = ("retention", "--db", db_url, "--state-dir", str(tmp_path / "state"))

    code, text = cli(capsys, *args)  # dry run
    assert code == 0 and "dry run: nothing removed" in text, text
    # the old report is held by its open incident (a student's report waits for the responsible person)
    assert "web.usage: 3" in text and "web.blocked: 5" in text and "open incident holds them: 6" in text
    assert count(db_url) == 16

    code, text = cli(capsys, *args, "--apply")
    assert code == 0 and "removed 8 events" in text, text
    with api.db() as db:
        remaining = set(db.scalars(select(Event.id)))
        assert remaining == {str(e.id) for e in [*open_attempts, *recent_usage, old_report]}
        assert db.scalar(select(func.count()).select_from(Incident)) == 3  # incidents are never deleted
        assert set(db.scalars(select(IncidentEvent.incident_id))) == {open_id, *_report_incident(db)}
        resolved = db.get(Incident, resolved_id)
        assert resolved.event_count == 5  # the incident keeps its history
        (entry,) = db.scalars(select(TimelineEntry).where(TimelineEntry.incident_id == resolved_id,
                                                          TimelineEntry.action == "events_removed"))
        assert entry.actor == "cli" and entry.detail["count"] == 5 and "001 §2.15" in entry.detail["reason"]
        (record,) = db.scalars(select(AuditRecord).where(AuditRecord.action == "retention.applied"))
        assert record.detail["removed"] == {"web.usage": 3, "web.blocked": 5}
        assert record.detail["kept_for_open_incidents"] == 6 and record.detail["days"] == 90

    code, text = cli(capsys, *args, "--apply")  # nothing left to remove: still audited
    assert code == 0 and "removed 0 events" in text
    assert count(db_url) == 8


def test_the_server_applies_retention_itself_once_a_day(api, monkeypatch):
    """Without any cron line: the server's job `retention.browsing` (run daily by the checks'
    leader) removes the browsing records past their days with the same audit record (by
    "server"); a day with nothing to remove writes nothing; `KALKAN_RETENTION_INTERVAL_S=0` turns
    it off (by hand or cron only, as before); a wrong `KALKAN_RETENTION_DAYS` stops the start
    with the fix instead of keeping records longer unseen."""
    from policy_server.db.retention import retention_jobs
    from policy_server.errors import KalkanError
    from policy_server.settings import Settings

    job = {j.name: j for j in api.app.state.checks.jobs}["retention.browsing"]
    assert job.interval_s == 86400
    _, auth = api.enroll()
    old = NOW - timedelta(days=100)
    api.post(auth, *[usage(old + timedelta(minutes=i)) for i in range(3)], usage(NOW - timedelta(days=2)))
    with api.db() as db:
        assert job.run(db, NOW) == 3
    with api.db() as db:
        assert db.scalar(select(func.count()).select_from(Event).where(Event.type == "web.usage")) == 1
        (record,) = db.scalars(select(AuditRecord).where(AuditRecord.action == "retention.applied"))
        assert record.actor == "server" and record.detail["removed"] == {"web.usage": 3}
        assert job.run(db, NOW) == 0  # the next day: nothing to remove…
        assert db.scalar(select(func.count()).select_from(AuditRecord)
                         .where(AuditRecord.action == "retention.applied")) == 1  # …and nothing written
    assert retention_jobs(Settings(state_dir=api.app.state.settings.state_dir, retention_interval_s=0)) == []
    monkeypatch.setenv("KALKAN_RETENTION_DAYS", "ninety")
    try:
        retention_jobs(api.app.state.settings)
    except KalkanError as exc:
        assert "KALKAN_RETENTION_DAYS" in str(exc)
    else:
        raise AssertionError("a wrong KALKAN_RETENTION_DAYS was taken")


def test_retention_covers_every_record_of_internet_use_and_the_queue_copies(api, db_url, tmp_path, capsys):
    """Search queries (`web.alert`), unblock requests and reports (URL + the student's words) and
    proxy-bypass attempts (destination per user) are records of a child's internet use like the
    browsing events: past the days they go, with the report queue's per-report copies and the
    seats and comments of the queue items decided back then.  What an open incident holds stays;
    security and fleet events stay whatever their age; an undecided queue item stays whole."""
    from policy_server.filtering.models import FilterRequest, FilterRequestEvent
    from policy_server.incidents.service import resolve

    _, auth = api.enroll()
    old, recent = NOW - timedelta(days=100), NOW - timedelta(days=10)
    st1, st2 = protocol.Subject(os_user="st1", seat="seat-1"), protocol.Subject(os_user="st2", seat="seat-1")

    def alert(at, who):
        return protocol.make_event("web.alert", {"url": "https://search.example/?q=how+to+hurt",
                                                 "engine": "search.example", "query": "how to hurt",
                                                 "score": 90, "threshold": 50, "lists": ["self-harm"]},
                                   subject=who, occurred_at=at)

    def unblock(at, url):
        return protocol.make_event("web.unblock_request",
                                   {"url": url, "comment": "for my homework, Aibek 7a"},
                                   subject=st1, occurred_at=at)

    def bypass(at):
        return protocol.make_event("net.bypass", {"kind": "vpn", "dst_ip": "198.51.100.7", "dst_port": 1194},
                                   subject=st1, occurred_at=at)

    gone = [alert(old, st1), unblock(old, "http://games.example/"), bypass(old),
            protocol.make_event("web.report", {"url": "http://scary.example/", "comment": "scary, Aibek"},
                                subject=st1, occurred_at=old)]
    held = alert(old + timedelta(hours=1), st2)  # its incident stays open
    fresh = [alert(recent, st1), unblock(recent, "http://maps.example/"), bypass(recent)]
    security = [protocol.make_event("agent.heartbeat", {"agent_version": "1.0"}, occurred_at=old),
                protocol.make_event("usb.blocked", {"device": {"vendor_id": "0781", "product_id": "5567"}},
                                    subject=st1, occurred_at=old),
                protocol.make_event("isuo.session", {"host": "emis.edu.gov.kg", "state": "start",
                                                     "started_at": old.isoformat()}, occurred_at=old)]
    api.post(auth, *gone, held, *fresh, *security)
    with api.db() as db:
        from policy_server.filtering import queue

        queue.fold_all(db)
        games = db.scalar(select(FilterRequest).where(FilterRequest.url.like("%games.example%")))
        games.status, games.reason, games.decided_by = "rejected", "not for lessons", "admin"
        games.decided_at = old + timedelta(days=2)  # decided back then
        held_incident = db.scalar(select(IncidentEvent.incident_id)
                                  .where(IncidentEvent.event_id == str(held.id)))
        for incident in db.scalars(select(Incident).where(Incident.id != held_incident)):
            resolve(db, incident_id=incident.id, viewer=Viewer.system(), reason="talked to the student")
        db.commit()
    args = ("retention", "--db", db_url, "--state-dir", str(tmp_path / "state"))

    code, text = cli(capsys, *args)  # dry run: counts per type
    assert code == 0 and "dry run: nothing removed" in text, text
    for line in ("web.alert: 1", "web.unblock_request: 1", "web.report: 1", "net.bypass: 1", "web.usage: 0",
                 "open incident holds them: 1", "copies of reports removed: 2",
                 "decided items losing seats and comments: 1"):
        assert f"{line}" in text, (line, text)
    assert count(db_url) == 11

    code, text = cli(capsys, *args, "--apply")
    assert code == 0 and "removed 4 events" in text, text
    with api.db() as db:
        assert set(db.scalars(select(Event.id))) == {str(e.id) for e in [held, *fresh, *security]}
        (record,) = db.scalars(select(AuditRecord).where(AuditRecord.action == "retention.applied"))
        assert record.detail["removed"] == {"web.alert": 1, "web.unblock_request": 1, "web.report": 1,
                                            "net.bypass": 1}
        assert record.detail["kept_for_open_incidents"] == 1
        assert record.detail["queue_copies_removed"] == 2 and record.detail["queue_items_scrubbed"] == 1
        # the resolved incidents lost their raw events and say so; the open one keeps its event
        removed_from = set(db.scalars(select(TimelineEntry.incident_id)
                                      .where(TimelineEntry.action == "events_removed")))
        assert len(removed_from) == 4 and held_incident not in removed_from
        assert db.get(Incident, held_incident).status != IncidentStatus.resolved
        assert set(db.scalars(select(IncidentEvent.event_id)
                              .where(IncidentEvent.incident_id == held_incident))) == {str(held.id)}
        # the queue: old copies gone, the recent one stays
        assert set(db.scalars(select(FilterRequestEvent.event_id))) == {str(fresh[1].id)}
        games = db.scalar(select(FilterRequest).where(FilterRequest.url.like("%games.example%")))
        assert (games.seats, games.comments) == ([], [])  # decided back then: no child in it any more
        assert games.status == "rejected" and games.reason == "not for lessons" and games.count == 1
        scary = db.scalar(select(FilterRequest).where(FilterRequest.url.like("%scary.example%")))
        assert scary.status == "received" and scary.seats == ["seat-1"] and scary.comments == ["scary, Aibek"]
        maps = db.scalar(select(FilterRequest).where(FilterRequest.url.like("%maps.example%")))
        assert maps.comments == ["for my homework, Aibek 7a"]
    # the next run: the queue is not folded again from what is left, nothing more to remove
    code, text = cli(capsys, *args, "--apply")
    assert code == 0 and "removed 0 events" in text and "copies of reports removed: 0" in text, text
    with api.db() as db:
        from policy_server.filtering import queue

        assert queue.fold_all(db) == 0
        assert db.scalar(select(FilterRequest.count).where(FilterRequest.url.like("%maps.example%"))) == 1


def test_retention_takes_the_students_out_of_old_lesson_summaries(api, db_url, tmp_path, capsys):
    """A lesson's summary names students (seating plan) with their blocked attempts, requests,
    alerts and bans: past the days the names, seats, OS accounts and the bans' reasons go, the
    counts and sites stay, and the page says why.  A recent lesson keeps its names."""
    from policy_server.lessons.models import Lesson, LessonBan
    from policy_server.lessons.summary import PERSONAL_REMOVED
    from policy_server.school.service import find_room

    api.code()  # the school and room lab-1
    boss = api.user("admin", "boss")
    named = {"blocked": 7, "blocked_hosts": [["games.example", 7]], "by_student": {"Асан Үсөнов": 7},
             "requested": [{"who": "Асан Үсөнов", "seat": "s1", "host": "maps.example"}],
             "allowed": ["maps.example"],
             "banned": [{"seat": "s1", "os_user": "asan", "who": "Асан Үсөнов", "lifted": False}],
             "alerts": [{"who": "Бегимай", "seat": "s2", "host": "search.example", "lists": ["self-harm"]}],
             "hands": 2, "repeated": [{"who": "Асан Үсөнов", "attempts": 7}], "ended_early": False,
             "extended_min": 0}
    with api.db() as db:
        room = find_room(db, "lab-1")
        for lesson_id, days in (("oldlesson", 120), ("newlesson", 3)):
            ended = NOW - timedelta(days=days)
            db.add(Lesson(id=lesson_id, room_id=room.id, teacher_id=boss, ends_at=ended, planned_end=ended,
                          starts_at=ended - timedelta(minutes=45), summary=dict(named), summarised_at=ended))
            db.flush()
            db.add(LessonBan(id=f"ban{lesson_id[:3]}", lesson_id=lesson_id, seat="s1", os_user="asan",
                             reason="played games", lifted_at=ended))
        db.commit()
    args = ("retention", "--db", db_url, "--state-dir", str(tmp_path / "state"))
    code, text = cli(capsys, *args)
    assert code == 0 and "lesson summaries losing students' names and seats (the counts stay): 1" in text

    code, text = cli(capsys, *args, "--apply")
    assert code == 0, text
    with api.db() as db:
        old, new = db.get(Lesson, "oldlesson"), db.get(Lesson, "newlesson")
        assert new.summary == named
        summary = old.summary
        assert summary[PERSONAL_REMOVED] is True
        assert "Асан" not in str(summary) and "Бегимай" not in str(summary) and "asan" not in str(summary)
        assert summary["blocked"] == 7 and summary["blocked_hosts"] == [["games.example", 7]]
        assert summary["by_student"] == {} and summary["repeated"] == []
        assert [a["host"] for a in summary["alerts"]] == ["search.example"] and len(summary["banned"]) == 1
        old_ban, new_ban = db.get(LessonBan, "banold"), db.get(LessonBan, "bannew")
        assert (old_ban.seat, old_ban.os_user, old_ban.reason) == (None, None, "")
        assert (new_ban.seat, new_ban.os_user, new_ban.reason) == ("s1", "asan", "played games")
        (record,) = db.scalars(select(AuditRecord).where(AuditRecord.action == "retention.applied"))
        assert record.detail["lessons_depersonalised"] == 1
    api.login("boss")
    page = api.client.get("/lessons/oldlesson?lang=ru")
    assert page.status_code == 200, page.text
    assert "имена учеников и места убраны из этих итогов" in page.text and "Асан" not in page.text
    assert "search.example" in page.text and "games.example" in page.text
    assert "Асан Үсөнов" in api.client.get("/lessons/newlesson?lang=ru").text
    code, text = cli(capsys, *args, "--apply")  # done once
    assert "(the counts stay): 0" in text


def test_every_event_type_is_either_retained_or_kept_on_purpose():
    """A new event type must be placed: a record of someone's internet use (removed past the
    days, 001 §2.15) or the fleet's / security record (kept, 004 §3.6).  The browsing month
    partitions, dropped whole, hold only retained types."""
    from policy_server.db.retention import KEPT_TYPES, RETAINED_TYPES
    from policy_server.events.partitions import BROWSING_TYPES
    from policy_server.lessons.activity import LESSON_ONLY_TYPES

    assert not set(RETAINED_TYPES) & set(KEPT_TYPES)
    assert set(RETAINED_TYPES) | set(KEPT_TYPES) | LESSON_ONLY_TYPES == set(protocol.EVENT_TYPES)
    assert {"web.alert", "web.unblock_request", "net.bypass"} <= set(RETAINED_TYPES)
    assert set(BROWSING_TYPES) <= set(RETAINED_TYPES)


def _report_incident(db) -> set[int]:
    return set(db.scalars(select(Incident.id).where(Incident.rule == "web.report")))


def test_retention_days_must_be_sensible(api, db_url, tmp_path, capsys, monkeypatch):
    args = ("retention", "--db", db_url, "--state-dir", str(tmp_path / "state"))
    code, text = cli(capsys, *args, "--days", "0")
    assert code == 2 and "at least 1" in text
    monkeypatch.setenv("KALKAN_RETENTION_DAYS", "ninety")
    code, text = cli(capsys, *args)
    assert code == 2 and "KALKAN_RETENTION_DAYS" in text
    monkeypatch.setenv("KALKAN_RETENTION_DAYS", "30")
    code, text = cli(capsys, *args)
    assert code == 0 and "older than 30 days" in text


def test_backup_out_folder_must_exist(tmp_path, capsys):
    code, text = cli(capsys, "backup", "--state-dir", str(tmp_path / "s"), "--out",
                     str(tmp_path / "no-such-dir" / "b"))
    assert code == 2 and "does not exist" in text
