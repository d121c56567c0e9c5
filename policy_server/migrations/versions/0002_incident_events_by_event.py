"""incident_events indexed by event: which incident holds an event

The incident engine asks it when counting attempts towards a threshold (blocked pages,
001 §2.7), and retention asks it before removing old raw events (001 §2.15).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_incident_events_event', 'incident_events', ['event_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_incident_events_event', table_name='incident_events')
