"""District level on its own: suppression rules, signatures, idempotent weeks (SQLite and
PostgreSQL), and the Monday job of a school."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from policy_server.district import service, signing
from policy_server.district.models import DistrictWeek
from policy_server.errors import KalkanError
from policy_server.summaries import service as summaries
from policy_server.summaries.models import WeeklyReport
from tests.reports.builders import district_week, enrol_school, send_week
from tests.reports.seed import seed


def test_small_counts_are_hidden_with_a_complementary_cell():
    cells = service.suppress({"A": 25, "B": 4, "C": 40, "D": 12}, threshold=10, total_shown=True)
    hidden = {k for k, c in cells.items() if c.suppressed}
    assert hidden == {"B", "D"}  # B below 10; D, the next smallest, so the total cannot give B back
    assert cells["B"].value is None and cells["D"].value is None and cells["A"].value == 25
    cells = service.suppress({"A": 25, "B": 4, "C": 3}, threshold=10, total_shown=True)
    assert {k for k, c in cells.items() if c.suppressed} == {"B", "C"}  # two hidden: enough
    cells = service.suppress({"A": 0, "B": 12}, threshold=10, total_shown=False)
    assert not any(c.suppressed for c in cells.values())  # zero reveals nobody; no total shown


def test_weeks_are_signed_stored_once_and_pictured_without_revealing_a_school(api):
    with api.db() as db:
        a, b = enrol_school(db, "School A"), enrol_school(db, "School B")
        assert send_week(db, *a, "2026-W48", district_week(80, 3, 40)) == "accepted"
        assert send_week(db, *a, "2026-W48", district_week(80, 3, 40)) == "duplicate"
        with pytest.raises(KalkanError, match="signature"):
            forged = district_week(90, 1, 1)  # B's week signed with A's key
            service.receive(db, school_id=b[0], period="2026-W48", aggregates=forged,
                            signature=signing.sign(a[1], signing.canonical(b[0], "2026-W48", forged)))
        assert send_week(db, *b, "2026-W48", district_week(90, 12, 7)) == "accepted"
        db.commit()
        assert db.query(DistrictWeek).count() == 2
        pic = service.picture(db)
        assert pic.period == "2026-W48" and [s["name"] for s in pic.schools] == ["School A", "School B"]
        assert pic.counts["School A"]["incidents"].suppressed and pic.counts["School B"]["blocked"].suppressed
        assert pic.counts["School B"]["incidents"].value == 12
        assert all(t.suppressed for t in pic.totals.values())  # 2 schools < 3: no district figure
        assert pic.trend == [{"period": "2026-W48", "schools": 2, "score": None}]
        c = enrol_school(db, "School C")
        send_week(db, *c, "2026-W48", district_week(70, 20, 50))
        pic = service.picture(db)
        assert pic.totals["blocked"].value == 97 and pic.trend[0]["score"] == 80
        with pytest.raises(KalkanError, match="code"):
            service.enroll(db, code="WRONG-CODE1", public_key=signing.new_key()[1])


def test_the_monday_job_makes_last_week_once(api):
    seed(api)
    monday = datetime(2026, 11, 30, 2, 30, tzinfo=UTC)  # 08:30 in Bishkek
    with api.db() as db:
        assert summaries.weekly_job(db, monday) == "2026-W48"
        assert summaries.weekly_job(db, monday.replace(hour=3)) is None
        rows = db.query(WeeklyReport).all()
        assert [(r.period, r.summary["score"]) for r in rows] == [("2026-W48", 75)]
    jobs = [job.name for job in api.app.state.checks.jobs]
    assert "summaries.weekly" in jobs


def test_the_weekly_summary_reaches_a_local_smtp_server_as_pdf(api, monkeypatch):
    from aiosmtpd.controller import Controller

    from tests.support.server import free_port

    class Inbox:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
            self.messages.append(envelope)
            return "250 OK"

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        monkeypatch.setenv("KALKAN_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("KALKAN_SMTP_PORT", str(port))
        monkeypatch.setenv("KALKAN_SMTP_FROM", "kalkan@school.example")
        monkeypatch.setenv("KALKAN_REPORT_TO", "director@school.example, it@school.example")
        seed(api)
        with api.db() as db:
            assert summaries.weekly_job(db, datetime(2026, 11, 30, 2, 30, tzinfo=UTC)) == "2026-W48"
            summaries.weekly_job(db, datetime(2026, 11, 30, 3, 30, tzinfo=UTC))  # mailed once only
            assert db.query(WeeklyReport).one().mailed_at is not None
    finally:
        controller.stop()
    assert len(inbox.messages) == 1
    envelope = inbox.messages[0]
    assert envelope.rcpt_tos == ["director@school.example", "it@school.example"]
    import email
    from email import policy

    message = email.message_from_bytes(envelope.content, policy=policy.default)
    assert "2026-W48" in message["Subject"] and "Test School" in message["Subject"]
    pdfs = [p for p in message.iter_attachments() if p.get_content_type() == "application/pdf"]
    assert len(pdfs) == 1 and pdfs[0].get_content().startswith(b"%PDF")


def test_a_server_that_was_off_on_monday_makes_the_week_on_tuesday(api):
    seed(api)
    tuesday = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)  # the server was off all Monday
    with api.db() as db:
        assert summaries.weekly_job(db, tuesday) == "2026-W48"
        assert summaries.weekly_job(db, datetime(2026, 12, 6, 4, 0, tzinfo=UTC)) is None  # Sunday: still W48
        assert [r.period for r in db.query(WeeklyReport).all()] == ["2026-W48"]
