"""Incidents by workstation and by status: indexes for a seat's incidents, its open conditions and the open incidents by rule (issue 11)

The fleet's seat page lists a workstation's incidents, and the incident engine closes a
workstation's open condition incidents (a part down, the antivirus not working) when its
report clears them: both look incidents up by `agent_id` and `status`.

Revision ID: 0104_incidents_by_agent
Revises: 0004
Create Date: 2026-12-04
"""
from alembic import op

revision = '0104_incidents_by_agent'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_incidents_agent_status", "incidents", ["agent_id", "status"])
    # the open incidents by rule (fleet: open integrity changes per seat; the list's status filter)
    op.create_index("ix_incidents_status_rule", "incidents", ["status", "rule"])
    # the incident list, newest first (ORDER BY last_seen_at DESC, id DESC LIMIT 25): no sort
    # of every incident of the year
    op.create_index("ix_incidents_last_seen", "incidents", ["last_seen_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_incidents_last_seen", table_name="incidents")
    op.drop_index("ix_incidents_status_rule", table_name="incidents")
    op.drop_index("ix_incidents_agent_status", table_name="incidents")
