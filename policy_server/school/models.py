"""A room's seat layout (issue 11): rows × columns and each seat's name, row by row.

The seat names are what a workstation enrols with (`kalkan-agent enroll --seat …`) and what
the fleet page and the lesson seat map show.  Revision 0102_school_room_layouts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from policy_server.db.models import Base, JsonType, UtcDateTime, utcnow


class RoomLayout(Base):
    __tablename__ = "room_layouts"

    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id"), primary_key=True)
    rows: Mapped[int] = mapped_column(Integer)
    columns: Mapped[int] = mapped_column(Integer)
    seat_names: Mapped[list[str]] = mapped_column(JsonType, default=list)  # row by row
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
