"""ISUO register, consents, address plan, imports of ISUO's access records, settings, reviews

Revision ID: 0201_isuo_register
Revises: 0004
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0201_isuo_register"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "isuo_users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("full_name", sa.String(200), nullable=False),
        sa.Column("position", sa.String(200), nullable=False, server_default=""),
        sa.Column("isuo_role", sa.String(16), nullable=False),
        sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id"), nullable=True),
        sa.Column("order_number", sa.String(64), nullable=False, server_default=""),
        sa.Column("order_date", sa.Date, nullable=True),
        sa.Column("obligation_signed_on", sa.Date, nullable=True),
        sa.Column("obligation_instructed_by", sa.String(200), nullable=False, server_default=""),
        sa.Column("obligation_scan_sha256", sa.String(64), nullable=True),
        sa.Column("obligation_scan_name", sa.String(200), nullable=True),
        sa.Column("obligation_file_number", sa.String(64), nullable=True),
        sa.Column("blocked_on", sa.Date, nullable=True),
        sa.Column("blocked_reason", sa.String(500), nullable=False, server_default=""),
        sa.Column("left_on", sa.Date, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "isuo_logins",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("isuo_users.id"), nullable=False, index=True),
        sa.Column("login", sa.String(128), nullable=False, unique=True),
    )
    op.create_table(
        "isuo_consents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subject_name", sa.String(200), nullable=False),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("given_on", sa.Date, nullable=False),
        sa.Column("scope", sa.String(500), nullable=False, server_default=""),
        sa.Column("withdrawn_on", sa.Date, nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "isuo_address_plan",
        sa.Column("ip", sa.String(45), primary_key=True),
        sa.Column("seat", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(36), sa.ForeignKey("workstations.id"), nullable=True),
        sa.Column("note", sa.String(200), nullable=False, server_default=""),
    )
    op.create_table(
        "isuo_sources",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("mapping", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "isuo_imports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source_id", sa.Integer, sa.ForeignKey("isuo_sources.id"), nullable=False),
        sa.Column("file_name", sa.String(200), nullable=False),
        sa.Column("file_sha256", sa.String(64), nullable=False),
        sa.Column("rows_total", sa.Integer, nullable=False),
        sa.Column("rows_new", sa.Integer, nullable=False),
        sa.Column("first_at", TS, nullable=True),
        sa.Column("last_at", TS, nullable=True),
        sa.Column("actor", sa.String(64), nullable=False, server_default=""),
        sa.Column("imported_at", TS, nullable=False),
    )
    op.create_table(
        "isuo_records",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("row_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("import_id", sa.Integer, sa.ForeignKey("isuo_imports.id"), nullable=False),
        sa.Column("login", sa.String(128), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("action", sa.String(64), nullable=False, server_default=""),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("record_type", sa.String(64), nullable=False, server_default=""),
        sa.Column("seat", sa.String(64), nullable=True),
        sa.Column("agent_id", sa.String(36), nullable=True),
        sa.Column("proxy_access_id", sa.Integer, nullable=True),
    )
    op.create_index("ix_isuo_records_at", "isuo_records", ["at"])
    op.create_index("ix_isuo_records_login", "isuo_records", ["login", "at"])
    op.create_table(
        "isuo_settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", JSON, nullable=True),
    )
    op.create_table(
        "isuo_holidays",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
    )
    op.create_table(
        "isuo_reviews",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("term", sa.String(64), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("opened_by", sa.String(64), nullable=False, server_default=""),
        sa.Column("signed_at", TS, nullable=True),
        sa.Column("signed_by", sa.String(64), nullable=True),
        sa.Column("signer_name", sa.String(200), nullable=True),
        sa.Column("signed_on", sa.Date, nullable=True),
        sa.Column("next_due_on", sa.Date, nullable=True),
    )
    op.create_table(
        "isuo_review_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("review_id", sa.Integer, sa.ForeignKey("isuo_reviews.id"), nullable=False, index=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("isuo_users.id"), nullable=False),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("decided_at", TS, nullable=True),
        sa.UniqueConstraint("review_id", "user_id"),
    )


def downgrade() -> None:
    for table in (
        "isuo_review_items",
        "isuo_reviews",
        "isuo_holidays",
        "isuo_settings",
        "isuo_records",
        "isuo_imports",
        "isuo_sources",
        "isuo_address_plan",
        "isuo_consents",
        "isuo_logins",
        "isuo_users",
    ):
        op.drop_table(table)
