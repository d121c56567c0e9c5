"""The ISUO register and its imports (revision 0201_isuo_register).

Nothing is deleted (004 §3.6): a person who left gets `left_on`, a blocked one
`blocked_on`, a withdrawn consent `withdrawn_on`; every change leaves an `AuditRecord`.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from policy_server.db.models import Base, JsonType, UtcDateTime, utcnow


class IsuoRole(StrEnum):
    """The kinds of ISUO users a school deals with (002 §4.4–4.7)."""

    district = "district"  # district education office staff (002 §4.4)
    director = "director"  # head of the school (002 §4.5)
    specialist = "specialist"  # the school's ISUO responsible specialist (002 §4.6)
    teacher = "teacher"  # grades and attendance (002 §4.7)


# Roles that must sign the confidentiality obligation before the first access (002 §4.4,
# §4.5, §5.1).  Teachers see grades and attendance: the school may still ask them to sign;
# the check treats every registered user the same (no signed obligation → finding).
OBLIGATION_ROLES = frozenset(IsuoRole)


class IsuoUser(Base):
    """A person who may use ISUO (002 §4): role, appointment, obligation, blocking, leaving."""

    __tablename__ = "isuo_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    full_name: Mapped[str] = mapped_column(String(200))
    position: Mapped[str] = mapped_column(String(200), default="")
    isuo_role: Mapped[str] = mapped_column(String(16))  # IsuoRole
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), nullable=True)  # server login
    order_number: Mapped[str] = mapped_column(String(64), default="")  # appointment order (002 §4.5)
    order_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    # the signed obligation (annex 1.1; 002 §4.4, §5.1)
    obligation_signed_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    obligation_instructed_by: Mapped[str] = mapped_column(String(200), default="")
    obligation_scan_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    obligation_scan_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    obligation_file_number: Mapped[str | None] = mapped_column(String(64), nullable=True)  # personal file
    blocked_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    blocked_reason: Mapped[str] = mapped_column(String(500), default="")
    left_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    logins: Mapped[list[IsuoLogin]] = relationship(back_populates="user", order_by="IsuoLogin.login")

    @property
    def has_obligation(self) -> bool:
        return self.obligation_signed_on is not None and bool(
            self.obligation_scan_sha256 or self.obligation_file_number
        )


class IsuoLogin(Base):
    """One ISUO login of a registered person (stored lower-case; unique in the school)."""

    __tablename__ = "isuo_logins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("isuo_users.id"), index=True)
    login: Mapped[str] = mapped_column(String(128), unique=True)

    user: Mapped[IsuoUser] = relationship(back_populates="logins")


class IsuoConsent(Base):
    """A written consent to process personal data (annex 1.2, 002 §5.2): whose, when, scope."""

    __tablename__ = "isuo_consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_name: Mapped[str] = mapped_column(String(200))
    subject_kind: Mapped[str] = mapped_column(String(16))  # staff | student | parent
    given_on: Mapped[date] = mapped_column(Date)
    scope: Mapped[str] = mapped_column(String(500), default="")
    withdrawn_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class IsuoAddress(Base):
    """The school's address plan: an IP address → a seat (and its workstation if enrolled)."""

    __tablename__ = "isuo_address_plan"

    ip: Mapped[str] = mapped_column(String(45), primary_key=True)
    seat: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("workstations.id"), nullable=True)
    note: Mapped[str] = mapped_column(String(200), default="")


class IsuoSource(Base):
    """Where an export comes from, with its saved column mapping (field → column header)."""

    __tablename__ = "isuo_sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    mapping: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class IsuoImport(Base):
    """One imported file: who, when, what it held."""

    __tablename__ = "isuo_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("isuo_sources.id"))
    file_name: Mapped[str] = mapped_column(String(200))
    file_sha256: Mapped[str] = mapped_column(String(64))
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_new: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    actor: Mapped[str] = mapped_column(String(64), default="")
    imported_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class IsuoRecord(Base):
    """One access record from ISUO's own log (who, when, what kind; never the content)."""

    __tablename__ = "isuo_records"
    __table_args__ = (Index("ix_isuo_records_at", "at"), Index("ix_isuo_records_login", "login", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    row_hash: Mapped[str] = mapped_column(String(64), unique=True)  # idempotent imports
    import_id: Mapped[int] = mapped_column(ForeignKey("isuo_imports.id"))
    login: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    action: Mapped[str] = mapped_column(String(64), default="")
    ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    record_type: Mapped[str] = mapped_column(String(64), default="")
    seat: Mapped[str | None] = mapped_column(String(64), nullable=True)  # from the address plan
    agent_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    proxy_access_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # overlapping IsuoAccess


class IsuoSetting(Base):
    """Working hours, the review due date (key → JSON value)."""

    __tablename__ = "isuo_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JsonType)


class IsuoHoliday(Base):
    """A day the school is closed (ISUO work then is a finding)."""

    __tablename__ = "isuo_holidays"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")


class IsuoReview(Base):
    """A termly access review: the director confirms or asks to block each user, then signs."""

    __tablename__ = "isuo_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    term: Mapped[str] = mapped_column(String(64))
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    opened_by: Mapped[str] = mapped_column(String(64), default="")
    signed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    signed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)  # server username
    signer_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    signed_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    next_due_on: Mapped[date | None] = mapped_column(Date, nullable=True)

    items: Mapped[list[IsuoReviewItem]] = relationship(back_populates="review", order_by="IsuoReviewItem.id")


class IsuoReviewItem(Base):
    __tablename__ = "isuo_review_items"
    __table_args__ = (UniqueConstraint("review_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    review_id: Mapped[int] = mapped_column(ForeignKey("isuo_reviews.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("isuo_users.id"))
    decision: Mapped[str | None] = mapped_column(String(16), nullable=True)  # confirm | block
    note: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    review: Mapped[IsuoReview] = relationship(back_populates="items")
    user: Mapped[IsuoUser] = relationship()
