"""Fleet health history (issue 11): when a seat's control started passing or failing.

One row per change of a control's result on a workstation (not one per heartbeat), so the
fleet page can put "failing for more than a day" first and a seat's page can show its
history.  Revision 0103_fleet_control_changes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from policy_server.db.models import Base, JsonType, UtcDateTime, utcnow


class ControlChange(Base):
    __tablename__ = "fleet_control_changes"
    __table_args__ = (Index("ix_fleet_changes_agent", "agent_id", "control", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("workstations.id"))
    control: Mapped[str] = mapped_column(String(32))
    passing: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # None: not known
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    detail: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)
