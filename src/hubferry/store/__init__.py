"""The durable job database: jobs, their timeline and publish leases, on SQLite or PostgreSQL."""

# Every module that defines tables, so ``tables.metadata`` always describes the whole schema.
from hubferry.store import accounts, job_queries, outbox, progress_history  # noqa: F401
from hubferry.store.database import make_engine, sqlite_url
from hubferry.store.jobs import JobStore
from hubferry.store.migrations import upgrade
from hubferry.store.publishes import Publish, PublishState, PublishStore

__all__ = ["JobStore", "Publish", "PublishState", "PublishStore", "make_engine", "sqlite_url", "upgrade"]
