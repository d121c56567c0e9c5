"""agent_upgrades: rollouts of a newer agent package and each seat's result

Revision ID: 0402_agent_upgrades
Revises: 0004
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op


revision = '0402_agent_upgrades'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_rollouts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "agent_rollout_seats",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("rollout_id", sa.Integer, sa.ForeignKey("agent_rollouts.id"), nullable=False),
        sa.Column("agent_id", sa.String(36), sa.ForeignKey("workstations.id"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("from_version", sa.String(64), nullable=False),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("reason_code", sa.String(32), nullable=False),
    )
    op.create_index("ix_rollout_seats_rollout_agent", "agent_rollout_seats", ["rollout_id", "agent_id"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("ix_rollout_seats_rollout_agent", table_name="agent_rollout_seats")
    op.drop_table("agent_rollout_seats")
    op.drop_table("agent_rollouts")
