"""Alembic migrations of the job database, runnable from code without an ``alembic.ini``."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from hubferry.store.database import make_engine, write_transaction

#: Arbitrary constant for ``pg_advisory_xact_lock``: serialises concurrent upgrades on PostgreSQL.
_PG_MIGRATION_LOCK = 0x6875626665727279  # "hubferry"

SCRIPT_LOCATION = Path(__file__).resolve().parent


def alembic_config() -> Config:
    """An Alembic config pointing at these migrations (for ``command.*`` calls)."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    return config


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Bring the database at ``url_or_engine`` up to ``revision``; a no-op when it is already there.

    Concurrent callers are safe: PostgreSQL takes an advisory lock, SQLite the write lock.
    """
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with write_transaction(engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


def head_revision() -> str:
    """The newest revision these migrations define."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` before the first upgrade."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
