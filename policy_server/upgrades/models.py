"""Upgrade tables (revision 0402_agent_upgrades)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from policy_server.db.models import Base, UtcDateTime, utcnow


class Rollout(Base):
    """The responsible person offered `version` to every seat (one rollout runs at a time)."""

    __tablename__ = "agent_rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    batch_size: Mapped[int] = mapped_column(Integer, default=3)  # seats upgrading at once
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | stopped | done
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RolloutSeat(Base):
    """One seat's part in a rollout: offered (the agent got the order), then its result."""

    __tablename__ = "agent_rollout_seats"
    __table_args__ = (Index("ix_rollout_seats_rollout_agent", "rollout_id", "agent_id", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("agent_rollouts.id"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("workstations.id"))
    # offered | upgraded | rolled_back | failed
    state: Mapped[str] = mapped_column(String(16), default="offered")
    from_version: Mapped[str] = mapped_column(String(64), default="")
    offered_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    reason: Mapped[str] = mapped_column(String(500), default="")  # the package manager's own words
    # fetch_failed | install_failed | not_running | rollback_failed | no_answer (the page says it in
    # the reader's language)
    reason_code: Mapped[str] = mapped_column(String(32), default="")
