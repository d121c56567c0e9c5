"""District level: enrolled schools and their weekly aggregates

Revision ID: 0302_district_schools
Revises: 0004
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0302_district_schools'
down_revision = '0004'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "district_schools",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("code_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("code_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("public_key", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "district_weeks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("school_id", sa.String(36), sa.ForeignKey("district_schools.id"), nullable=False, index=True),
        sa.Column("period", sa.String(32), nullable=False, index=True),
        sa.Column("aggregates", JSON, nullable=False),
        sa.Column("signature", sa.String(200), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("school_id", "period"),
    )


def downgrade() -> None:
    op.drop_table("district_weeks")
    op.drop_table("district_schools")
