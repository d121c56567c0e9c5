"""Tables of the filtering domain (migration 0301_filtering).

* `FilterListState`: one row: where the category lists come from and what the publisher
  said last time (ETag, Last-Modified), so the weekly update downloads only on change.
* `FilterIndexArtifact`: every compiled index the server published, content-addressed by
  the SHA-256 of the whole file, with its entry counts per category and what changed
  against the one before (entries added / removed per category).
* `FilterRequest`: the report and unblock queue.  Students' `web.report` and
  `web.unblock_request` events are folded into one open row per URL; `FilterRequestEvent`
  links each event (and its seat) to its row, so a seat's report page can show the status.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from policy_server.db.models import Base, JsonType, UtcDateTime, utcnow


class FilterListState(Base):
    __tablename__ = "filter_list_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    source: Mapped[str] = mapped_column(Text, default="")  # URL, tarball or folder
    etag: Mapped[str | None] = mapped_column(String(200), nullable=True)
    last_modified: Mapped[str | None] = mapped_column(String(100), nullable=True)
    checked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class FilterIndexArtifact(Base):
    __tablename__ = "filter_index_artifacts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)  # of the whole file
    body_sha256: Mapped[str] = mapped_column(String(64))  # the index header's, same lists → same value
    size: Mapped[int] = mapped_column(Integer)
    entries: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(Text, default="")
    build_seconds: Mapped[float] = mapped_column(default=0.0)
    counts: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)  # category → entries
    changes: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)  # category → [added, removed]
    previous_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)


class FilterRequest(Base):
    __tablename__ = "filter_requests"
    __table_args__ = (Index("ix_filter_requests_url_status", "url", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)  # canonical
    host: Mapped[str] = mapped_column(String(255))
    kinds: Mapped[list[str]] = mapped_column(JsonType, default=list)  # report, unblock
    seats: Mapped[list[str]] = mapped_column(JsonType, default=list)
    comments: Mapped[list[str]] = mapped_column(JsonType, default=list)
    rule: Mapped[str] = mapped_column(String(64), default="")  # the rule that blocked it (unblock requests)
    categories: Mapped[list[str]] = mapped_column(JsonType, default=list)
    first_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_at: Mapped[datetime] = mapped_column(UtcDateTime)
    count: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="received")  # received|blocked|allowed|rejected
    decision: Mapped[dict[str, Any]] = mapped_column(JsonType, default=dict)  # scope, target, entry, until
    reason: Mapped[str] = mapped_column(Text, default="")
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    policy_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expired: Mapped[bool] = mapped_column(default=False)  # an allow with an expiry that has run out


class FilterRequestEvent(Base):
    __tablename__ = "filter_request_events"
    __table_args__ = (Index("ix_filter_request_events_agent", "agent_id", "occurred_at"),)

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("filter_requests.id"))
    agent_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    seat: Mapped[str | None] = mapped_column(String(64), nullable=True)
    url: Mapped[str] = mapped_column(Text)  # as the student typed it
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
