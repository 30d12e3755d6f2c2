"""Engines for the job database: SQLite tuned for several writers, or PostgreSQL by URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hubferry.errors import ConfigError

#: How long a SQLite writer waits for the write lock before failing with "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30.0
#: Execution option naming the SQLite ``BEGIN`` mode; the store's writes use ``IMMEDIATE`` so a
#: transaction that reads before it writes never hits an unretryable lock upgrade.
SQLITE_BEGIN_OPTION = "hubferry_sqlite_begin"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC: the store's default clock."""
    return datetime.now(UTC)


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of a SQLite database file."""
    return f"sqlite+pysqlite:///{Path(path).expanduser().resolve()}"


def make_engine(url: str, *, echo: bool = False, busy_timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> Engine:
    """An engine for ``url``.

    SQLite files get WAL (readers never block the writer), a busy timeout, foreign keys and
    explicit ``BEGIN``s (pysqlite's implicit transactions are disabled). ``postgresql://`` URLs
    without a driver use psycopg 3.

    Raises:
        ConfigError: the URL is neither SQLite nor PostgreSQL.
    """
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, echo=echo, busy_timeout_s=busy_timeout_s)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(parsed, echo=echo, pool_pre_ping=True)
    raise ConfigError(
        f"unsupported database URL scheme {parsed.drivername!r} in HUBFERRY_DATABASE_URL",
        setting="database_url",
        hint="Use sqlite:///path/to/jobs.db or postgresql://user@host/dbname.",
    )


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction meant to write: ``BEGIN IMMEDIATE`` on SQLite, an ordinary one elsewhere."""
    with engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            yield conn


def _create_private(path: Path) -> None:
    """Create the database file 0600 in a 0700 folder (SQLite gives its -wal and -shm files the same mode)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def _sqlite_engine(url: sa.URL, *, echo: bool, busy_timeout_s: float) -> Engine:
    engine = sa.create_engine(
        url,
        echo=echo,
        connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
    )
    in_memory = url.database in (None, "", ":memory:")
    if not in_memory:
        _create_private(Path(str(url.database)))

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Transactions are begun explicitly below, so SAVEPOINT and transactional DDL work.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL is durable against application crashes (not power loss) and much faster.
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine
