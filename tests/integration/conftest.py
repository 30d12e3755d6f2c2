"""Service fixtures for integration tests: a fresh PostgreSQL schema and an isolated Redis database.

Each fixture skips when its service is unreachable, except with ``CI=true``, where it fails, so a
missing service can never turn CI green by skipping. PostgreSQL comes from
``HUBFERRY_TEST_POSTGRES_URL`` (default: local ``test`` database), Redis from
``HUBFERRY_TEST_REDIS_URL`` (default: local server; the test picks a free numbered database).
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from hubferry.store import make_engine

PG_URL = os.environ.get("HUBFERRY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HUBFERRY_TEST_REDIS_URL", "redis://127.0.0.1:6379")
#: Marks a Redis database as taken by one test, so concurrent test runs pick different ones.
REDIS_CLAIM_KEY = "hubferry-test:claimed-by"


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_admin_engine() -> Iterator[sa.Engine]:
    """An engine on the test PostgreSQL server (for creating and dropping schemas)."""
    engine = make_engine(sa.make_url(PG_URL).update_query_dict({"connect_timeout": "3"}).render_as_string(False))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        _unavailable(f"PostgreSQL unreachable at {PG_URL}: {exc.orig}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin_engine: sa.Engine) -> Iterator[str]:
    """A PostgreSQL URL whose ``search_path`` is a fresh, empty schema, dropped after the test.

    Subprocesses given this URL (``HUBFERRY_DATABASE_URL``) see the same schema.
    """
    schema = f"hubferry_test_{os.getpid()}_{secrets.token_hex(4)}"
    with pg_admin_engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False)
    finally:
        with pg_admin_engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL on a numbered database (1-15) that was empty and is claimed for this test; flushed after."""
    import redis

    base = REDIS_URL.rstrip("/")
    try:
        redis.Redis.from_url(f"{base}/0", socket_connect_timeout=3).ping()
    except redis.exceptions.RedisError as exc:
        _unavailable(f"Redis unreachable at {REDIS_URL}: {exc}")
    claim = f"{os.getpid()}-{secrets.token_hex(4)}"
    for db in random.sample(range(1, 16), 15):
        client = redis.Redis.from_url(f"{base}/{db}")
        # Claim only an empty database; SET NX makes two concurrent tests never share one.
        if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, claim, nx=True):
            break
        client.close()
    else:
        pytest.fail(f"no empty Redis database among 1-15 at {REDIS_URL}")
    try:
        yield f"{base}/{db}"
    finally:
        client.flushdb()
        client.close()
