"""health_probe: the row /healthz writes, so "ok" means the database took a real write

Revision ID: 0401_health_probe
Revises: 0004
Create Date: 2026-12-04
"""
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = '0401_health_probe'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "health_probe",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.bulk_insert(table, [{"id": 1, "written_at": datetime.now(UTC)}])


def downgrade() -> None:
    op.drop_table("health_probe")
