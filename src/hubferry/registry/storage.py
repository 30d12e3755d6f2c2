"""Registry metadata in SQLite (WAL) through SQLAlchemy Core: users, tokens, repos, refs, commits, entries.

``lfs_objects`` records each object received through the LFS transfer API (a blob may also hold
regular-file content, which is not listed there).

File contents are not here but in :mod:`hubferry.registry.blobs`; an ``entries`` row records, for
one commit, one file or directory with its git oid, size and sha256.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("name", String, primary_key=True),
    Column("created_at", Float, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user", String, ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
    Column("token_sha256", String, nullable=False, unique=True),
    Column("role", String, nullable=False),  # "read" or "write"
    Column("display_name", String, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("prefix", String, nullable=True),  # the first characters, to tell tokens apart; NULL before v2
    Column("last_used_at", Float, nullable=True),
)

repos = Table(
    "repos",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("type", String, nullable=False),  # "model" or "dataset"
    Column("namespace", String, nullable=False),
    Column("name", String, nullable=False),
    Column("private", Boolean, nullable=False),
    Column("owner", String, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("type", "namespace", "name"),
)

refs = Table(
    "refs",
    metadata,
    Column("repo_id", Integer, ForeignKey("repos.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String, primary_key=True),  # "main", "v1.0", "refs/pr/1"
    Column("kind", String, nullable=False),  # "branch", "tag" or "pr"
    Column("commit_oid", String, nullable=False),
)

commits = Table(
    "commits",
    metadata,
    Column("repo_id", Integer, ForeignKey("repos.id", ondelete="CASCADE"), primary_key=True),
    Column("oid", String, primary_key=True),
    Column("parent_oid", String, nullable=True),
    Column("tree_oid", String, nullable=False),
    Column("author", String, nullable=False),
    Column("title", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("repo_id", Integer, primary_key=True),
    Column("commit_oid", String, primary_key=True),
    Column("path", String, primary_key=True),
    Column("parent_path", String, nullable=False),  # "" at the root
    Column("kind", String, nullable=False),  # "file" or "directory"
    Column("size", Integer, nullable=False),
    Column("oid", String, nullable=False),  # git blob sha1 (of the pointer for LFS), or tree sha1
    Column("sha256", String, nullable=True),  # content sha256 = blob key; NULL for directories
    Column("lfs", Boolean, nullable=False),
    Column("last_commit_oid", String, nullable=False),
    ForeignKeyConstraint(["repo_id", "commit_oid"], ["commits.repo_id", "commits.oid"], ondelete="CASCADE"),
    Index("ix_entries_parent", "repo_id", "commit_oid", "parent_path"),
    Index("ix_entries_sha256", "repo_id", "sha256"),  # "does this repo still hold the blob?" per download
)


lfs_objects = Table(
    "lfs_objects",
    metadata,
    Column("oid", String, primary_key=True),  # sha256; the content is the blob of the same name
    Column("size", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

#: Which namespaces have proved they hold an LFS object (by uploading its bytes). Commits may only
#: name objects granted to their repo's namespace, so knowing a sha256 is not enough to copy a file
#: out of someone else's private repo; storage is still shared (deduplicated) on disk.
lfs_grants = Table(
    "lfs_grants",
    metadata,
    Column("namespace", String, primary_key=True),
    Column("oid", String, primary_key=True),
    Column("created_at", Float, nullable=False),
)


def make_engine(data_dir: Path) -> Engine:
    """An engine on ``<data_dir>/registry.sqlite3`` in WAL mode, with the tables created."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{data_dir / 'registry.sqlite3'}",
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook below issue BEGIN itself
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Writers take the write lock up front so two writers never deadlock on lock upgrades.
        immediate = connection.get_execution_options().get("immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    metadata.create_all(engine)
    _upgrade(engine)
    return engine


#: Columns and indexes added after the first release (by table and name), created on data dirs that predate them.
_UPGRADES = {
    ("tokens", "prefix"): "ALTER TABLE tokens ADD COLUMN prefix VARCHAR",
    ("tokens", "last_used_at"): "ALTER TABLE tokens ADD COLUMN last_used_at FLOAT",
    ("entries", "ix_entries_sha256"): "CREATE INDEX IF NOT EXISTS ix_entries_sha256 ON entries (repo_id, sha256)",
}


def _upgrade(engine: Engine) -> None:
    def missing(connection: Connection) -> list[str]:
        present = {
            table: {row[1] for pragma in ("table_info", "index_list")
                    for row in connection.exec_driver_sql(f"PRAGMA {pragma}({table})")}
            for table in {table for table, _ in _UPGRADES}
        }  # fmt: skip
        return [ddl for (table, name), ddl in _UPGRADES.items() if name not in present[table]]

    with reading(engine) as connection:
        if not missing(connection):
            return
    with writing(engine) as connection:  # checked again under the write lock: another process may have won
        for ddl in missing(connection):
            connection.exec_driver_sql(ddl)


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read transaction (a consistent snapshot under WAL)."""
    with engine.connect() as connection:
        with connection.begin():
            yield connection


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction holding SQLite's write lock from the start; commits on success."""
    with engine.connect().execution_options(immediate=True) as connection:
        with connection.begin():
            yield connection
