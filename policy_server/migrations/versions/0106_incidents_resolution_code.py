"""Incidents: a resolution the system wrote is stored as a code and params, translated on read

The auto-close of a condition incident ("the condition cleared by itself") used to store an
English sentence in `resolution`; the reader saw English whatever their language.  Now the
engine stores `resolution_code` (e.g. `condition_cleared`) and `resolution_params` (e.g. the
moment it cleared), and the reader's view says it in ky/ru/en (`incidents.service.
resolution_text`).  A person's own resolution stays free text in `resolution`.  The English
sentences already stored are turned into the code here.

Revision ID: 0106_incidents_resolution_code
Revises: 0105_incidents_scrub_pii
Create Date: 2026-12-04
"""
from __future__ import annotations

import re

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
from alembic import op

revision = '0106_incidents_resolution_code'
down_revision = '0105_incidents_scrub_pii'
branch_labels = None
depends_on = None

_CLEARED = re.compile(r"^The condition cleared by itself: the agent reported at "
                      r"(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}) UTC that it is gone\.$")
_JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("incidents", sa.Column("resolution_code", sa.String(64), nullable=True))
    op.add_column("incidents", sa.Column("resolution_params", _JSON, nullable=True))
    incidents = sa.table("incidents", sa.column("id", sa.Integer), sa.column("resolution", sa.Text),
                         sa.column("resolution_code", sa.String), sa.column("resolution_params", _JSON))
    bind = op.get_bind()
    rows = bind.execute(sa.select(incidents.c.id, incidents.c.resolution)
                        .where(incidents.c.resolution.like("The condition cleared by itself:%"))).all()
    for incident_id, text in rows:
        match = _CLEARED.match(text or "")
        if match is None:
            continue
        cleared_at = f"{match.group(1)}T{match.group(2)}:00+00:00"
        bind.execute(incidents.update().where(incidents.c.id == incident_id).values(
            resolution=None, resolution_code="condition_cleared",
            resolution_params={"cleared_at": cleared_at}))


def downgrade() -> None:
    incidents = sa.table("incidents", sa.column("id", sa.Integer), sa.column("resolution", sa.Text),
                         sa.column("resolution_code", sa.String), sa.column("resolution_params", _JSON))
    bind = op.get_bind()
    for incident_id, params in bind.execute(sa.select(incidents.c.id, incidents.c.resolution_params)
                                            .where(incidents.c.resolution_code == "condition_cleared")).all():
        at = str((params or {}).get("cleared_at", ""))[:16].replace("T", " ")
        bind.execute(incidents.update().where(incidents.c.id == incident_id).values(
            resolution=f"The condition cleared by itself: the agent reported at {at} UTC that it is gone."))
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("resolution_params")
        batch.drop_column("resolution_code")
