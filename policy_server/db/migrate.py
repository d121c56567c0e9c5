"""Apply the Alembic migrations in `policy_server/migrations` to an engine.

Used by `kalkan-server migrate` and on every start.  Idempotent: an up-to-date database
is left alone.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


MIGRATE_LOCK_KEY = 0x4B414C4B4D49  # "KALKMI": migrations, one process at a time


def upgrade(engine: Engine) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas on several hosts may start together (docs/operations.md "Scale out"):
            # one migrates, the others wait here and then find nothing left to do.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK_KEY})
        cfg.attributes["connection"] = conn
        # "heads": each domain's migrations may branch from the last shared revision and
        # are applied together (they touch their own tables); see migrations/README.md.
        command.upgrade(cfg, "heads")


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        heads = sorted(MigrationContext.configure(conn).get_current_heads())
    return "+".join(heads) if heads else None


def head_revision() -> str | None:
    """The single head, or the heads joined by '+' when domains branched."""
    heads = sorted(ScriptDirectory.from_config(alembic_config()).get_heads())
    return "+".join(heads) if heads else None
