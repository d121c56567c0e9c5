"""Notices: stored for a person (badge and list in the console), e-mailed where the person
has an address and the school's SMTP settings exist (`deliver_pending`, run by the lessons
ticker, outside any request).  Texts are stored in the person's language."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from policy_server.audit import audit
from policy_server.db.models import Person, utcnow
from policy_server.db.session import is_sqlite
from policy_server.notices.mail import MailError, SmtpConfig, send_mail
from policy_server.notices.models import Notice, NoticeAddress, SmtpSettings
from policy_server.scope import Viewer
from policy_server.timetable.errors import Invalid, Missing, fail
from policy_server.web.i18n import DEFAULT_LANGUAGE, translate

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,}$")


def notify(db: Session, *, person_id: int, kind: str, subject_id: str, body_id: str, params: dict,
           link: str = "") -> Notice:
    person = db.get(Person, person_id)
    language = (person.language if person else None) or DEFAULT_LANGUAGE
    notice = Notice(person_id=person_id, kind=kind, subject=translate(language, subject_id, **params)[:200],
                    body=translate(language, body_id, **params), link=link,
                    params=dict(params))  # retention rewrites the text from these (notices/retention.py)
    db.add(notice)
    return notice


def unread_count(db: Session, viewer: Viewer) -> int:
    return db.scalar(select(func.count()).select_from(Notice).where(Notice.person_id == viewer.person.id,
                                                                    Notice.read_at.is_(None))) or 0


def list_notices(db: Session, viewer: Viewer, *, limit: int = 100) -> list[Notice]:
    return list(db.scalars(select(Notice).where(Notice.person_id == viewer.person.id)
                           .order_by(Notice.created_at.desc(), Notice.id.desc()).limit(limit)))


def mark_read(db: Session, viewer: Viewer, *, notice_id: int | None = None) -> int:
    query = update(Notice).where(Notice.person_id == viewer.person.id, Notice.read_at.is_(None))
    if notice_id is not None:
        mine = select(Notice.id).where(Notice.id == notice_id, Notice.person_id == viewer.person.id)
        if db.scalar(mine) is None:
            raise fail(Missing, "lesson.not_found")
        query = query.where(Notice.id == notice_id)
    return db.execute(query.values(read_at=utcnow())).rowcount or 0


def set_address(db: Session, viewer: Viewer, *, email: str) -> None:
    email = email.strip()
    row = db.get(NoticeAddress, viewer.person.id)
    if not email:
        if row is not None:
            db.delete(row)
        return
    if not _EMAIL.match(email):
        raise fail(Invalid, "notice.bad_email")
    if row is None:
        db.add(NoticeAddress(person_id=viewer.person.id, email=email))
    else:
        row.email = email
    audit(db, actor=viewer.name, action="notice.address")


def address_of(db: Session, person_id: int) -> str:
    row = db.get(NoticeAddress, person_id)
    return row.email if row else ""


def smtp_settings(db: Session) -> SmtpSettings | None:
    return db.scalar(select(SmtpSettings).order_by(SmtpSettings.id).limit(1))


def set_smtp(db: Session, viewer: Viewer, *, host: str, port: int, sender: str, username: str = "",
             password: str | None = None, starttls: bool = True) -> SmtpSettings | None:
    row = smtp_settings(db)
    if not host.strip():
        if row is not None:
            db.delete(row)
        audit(db, actor=viewer.name, action="notice.smtp", detail={"host": ""})
        return None
    if not 1 <= port <= 65535 or not _EMAIL.match(sender.strip()):
        raise fail(Invalid, "notice.bad_smtp")
    if row is None:
        row = SmtpSettings(host="", port=587, sender="")
        db.add(row)
    row.host, row.port, row.sender, row.username, row.starttls = (host.strip(), port, sender.strip(),
                                                                  username.strip(), starttls)
    if password is not None:
        row.password = password
    audit(db, actor=viewer.name, action="notice.smtp", detail={"host": row.host, "port": port})
    return row


def deliver_pending(db: Session, *, now: datetime | None = None, limit: int = 50) -> int:
    """E-mail notices not yet sent to people with an address (the caller commits)."""
    settings = smtp_settings(db)
    if settings is None:
        return 0
    config = SmtpConfig(host=settings.host, port=settings.port, sender=settings.sender,
                        username=settings.username, password=settings.password, starttls=settings.starttls)
    query = (select(Notice, NoticeAddress.email)
             .join(NoticeAddress, NoticeAddress.person_id == Notice.person_id)
             .where(Notice.emailed_at.is_(None), Notice.email_error == "")
             .order_by(Notice.id).limit(limit))
    if not is_sqlite(db):  # two server workers never send the same notice twice
        query = query.with_for_update(of=Notice, skip_locked=True)
    rows = db.execute(query).all()
    sent = 0
    for notice, email in rows:
        try:
            send_mail(config, to=email, subject=f"Kalkan: {notice.subject}", body=notice.body)
        except MailError as exc:
            notice.email_error = str(exc)[:300]
            continue
        notice.emailed_at = now or utcnow()
        sent += 1
    return sent


# --------------------------------------------------------------------------- the badge on every page

def badge_counter(sessionmaker_) -> Callable[[int], int] | None:
    """`notice_count(person_id)` for the badge in every page's menu, on this school's database
    (an app keeps its own: `app.state.notice_count`, given to each page by `Page.render`; a
    module-wide one would count another school's notices in a service of many schools).  It
    reads through a read-only engine: on SQLite a page's own transaction holds the write lock,
    and a reader must not wait for it."""
    from policy_server.db.session import make_sessionmaker, read_only_engine

    engine = sessionmaker_.kw.get("bind")
    if engine is None:
        return None
    sessions = make_sessionmaker(read_only_engine(engine))

    def notice_count(person_id: int) -> int:
        try:
            with sessions() as db:
                return db.scalar(select(func.count()).select_from(Notice)
                                 .where(Notice.person_id == person_id, Notice.read_at.is_(None))) or 0
        except Exception:  # noqa: BLE001 - a badge never breaks a page
            return 0

    return notice_count
