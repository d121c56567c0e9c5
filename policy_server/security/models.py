"""Login attempts counted in the database, so every server process (workers, replicas) shares
one count per account and address (policy_server/security/throttle.py, docs/security.md)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from policy_server.db.models import Base


class LoginAttempt(Base):
    """One entry of a `limits` moving window: the window's key and when the entry was taken
    (seconds since the epoch).  Entries older than their window are pruned as keys are used."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    key: Mapped[str] = mapped_column(String(300))
    at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_login_attempts_key_at", "key", "at"), Index("ix_login_attempts_at", "at"))
