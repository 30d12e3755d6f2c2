"""Accounts in the job database, on SQLite and PostgreSQL: migration 0004, argon2 passwords, hashed API
tokens with revocation and throttled last-use, expiring sessions, and sign-in lockouts."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from hubferry.accounts import Accounts
from hubferry.accounts.throttle import FIRST_LOCK, THRESHOLDS
from hubferry.accounts.tokens import LastUseRecorder
from hubferry.accounts.users import SESSION_TTL
from hubferry.errors import PermanentError, TransientError, ValidationError
from hubferry.store import make_engine, sqlite_url, upgrade
from hubferry.store.accounts import AccountStore
from hubferry.store.migrations import current_revision

ACCOUNT_TABLES = {"users", "api_tokens", "sessions", "signin_failures"}


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    url = sqlite_url(tmp_path / "jobs.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def accounts(engine, clock):
    return Accounts(AccountStore(engine, clock=clock), clock=clock)


def test_migration_0004_adds_and_removes_the_account_tables(engine):
    from alembic import command

    from hubferry.store.migrations import alembic_config

    assert current_revision(engine) is not None and ACCOUNT_TABLES <= set(sa.inspect(engine).get_table_names())
    with engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    assert not ACCOUNT_TABLES & set(sa.inspect(engine).get_table_names())
    upgrade(engine)
    assert ACCOUNT_TABLES <= set(sa.inspect(engine).get_table_names())


def test_passwords_are_argon2id_hashes_checked_at_sign_in(accounts):
    user, password = accounts.create_user("alice", admin=True)
    assert user.is_admin and len(password) >= 20
    stored = accounts.store.password_hash("alice")
    assert stored.startswith("$argon2id$") and password not in stored
    assert accounts.sign_in("alice", password, "10.0.0.1").user.name == "alice"
    with pytest.raises(PermanentError) as wrong:
        accounts.sign_in("alice", password + "x", "10.0.0.1")
    with pytest.raises(PermanentError) as unknown:
        accounts.sign_in("nobody", password, "10.0.0.1")
    assert wrong.value.message == unknown.value.message and wrong.value.status == 401


def test_a_chosen_password_replaces_the_old_one_and_ends_sessions(accounts):
    _, first = accounts.create_user("alice")
    session = accounts.sign_in("alice", first, "10.0.0.1")
    with pytest.raises(ValidationError) as short:
        accounts.set_password("alice", "short")
    assert short.value.field == "password" and accounts.session(session.secret) is not None
    accounts.set_password("alice", "correct horse battery staple")
    assert accounts.session(session.secret) is None
    with pytest.raises(PermanentError):
        accounts.sign_in("alice", first, "10.0.0.1")
    accounts.sign_in("alice", "correct horse battery staple", "10.0.0.1")


def test_user_names_are_unique_and_cannot_name_a_job_owner(accounts):
    accounts.create_user("alice")
    with pytest.raises(ValidationError, match="exists"):
        accounts.create_user("alice")
    for bad in ("job:123", "", "a" * 65, "-dash", "al ice", "ali\u202ece"):
        with pytest.raises(ValidationError) as error:
            accounts.create_user(bad)
        assert error.value.field == "name"


def test_api_tokens_are_stored_hashed_and_stop_working_when_revoked(accounts, engine):
    accounts.create_user("alice")
    created = accounts.create_token("alice", "laptop")
    assert created.secret.startswith("hfy_") and len(created.secret) == 36
    assert created.secret not in repr(created)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT token_hash FROM api_tokens")).scalar_one()
    assert created.secret not in stored and len(stored) == 64
    user, token_id = accounts.user_for_token(created.secret)
    assert (user.name, token_id) == ("alice", created.record.id)
    assert accounts.user_for_token(created.secret[:-1] + ("A" if created.secret[-1] != "A" else "B")) is None
    assert not accounts.revoke_token("bob", created.record.id)  # not bob's
    assert accounts.revoke_token("alice", created.record.id)
    assert accounts.user_for_token(created.secret) is None
    assert accounts.tokens("alice") == []


def test_last_use_is_written_in_the_background_and_at_most_once_a_minute_per_token(accounts, clock):
    accounts.create_user("alice")
    created = accounts.create_token("alice")
    assert accounts.tokens("alice")[0].last_used_at is None
    accounts.user_for_token(created.secret)
    accounts.token_uses.flush()
    assert accounts.tokens("alice")[0].last_used_at == clock.now

    writes = []
    gate = threading.Event()

    def slow_write(uses):
        gate.wait(5)
        writes.append(dict(uses))

    recorder = LastUseRecorder(slow_write, resolution_s=60)
    for _ in range(50):
        recorder.used("tok_a", clock.now)  # returns at once although the writer is blocked
    recorder.used("tok_b", clock.now)
    gate.set()
    recorder.flush()
    assert sum(len(w) for w in writes) == 2 and {k for w in writes for k in w} == {"tok_a", "tok_b"}


def test_sessions_expire_and_end_at_sign_out(accounts, clock):
    _, password = accounts.create_user("alice")
    first = accounts.sign_in("alice", password, "10.0.0.1")
    second = accounts.sign_in("alice", password, "10.0.0.2")
    assert first.expires_at == clock.now + SESSION_TTL
    accounts.sign_out(first.secret)
    assert accounts.session(first.secret) is None and accounts.session(second.secret) is not None
    clock.now += SESSION_TTL + timedelta(seconds=1)
    assert accounts.session(second.secret) is None


def test_repeated_failures_lock_sign_in_even_with_the_right_password(accounts, clock):
    _, password = accounts.create_user("alice")
    for _ in range(THRESHOLDS["pair"]):
        with pytest.raises(PermanentError):
            accounts.sign_in("alice", "wrong password!", "10.0.0.9")
    with pytest.raises(TransientError) as locked:
        accounts.sign_in("alice", password, "10.0.0.9")
    assert locked.value.status == 429 and 0 < locked.value.retry_after_s <= FIRST_LOCK.total_seconds()
    accounts.sign_in("alice", password, "10.0.0.10")  # the pair is locked, not the user
    clock.now += FIRST_LOCK + timedelta(seconds=1)
    accounts.sign_in("alice", password, "10.0.0.9")
    assert "pair:alice|10.0.0.9" not in accounts.store.failures(["pair:alice|10.0.0.9"])
