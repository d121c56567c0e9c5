"""The ISUO register, consents, address plan, working time and termly reviews.

Plain functions over a session, keyword arguments; they never commit (the caller does, so a
change and its `AuditRecord` land together, 004 §3.6).  Bad input raises `FormInvalid`, whose
`problems` map each form field to an English message id (translated by the page).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from policy_server.audit import audit
from policy_server.db.models import Person, Workstation, utcnow
from policy_server.errors import InvalidInput, NotFound
from policy_server.isuo import error_texts  # noqa: F401  (registers the codes' texts)
from policy_server.isuo.models import (
    IsuoAddress,
    IsuoConsent,
    IsuoHoliday,
    IsuoLogin,
    IsuoReview,
    IsuoReviewItem,
    IsuoRole,
    IsuoSetting,
    IsuoUser,
)
from policy_server.isuo.rules import WorkingTime
from policy_server.scope import Viewer
from policy_server.web.i18n import N_

MAX_SCAN_BYTES = 10 * 1024 * 1024
# what a scan of a signed paper may be: PDF, JPEG, PNG (by their first bytes, not the name)
SCAN_MAGIC = {b"%PDF": "pdf", b"\xff\xd8\xff": "jpg", b"\x89PNG": "png"}
LOGIN_RE = re.compile(r"^[\w.@+-]{2,128}$")
CONSENT_KINDS = ("staff", "student", "parent")
DECISIONS = ("confirm", "block")


class FormInvalid(InvalidInput):
    """Bad form input: `problems` = {field: English message id} (GOV.UK error summary)."""

    def __init__(self, problems: dict[str, str], params: dict[str, object] | None = None):
        super().__init__(
            "; ".join(f"{k}: {v}" for k, v in problems.items()),
            code="isuo.form_invalid",
            params={"fields": ", ".join(problems), **(params or {})},
        )
        self.problems = problems


# ----------------------------------------------------------------------------- parsing helpers


def parse_day(
    value: str | None, field: str, problems: dict[str, str], *, required: bool = False
) -> date | None:
    value = (value or "").strip()
    if not value:
        if required:
            problems[field] = N_("Enter a date, for example 2026-09-01.")
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        problems[field] = N_("Enter a date as year-month-day, for example 2026-09-01.")
        return None


def clean_logins(text: str, problems: dict[str, str]) -> list[str]:
    logins = sorted({w.strip().lower() for w in re.split(r"[\s,;]+", text or "") if w.strip()})
    if any(not LOGIN_RE.match(login) for login in logins):
        problems["logins"] = N_(
            "An ISUO login has letters, digits and . _ @ + - only (2 to 128 characters); "
            "separate several logins with commas."
        )
    return logins


def scan_kind(data: bytes) -> str | None:
    for magic, kind in SCAN_MAGIC.items():
        if data.startswith(magic):
            return kind
    return None


# ----------------------------------------------------------------------------- the register


def list_users(db: Session) -> list[IsuoUser]:
    return list(
        db.scalars(
            select(IsuoUser).options(selectinload(IsuoUser.logins)).order_by(IsuoUser.full_name, IsuoUser.id)
        )
    )


def get_user(db: Session, user_id: int) -> IsuoUser:
    user = db.get(IsuoUser, user_id)
    if user is None:
        raise NotFound(f"No ISUO user {user_id}.", code="isuo.no_user")
    return user


def save_user(
    db: Session,
    *,
    viewer: Viewer,
    user_id: int | None = None,
    full_name: str,
    position: str,
    isuo_role: str,
    logins: str,
    order_number: str = "",
    order_date: str = "",
    person_username: str = "",
) -> IsuoUser:
    """Create (user_id None) or change a person in the register with their logins."""
    problems: dict[str, str] = {}
    full_name, position = full_name.strip(), position.strip()
    if not full_name:
        problems["full_name"] = N_("Enter the person's full name as in their passport.")
    if not position:
        problems["position"] = N_("Enter the position, for example: teacher of mathematics.")
    if isuo_role not in IsuoRole.__members__:
        problems["isuo_role"] = N_("Choose the ISUO role.")
    wanted = clean_logins(logins, problems)
    parsed_order_date = parse_day(order_date, "order_date", problems)
    person_id = None
    if person_username.strip():
        person_id = db.scalar(select(Person.id).where(Person.username == person_username.strip().lower()))
        if person_id is None:
            problems["person_username"] = N_(
                "No Kalkan account with this user name; leave it empty or give an existing one."
            )
    taken = db.execute(select(IsuoLogin.login, IsuoLogin.user_id).where(IsuoLogin.login.in_(wanted))).all()
    clash = [login for login, owner in taken if owner != user_id]
    if clash:
        problems["logins"] = N_("This ISUO login already belongs to another person in the register.")
    if problems:
        raise FormInvalid(problems)
    user = IsuoUser(created_at=utcnow()) if user_id is None else get_user(db, user_id)
    before = _user_summary(user) if user_id is not None else None
    user.full_name, user.position, user.isuo_role = full_name, position, isuo_role
    user.order_number, user.order_date, user.person_id = (
        order_number.strip()[:64],
        parsed_order_date,
        person_id,
    )
    user.updated_at = utcnow()
    if user_id is None:
        db.add(user)
        db.flush()
    have = {lg.login: lg for lg in db.scalars(select(IsuoLogin).where(IsuoLogin.user_id == user.id))}
    for login in set(have) - set(wanted):
        db.delete(have[login])
    db.flush()
    for login in sorted(set(wanted) - set(have)):
        db.add(IsuoLogin(user_id=user.id, login=login))
    db.flush()
    db.refresh(user)
    audit(
        db,
        actor=viewer.name,
        action="isuo.user_created" if before is None else "isuo.user_changed",
        target=f"isuo_user:{user.id}",
        detail={"before": before, "after": _user_summary(user)},
    )
    return user


def _user_summary(user: IsuoUser) -> dict:
    return {
        "full_name": user.full_name,
        "position": user.position,
        "isuo_role": user.isuo_role,
        "logins": [lg.login for lg in user.logins] if user.id else [],
        "order": [user.order_number, user.order_date.isoformat() if user.order_date else None],
    }


def record_obligation(
    db: Session,
    *,
    viewer: Viewer,
    user_id: int,
    signed_on: str,
    instructed_by: str,
    scan: bytes | None,
    scan_name: str,
    file_number: str,
    state_dir: Path,
) -> IsuoUser:
    """The signed obligation (annex 1.1): date, who instructed, and either a scan (kept under the
    state dir by its SHA-256) or the number of the personal file the original is in."""
    user = get_user(db, user_id)
    problems: dict[str, str] = {}
    day = parse_day(signed_on, "signed_on", problems, required=True)
    if day is not None and day > date.today():
        problems["signed_on"] = N_("The date of signing cannot be in the future.")
    if not instructed_by.strip():
        problems["instructed_by"] = N_("Enter who instructed the person (002 §4.5), e.g. the director.")
    file_number = file_number.strip()
    if scan:
        if len(scan) > MAX_SCAN_BYTES:
            problems["scan"] = N_("The scan is larger than 10 MB. Scan at 200 dpi or save it as PDF.")
        elif scan_kind(scan) is None:
            problems["scan"] = N_("The scan must be a PDF, JPEG or PNG file.")
    elif not file_number:
        problems["scan"] = N_(
            "Upload the scan of the signed obligation, or give the number of the personal "
            "file where the original is kept."
        )
    if problems:
        raise FormInvalid(problems)
    digest = None
    if scan:
        digest = hashlib.sha256(scan).hexdigest()
        folder = Path(state_dir) / "isuo" / "obligations"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = folder / f"{digest}.{scan_kind(scan)}"
        if not target.exists():
            tmp = target.with_suffix(".part")
            tmp.write_bytes(scan)
            tmp.replace(target)
    user.obligation_signed_on = day
    user.obligation_instructed_by = instructed_by.strip()[:200]
    user.obligation_scan_sha256 = digest
    user.obligation_scan_name = (Path(scan_name).name[:200] or None) if scan else None
    user.obligation_file_number = file_number[:64] or None
    user.updated_at = utcnow()
    audit(
        db,
        actor=viewer.name,
        action="isuo.obligation_recorded",
        target=f"isuo_user:{user.id}",
        detail={
            "signed_on": signed_on,
            "instructed_by": user.obligation_instructed_by,
            "sha256": digest,
            "file_number": user.obligation_file_number,
        },
    )
    return user


def scan_path(state_dir: Path, user: IsuoUser) -> Path | None:
    if not user.obligation_scan_sha256:
        return None
    for kind in SCAN_MAGIC.values():
        path = Path(state_dir) / "isuo" / "obligations" / f"{user.obligation_scan_sha256}.{kind}"
        if path.exists():
            return path
    return None


def verify_scan(state_dir: Path, user: IsuoUser) -> bool | None:
    """The kept scan still has its SHA-256 (None: no scan kept)."""
    path = scan_path(state_dir, user)
    if path is None:
        return None if not user.obligation_scan_sha256 else False
    return hashlib.sha256(path.read_bytes()).hexdigest() == user.obligation_scan_sha256


def block_user(db: Session, *, viewer: Viewer, user_id: int, blocked_on: str, reason: str) -> IsuoUser:
    user = get_user(db, user_id)
    problems: dict[str, str] = {}
    day = parse_day(blocked_on, "blocked_on", problems, required=True)
    if not reason.strip():
        problems["blocked_reason"] = N_("Enter the reason, e.g. the director's order number.")
    if problems:
        raise FormInvalid(problems)
    user.blocked_on, user.blocked_reason, user.updated_at = day, reason.strip()[:500], utcnow()
    audit(
        db,
        actor=viewer.name,
        action="isuo.user_blocked",
        target=f"isuo_user:{user.id}",
        detail={"blocked_on": blocked_on, "reason": user.blocked_reason},
    )
    return user


def mark_left(db: Session, *, viewer: Viewer, user_id: int, left_on: str) -> IsuoUser:
    user = get_user(db, user_id)
    problems: dict[str, str] = {}
    day = parse_day(left_on, "left_on", problems, required=True)
    if problems:
        raise FormInvalid(problems)
    user.left_on, user.updated_at = day, utcnow()
    audit(
        db,
        actor=viewer.name,
        action="isuo.user_left",
        target=f"isuo_user:{user.id}",
        detail={"left_on": left_on},
    )
    return user


def obligation_state(user: IsuoUser) -> str:
    """signed | missing | blocked | left (for lists and the review)."""
    if user.left_on is not None:
        return "left"
    if user.blocked_on is not None:
        return "blocked"
    return "signed" if user.has_obligation else "missing"


# ----------------------------------------------------------------------------- consents (annex 1.2)


def add_consent(
    db: Session, *, viewer: Viewer, subject_name: str, subject_kind: str, given_on: str, scope: str
) -> IsuoConsent:
    problems: dict[str, str] = {}
    if not subject_name.strip():
        problems["subject_name"] = N_("Enter whose consent it is.")
    if subject_kind not in CONSENT_KINDS:
        problems["subject_kind"] = N_("Choose staff, student or parent.")
    day = parse_day(given_on, "given_on", problems, required=True)
    if problems:
        raise FormInvalid(problems)
    consent = IsuoConsent(
        subject_name=subject_name.strip()[:200],
        subject_kind=subject_kind,
        given_on=day,
        scope=scope.strip()[:500],
        created_at=utcnow(),
    )
    db.add(consent)
    db.flush()
    audit(
        db,
        actor=viewer.name,
        action="isuo.consent_added",
        target=f"isuo_consent:{consent.id}",
        detail={"kind": subject_kind, "given_on": given_on},
    )
    return consent


def withdraw_consent(db: Session, *, viewer: Viewer, consent_id: int, withdrawn_on: str) -> IsuoConsent:
    consent = db.get(IsuoConsent, consent_id)
    if consent is None:
        raise NotFound(f"No consent {consent_id}.", code="isuo.no_consent")
    problems: dict[str, str] = {}
    day = parse_day(withdrawn_on, "withdrawn_on", problems, required=True)
    if problems:
        raise FormInvalid(problems)
    consent.withdrawn_on = day
    audit(
        db,
        actor=viewer.name,
        action="isuo.consent_withdrawn",
        target=f"isuo_consent:{consent.id}",
        detail={"withdrawn_on": withdrawn_on},
    )
    return consent


def list_consents(db: Session, *, viewer: Viewer) -> list[IsuoConsent]:
    """The names: only for the responsible person (students' data: 001 §2.15, 002 §3.1)."""
    if not viewer.sees_personal_data or viewer.role != "admin":
        return []
    return list(db.scalars(select(IsuoConsent).order_by(IsuoConsent.given_on.desc(), IsuoConsent.id.desc())))


def consent_counts(db: Session) -> dict[str, dict[str, int]]:
    """{kind: {'given': n, 'withdrawn': m}}: what a summary shows."""
    counts = {k: {"given": 0, "withdrawn": 0} for k in CONSENT_KINDS}
    for kind, withdrawn, n in db.execute(
        select(IsuoConsent.subject_kind, IsuoConsent.withdrawn_on.is_not(None), func.count()).group_by(
            IsuoConsent.subject_kind, IsuoConsent.withdrawn_on.is_not(None)
        )
    ):
        counts.setdefault(kind, {"given": 0, "withdrawn": 0})["withdrawn" if withdrawn else "given"] += n
    return counts


# ----------------------------------------------------------------------------- address plan


def set_address(db: Session, *, viewer: Viewer, ip: str, seat: str, note: str = "") -> IsuoAddress:
    problems: dict[str, str] = {}
    try:
        ip = str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        problems["ip"] = N_("Enter an IP address, for example 10.35.1.7.")
    if not seat.strip():
        problems["seat"] = N_("Enter the seat, for example 07.")
    if problems:
        raise FormInvalid(problems)
    seat = seat.strip()[:64]
    agent_id = db.scalar(
        select(Workstation.id).where(Workstation.seat == seat, Workstation.token_revoked.is_(False)).limit(1)
    )
    row = db.get(IsuoAddress, ip) or IsuoAddress(ip=ip)
    row.seat, row.agent_id, row.note = seat, agent_id, note.strip()[:200]
    db.add(row)
    audit(
        db,
        actor=viewer.name,
        action="isuo.address_set",
        target=f"ip:{ip}",
        detail={"seat": seat, "agent_id": agent_id},
    )
    return row


def address_plan(db: Session) -> list[IsuoAddress]:
    return list(db.scalars(select(IsuoAddress).order_by(IsuoAddress.seat, IsuoAddress.ip)))


# ----------------------------------------------------------------------------- working time, review date


def _setting(db: Session, key: str, default):
    row = db.get(IsuoSetting, key)
    return default if row is None else row.value


def _put_setting(db: Session, key: str, value) -> None:
    row = db.get(IsuoSetting, key)
    if row is None:
        db.add(IsuoSetting(key=key, value=value))
    else:
        row.value = value


def working_time(db: Session) -> WorkingTime:
    hours = _setting(db, "working_hours", {"start": "08:00", "end": "18:00", "weekdays": [0, 1, 2, 3, 4, 5]})
    holidays = frozenset(db.scalars(select(IsuoHoliday.day)))
    return WorkingTime(
        start=time.fromisoformat(hours["start"]),
        end=time.fromisoformat(hours["end"]),
        weekdays=frozenset(hours["weekdays"]),
        holidays=holidays,
    )


def set_working_time(db: Session, *, viewer: Viewer, start: str, end: str, weekdays: list[str]) -> None:
    problems: dict[str, str] = {}
    try:
        t0, t1 = time.fromisoformat(start.strip()), time.fromisoformat(end.strip())
        if t0 >= t1:
            problems["start"] = N_("The working day must start before it ends.")
    except ValueError:
        problems["start"] = N_("Enter times as hours:minutes, for example 08:00 and 18:00.")
    try:
        days = sorted({int(d) for d in weekdays})
        if not days or any(d < 0 or d > 6 for d in days):
            raise ValueError
    except ValueError:
        problems["weekdays"] = N_("Choose at least one working day.")
    if problems:
        raise FormInvalid(problems)
    value = {"start": t0.strftime("%H:%M"), "end": t1.strftime("%H:%M"), "weekdays": days}
    _put_setting(db, "working_hours", value)
    audit(db, actor=viewer.name, action="isuo.working_time_set", detail=value)


def add_holiday(db: Session, *, viewer: Viewer, day: str, name: str) -> None:
    problems: dict[str, str] = {}
    parsed = parse_day(day, "day", problems, required=True)
    if problems:
        raise FormInvalid(problems)
    row = db.get(IsuoHoliday, parsed) or IsuoHoliday(day=parsed)
    row.name = name.strip()[:200]
    db.add(row)
    audit(
        db, actor=viewer.name, action="isuo.holiday_added", detail={"day": day, "name": row.name}
    )


def holidays(db: Session) -> list[IsuoHoliday]:
    return list(db.scalars(select(IsuoHoliday).order_by(IsuoHoliday.day)))


def review_due_on(db: Session) -> date | None:
    value = _setting(db, "review_due_on", None)
    return date.fromisoformat(value) if value else None


def set_review_due_on(db: Session, *, viewer: Viewer, due_on: str) -> None:
    problems: dict[str, str] = {}
    day = parse_day(due_on, "due_on", problems, required=True)
    if problems:
        raise FormInvalid(problems)
    _put_setting(db, "review_due_on", day.isoformat())
    audit(db, actor=viewer.name, action="isuo.review_due_set", detail={"due_on": due_on})


# ----------------------------------------------------------------------------- termly review


@dataclass(frozen=True)
class ReviewRow:
    item: IsuoReviewItem
    user: IsuoUser
    state: str
    last_access: datetime | None
    findings: int


def open_review(db: Session) -> IsuoReview | None:
    return db.scalar(
        select(IsuoReview).where(IsuoReview.signed_at.is_(None)).order_by(IsuoReview.id.desc()).limit(1)
    )


def last_signed_review(db: Session) -> IsuoReview | None:
    return db.scalar(
        select(IsuoReview)
        .where(IsuoReview.signed_at.is_not(None))
        .order_by(IsuoReview.signed_at.desc())
        .limit(1)
    )


def start_review(db: Session, *, viewer: Viewer, term: str) -> IsuoReview:
    """Open a review listing every person in the register (one open review at a time)."""
    current = open_review(db)
    if current is not None:
        return current
    if not term.strip():
        raise FormInvalid({"term": N_("Name the term, for example 2026-2027 term 1.")})
    review = IsuoReview(term=term.strip()[:64], opened_at=utcnow(), opened_by=viewer.name)
    db.add(review)
    db.flush()
    for user in list_users(db):
        db.add(IsuoReviewItem(review_id=review.id, user_id=user.id, note=""))
    audit(
        db,
        actor=viewer.name,
        action="isuo.review_opened",
        target=f"isuo_review:{review.id}",
        detail={"term": review.term},
    )
    db.flush()
    db.refresh(review)
    return review


def get_review(db: Session, review_id: int) -> IsuoReview:
    review = db.get(IsuoReview, review_id)
    if review is None:
        raise NotFound(f"No review {review_id}.", code="isuo.no_review")
    return review


def decide(
    db: Session, *, viewer: Viewer, review_id: int, user_id: int, decision: str, note: str = ""
) -> None:
    review = get_review(db, review_id)
    if review.signed_at is not None:
        raise FormInvalid({"decision": N_("This review is signed; it cannot change any more.")})
    if decision not in DECISIONS:
        raise FormInvalid({"decision": N_("Choose confirm or ask to block.")})
    item = db.scalar(
        select(IsuoReviewItem).where(IsuoReviewItem.review_id == review_id, IsuoReviewItem.user_id == user_id)
    )
    if item is None:
        raise NotFound(f"User {user_id} is not in review {review_id}.", code="isuo.no_user")
    item.decision, item.note, item.decided_at = decision, note.strip()[:2000], utcnow()
    audit(
        db,
        actor=viewer.name,
        action="isuo.review_decision",
        target=f"isuo_review:{review_id}",
        detail={"user_id": user_id, "decision": decision, "note": item.note},
    )


def sign_review(
    db: Session, *, viewer: Viewer, review_id: int, signer_name: str, signed_on: str, next_due_on: str
) -> IsuoReview:
    """The director signs: every person decided, name and date given; the next review's due date set."""
    review = get_review(db, review_id)
    problems: dict[str, str] = {}
    if review.signed_at is not None:
        problems["signer_name"] = N_("This review is signed already.")
    undecided = [i for i in review.items if i.decision is None]
    if undecided:
        problems["decision"] = N_("Confirm or ask to block every person before signing.")
    if not signer_name.strip():
        problems["signer_name"] = N_("Enter your full name as the signature.")
    day = parse_day(signed_on, "signed_on", problems, required=True)
    due = parse_day(next_due_on, "next_due_on", problems, required=True)
    if day is not None and due is not None and due <= day:
        problems["next_due_on"] = N_("The next review must be due after today's signature.")
    if problems:
        raise FormInvalid(problems)
    review.signed_at, review.signed_by = utcnow(), viewer.name
    review.signer_name, review.signed_on, review.next_due_on = signer_name.strip()[:200], day, due
    _put_setting(db, "review_due_on", due.isoformat())
    audit(
        db,
        actor=viewer.name,
        action="isuo.review_signed",
        target=f"isuo_review:{review.id}",
        detail={
            "signer_name": review.signer_name,
            "signed_on": signed_on,
            "next_due_on": next_due_on,
            "asked_to_block": [i.user_id for i in review.items if i.decision == "block"],
        },
    )
    return review


def block_requests(db: Session) -> dict[int, date]:
    """Users the director asked to block in a signed review who are not blocked yet → the review's date."""
    rows = db.execute(
        select(IsuoReviewItem.user_id, IsuoReview.signed_on)
        .join(IsuoReview, IsuoReview.id == IsuoReviewItem.review_id)
        .join(IsuoUser, IsuoUser.id == IsuoReviewItem.user_id)
        .where(
            IsuoReviewItem.decision == "block",
            IsuoReview.signed_at.is_not(None),
            IsuoUser.blocked_on.is_(None),
        )
    ).all()
    return {u: d for u, d in rows}
