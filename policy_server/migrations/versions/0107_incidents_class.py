"""Incidents: the class they are about, so a teacher sees the incidents of the classes they teach

`incidents.class_id`: the class whose timetable period ran in the workstation's room when the
incident began (the students at the seats then are that class's; the seating plan names them).
The incident engine fills it for new incidents (`incidents.engine._classes_at`); the scope
(`incidents.service.visible_to`) lets a teacher of the class see the incident.  The incidents
already stored get it here from the timetable as it is now.

Revision ID: 0107_incidents_class
Revises: 0106_incidents_resolution_code
Create Date: 2026-12-04
"""
from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op

revision = '0107_incidents_class'
down_revision = '0106_incidents_resolution_code'
branch_labels = None
depends_on = '0301_timetable'  # the periods the classes are read from

SCHOOL_TZ = ZoneInfo("Asia/Bishkek")  # as policy_server.timetable.service when this was written


def upgrade() -> None:
    op.add_column("incidents", sa.Column("class_id", sa.Integer, nullable=True))
    op.create_index("ix_incidents_class_id", "incidents", ["class_id"])
    bind = op.get_bind()
    periods = defaultdict(list)
    for room_id, weekday, starts, ends, class_id in bind.execute(sa.text(
            "SELECT room_id, weekday, starts, ends, class_id FROM timetable_periods "
            "WHERE class_id IS NOT NULL")):
        periods[room_id].append((weekday, starts, ends, class_id))
    if not periods:
        return
    rows = bind.execute(sa.text(
        "SELECT i.id, i.first_seen_at, w.room_id FROM incidents i JOIN workstations w ON w.id = i.agent_id "
        "WHERE w.room_id IS NOT NULL")).all()
    for incident_id, first_seen_at, room_id in rows:
        if isinstance(first_seen_at, str):  # SQLite without the model's type
            first_seen_at = datetime.fromisoformat(first_seen_at)
        if first_seen_at.tzinfo is None:
            first_seen_at = first_seen_at.replace(tzinfo=UTC)
        local = first_seen_at.astimezone(SCHOOL_TZ)
        hhmm = local.strftime("%H:%M")
        class_id = next((c for weekday, starts, ends, c in periods.get(room_id, ())
                         if weekday == local.weekday() and starts <= hhmm < ends), None)
        if class_id is not None:
            bind.execute(sa.text("UPDATE incidents SET class_id = :c WHERE id = :i"),
                         {"c": class_id, "i": incident_id})


def downgrade() -> None:
    op.drop_index("ix_incidents_class_id", table_name="incidents")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("class_id")
