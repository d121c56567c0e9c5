"""Weekly summaries: made from the figures (`reports/`), kept, listed.  Plain functions.

A summary is made once per period and frozen (`WeeklyReport.summary`); nothing is deleted
or remade, so what the director signed is what stays (004 §3.6).  A period that has no
stored summary yet (the running week, a date range) is computed live and not kept.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.models import utcnow
from policy_server.errors import InvalidInput
from policy_server.summaries import errors as _errors  # noqa: F401  (registers the texts)
from policy_server.summaries.models import WeeklyReport
from reports import figures, query, weeks

TREND_WEEKS = 4  # previous weeks in the trend (and for regressions, seats failing > a week)


def parse_week(text: str) -> tuple[int, int]:
    try:
        return weeks.parse_week(text)
    except ValueError as exc:
        raise InvalidInput(str(exc), code="summaries.week", params={"text": text}) from None


def compute_week(
    db: Session,
    year: int,
    week: int,
    *,
    now: datetime | None = None,
    previous: int = TREND_WEEKS,
    progress: Callable[[int, int], None] | None = None,
) -> figures.Summary:
    """The summary of an ISO week with its trend over the `previous` weeks (not stored)."""
    now = now or utcnow()
    tz = query.school_timezone(db)
    wanted = [(year, week)]
    for _ in range(previous):
        wanted.insert(0, weeks.previous_week(*wanted[0]))
    loaded = []
    for i, (y, w) in enumerate(wanted):
        loaded.append(query.load_week(db, query.week_period(y, w, tz), now=now))
        if progress:
            progress(i + 1, len(wanted))
    return figures.summarise(loaded[-1], loaded[:-1], made_at=now)


def compute_range(
    db: Session,
    first: date,
    last: date,
    *,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> figures.Summary:
    """Any date range (e.g. a month): the figures over the whole range, the weekly scores of
    the weeks it covers as the trend."""
    if last < first:
        raise InvalidInput(
            "the range ends before it starts; give the first day, then the last", code="summaries.range"
        )
    now = now or utcnow()
    tz = query.school_timezone(db)
    whole = query.load_week(db, query.range_period(first, last, tz), now=now)
    weeks_in: list[tuple[int, int]] = []
    day = first
    while day <= last:
        y, w, _ = day.isocalendar()
        if (y, w) not in weeks_in:
            weeks_in.append((y, w))
        day = day.fromordinal(day.toordinal() + 1)
    loaded = []
    for i, (y, w) in enumerate(weeks_in):
        loaded.append(query.load_week(db, query.week_period(y, w, tz), now=now))
        if progress:
            progress(i + 1, len(weeks_in))
    summary = figures.summarise(whole, [], made_at=now)
    summary.trend = [
        {
            "period": p.period.label,
            **dict(zip(("state", "score"), figures.overall(figures.controls_of(p)), strict=True)),
        }
        for p in loaded
    ]
    return summary


def get_report(db: Session, period: str) -> WeeklyReport | None:
    return db.scalar(select(WeeklyReport).where(WeeklyReport.period == period))


def list_reports(db: Session, *, limit: int = 60) -> list[WeeklyReport]:
    return list(db.scalars(select(WeeklyReport).order_by(WeeklyReport.starts_at.desc()).limit(limit)))


def make_weekly(
    db: Session, year: int, week: int, *, actor: str = "system", now: datetime | None = None
) -> tuple[WeeklyReport, bool]:
    """Make and keep the summary of a finished week; (report, made).  An existing one is never
    replaced (made = False)."""
    now = now or utcnow()
    label = f"{year}-W{week:02d}"
    found = get_report(db, label)
    if found is not None:
        return found, False
    if query.week_period(year, week, query.school_timezone(db)).end > now:
        raise InvalidInput(
            f"week {label} is not over yet; a weekly summary is made after its Sunday",
            code="summaries.running_week",
            params={"week": label},
        )
    summary = compute_week(db, year, week, now=now)
    report = WeeklyReport(
        period=label,
        starts_at=summary.start,
        ends_at=summary.end,
        made_at=now,
        made_by=actor,
        summary=summary.as_dict(),
        aggregates=summary.aggregates(),
    )
    db.add(report)
    audit(
        db,
        actor=actor,
        action="summary.made",
        target=label,
        detail={"state": summary.state, "score": summary.score, "clauses": ["002 §4.5"]},
    )
    db.flush()
    return report, True


def weekly_job(db: Session, now: datetime) -> str | None:
    """The Monday job (runs hourly; does its work once a week): make last week's summary if it
    is missing, then send what the district has not accepted yet."""
    tz = query.school_timezone(db)
    year, week = weeks.last_full_week(now, tz)
    _report, made = make_weekly(db, year, week, now=now)
    db.commit()
    from policy_server.district import client

    client.send_pending(db, now=now)
    mail_pending(db, now=now)
    return f"{year}-W{week:02d}" if made else None


def mail_pending(db: Session, *, now: datetime, config=None) -> list[str]:
    """E-mail the kept summaries of the last two weeks not mailed yet, as PDF in the school's
    language, where SMTP is set (reports/delivery.py); a failure is logged and retried."""
    import logging

    from policy_server.summaries import render
    from policy_server.web.queries import school_language
    from reports import delivery

    config = config or delivery.SmtpConfig.from_env()
    if config is None:
        return []
    language = school_language(db) or "ky"
    sent = []
    for report in db.scalars(
        select(WeeklyReport).where(
            WeeklyReport.mailed_at.is_(None), WeeklyReport.made_at >= now - timedelta(days=14)
        )
    ):
        summary = report.summary
        subject = (
            render.translate(language, "Weekly compliance summary")
            + f": {summary['school']}, {report.period}"
        )
        body = "\n".join(
            [
                subject,
                "",
                f"{render.translate(language, 'Overall')}: "
                f"{render.translate(language, render.STATE_NAMES[summary['state']])} ({summary['score']})",
            ]
        )
        message = delivery.build_message(
            config,
            subject=subject,
            body=body,
            pdf=render.pdf(summary, language),
            filename=f"kalkan-{report.period}.pdf",
        )
        try:
            delivery.send(config, message)
        except OSError as exc:  # smtplib errors are OSErrors: keep it for the next round
            logging.getLogger("kalkan.summaries").warning("e-mail of %s failed: %s", report.period, exc)
            continue
        report.mailed_at = now
        audit(
            db,
            actor="system",
            action="summary.mailed",
            target=report.period,
            detail={"to": list(config.recipients)},
        )
        db.commit()
        sent.append(report.period)
    return sent
