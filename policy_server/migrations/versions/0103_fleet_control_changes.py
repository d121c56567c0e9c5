"""Fleet: when each seat's control started passing or failing (issue 11)

Revision ID: 0103_fleet_control_changes
Revises: 0004
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0103_fleet_control_changes'
down_revision = '0004'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "fleet_control_changes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("agent_id", sa.String(36), sa.ForeignKey("workstations.id"), nullable=False),
        sa.Column("control", sa.String(32), nullable=False),
        sa.Column("passing", sa.Boolean, nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", JSON, nullable=False),
    )
    op.create_index("ix_fleet_changes_agent", "fleet_control_changes", ["agent_id", "control", "id"])


def downgrade() -> None:
    op.drop_index("ix_fleet_changes_agent", table_name="fleet_control_changes")
    op.drop_table("fleet_control_changes")
