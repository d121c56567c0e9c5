"""One row the health check writes, so "ok" means the database took a real write."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer
from sqlalchemy.orm import Mapped, mapped_column

from policy_server.db.models import Base, UtcDateTime


class HealthProbe(Base):
    __tablename__ = "health_probe"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    written_at: Mapped[datetime] = mapped_column(UtcDateTime)
