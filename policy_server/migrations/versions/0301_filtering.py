"""Filtering: category list state, published index artifacts, the report / unblock queue

Revision ID: 0301_filtering
Revises: 0004
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0301_filtering'
down_revision = '0004'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "filter_list_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("etag", sa.String(200)),
        sa.Column("last_modified", sa.String(100)),
        sa.Column("checked_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
    )
    op.create_table(
        "filter_index_artifacts",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("entries", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("build_seconds", sa.Float, nullable=False),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("changes", JSON, nullable=False),
        sa.Column("previous_sha256", sa.String(64)),
    )
    op.create_table(
        "filter_requests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("kinds", JSON, nullable=False),
        sa.Column("seats", JSON, nullable=False),
        sa.Column("comments", JSON, nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("categories", JSON, nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decision", JSON, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("policy_version", sa.Integer),
        sa.Column("expired", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_filter_requests_url_status", "filter_requests", ["url", "status"])
    op.create_table(
        "filter_request_events",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("request_id", sa.Integer, sa.ForeignKey("filter_requests.id"), nullable=False),
        sa.Column("agent_id", sa.String(36)),
        sa.Column("seat", sa.String(64)),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_filter_request_events_agent", "filter_request_events", ["agent_id", "occurred_at"])


def downgrade() -> None:
    op.drop_table("filter_request_events")
    op.drop_table("filter_requests")
    op.drop_table("filter_index_artifacts")
    op.drop_table("filter_list_state")
