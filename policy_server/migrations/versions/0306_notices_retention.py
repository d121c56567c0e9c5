"""Notices: what each text was made from, and when retention took the student out (001 §2.15)

`params` lets retention write a notice's text again without the student's name, account or
seat (the stored text is already in the reader's language); `personal_removed_at` marks the
notices it has done (each once) and lets the page say why.  Notices stored before this
revision have no `params`: retention rebuilds their text from the lesson or incident the
notice links to (notices/retention.py).

Revision ID: 0306_notices_retention
Revises: 0303_notices
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0306_notices_retention'
down_revision = '0303_notices'
branch_labels = None
depends_on = None


def upgrade() -> None:
    json_type = sa.JSON().with_variant(JSONB(), "postgresql")
    # (ADD COLUMN works in place on both; SQLite needs the batch copy only to drop one)
    op.add_column("notices", sa.Column("params", json_type, nullable=False, server_default="{}"))
    op.add_column("notices", sa.Column("personal_removed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notices") as batch:
        batch.drop_column("personal_removed_at")
        batch.drop_column("params")
