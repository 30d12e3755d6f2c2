"""Accounts of ``hubferry serve`` in the job database: users, API tokens, sessions, failed sign-ins.

Secrets never reach these tables in the clear: passwords are argon2 hashes, API tokens and session
ids are stored as their sha256, so a copy of the database signs nobody in. The schema is created by
migration 0004.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from hubferry.errors import ValidationError
from hubferry.store.database import utcnow, write_transaction
from hubferry.store.tables import UTCDateTime, metadata

users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("is_admin", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("password_changed_at", UTCDateTime, nullable=False),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    # Public: shown in listings and used to revoke; the token itself is kept only as its sha256.
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user_name", sa.String(200), sa.ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
    sa.Index("ix_api_tokens_user", "user_name"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_name", sa.String(200), sa.ForeignKey("users.name", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_sessions_user", "user_name"),
    sa.Index("ix_sessions_expires", "expires_at"),
)

#: Failed sign-ins per throttling key (``pair:<user>|<ip>``, ``user:<name>``, ``ip:<address>``).
signin_failures = sa.Table(
    "signin_failures",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_failed_at", UTCDateTime, nullable=False),
    sa.Column("locked_until", UTCDateTime),
)


@dataclass(frozen=True)
class User:
    """A user of the service (what may be shown: never the password hash)."""

    name: str
    is_admin: bool
    created_at: datetime
    password_changed_at: datetime


@dataclass(frozen=True)
class ApiToken:
    """An API token's record: its public id and label, never the token."""

    id: str
    user_name: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def to_dict(self) -> dict[str, str | None]:
        """What may be shown (CLI ``--json``, the API): never the token, nor whose (the caller knows)."""
        return {"id": self.id, "label": self.label, "created_at": self.created_at.isoformat(),
                "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None}


@dataclass(frozen=True)
class Failures:
    """A throttling key's failed sign-ins."""

    count: int
    last_failed_at: datetime
    locked_until: datetime | None


#: ``(previous failures or None, now) -> failures after this one``: the throttling policy.
FailurePolicy = Callable[["Failures | None", datetime], Failures]


def _user(row: RowMapping) -> User:
    return User(row["name"], bool(row["is_admin"]), row["created_at"], row["password_changed_at"])


def _token(row: RowMapping) -> ApiToken:
    return ApiToken(row["id"], row["user_name"], row["label"], row["created_at"], row["last_used_at"],
                    row["revoked_at"])


_USER_COLUMNS = (users.c.name, users.c.is_admin, users.c.created_at, users.c.password_changed_at)


class AccountStore:
    """Users, API tokens, sessions and failed sign-ins; every write is one transaction.

    Args:
        engine: from :func:`~hubferry.store.database.make_engine`, migrated to 0004 or later.
        clock: the current time (tests pass a fake).
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    # -- users -----------------------------------------------------------------------------------

    def add_user(self, name: str, password_hash: str, *, is_admin: bool) -> User:
        """Create a user.

        Raises:
            ValidationError: a user of that name exists (field ``name``).
        """
        now = self.clock()
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(users.insert().values(name=name, password_hash=password_hash, is_admin=is_admin,
                                                   created_at=now, password_changed_at=now))
        except sa.exc.IntegrityError:
            raise ValidationError(f"a user named {name!r} exists", field="name",
                                  hint="pick another name, or `hubferry users set-password NAME`") from None
        return User(name, is_admin, now, now)

    def user(self, name: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*_USER_COLUMNS).where(users.c.name == name)).mappings().first()
        return _user(row) if row else None

    def users(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*_USER_COLUMNS).order_by(users.c.name)).mappings().all()
        return [_user(r) for r in rows]

    def count_users(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one())

    def password_hash(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(users.c.password_hash).where(users.c.name == name)).scalar_one_or_none()

    def set_password_hash(self, name: str, password_hash: str, *, sign_out: bool) -> bool:
        """Replace the hash; with ``sign_out`` also end every session of the user. ``False``: no such user."""
        with write_transaction(self.engine) as conn:
            changed = conn.execute(users.update().where(users.c.name == name).values(
                password_hash=password_hash, password_changed_at=self.clock())).rowcount
            if changed and sign_out:
                conn.execute(sessions.delete().where(sessions.c.user_name == name))
        return bool(changed)

    def rehash_password(self, name: str, old_hash: str, new_hash: str) -> None:
        """Upgrade a hash to current parameters, unless the password changed meanwhile."""
        with write_transaction(self.engine) as conn:
            conn.execute(users.update().where(users.c.name == name, users.c.password_hash == old_hash)
                         .values(password_hash=new_hash))

    # -- API tokens ------------------------------------------------------------------------------

    def add_token(self, user_name: str, token_id: str, label: str, token_hash: str) -> ApiToken:
        now = self.clock()
        with write_transaction(self.engine) as conn:
            conn.execute(api_tokens.insert().values(id=token_id, user_name=user_name, label=label,
                                                    token_hash=token_hash, created_at=now))
        return ApiToken(token_id, user_name, label, now, None, None)

    def token_owner(self, token_hash: str) -> tuple[User, str, str] | None:
        """The user of a live (unrevoked) token with this hash, the token's id and its stored hash."""
        query = (sa.select(*_USER_COLUMNS, api_tokens.c.id.label("token_id"), api_tokens.c.token_hash)
                 .join(users, users.c.name == api_tokens.c.user_name)
                 .where(api_tokens.c.token_hash == token_hash, api_tokens.c.revoked_at.is_(None)))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return (_user(row), row["token_id"], row["token_hash"]) if row else None

    def tokens(self, user_name: str) -> list[ApiToken]:
        """The user's live tokens, oldest first."""
        query = (sa.select(api_tokens.c.id, api_tokens.c.user_name, api_tokens.c.label, api_tokens.c.created_at,
                           api_tokens.c.last_used_at, api_tokens.c.revoked_at)
                 .where(api_tokens.c.user_name == user_name, api_tokens.c.revoked_at.is_(None))
                 .order_by(api_tokens.c.created_at, api_tokens.c.id))
        with self.engine.connect() as conn:
            return [_token(r) for r in conn.execute(query).mappings().all()]

    def revoke_token(self, user_name: str, token_id: str) -> bool:
        """Revoke one of the user's tokens; ``False`` when the user has no live token of that id."""
        with write_transaction(self.engine) as conn:
            return bool(conn.execute(
                api_tokens.update()
                .where(api_tokens.c.id == token_id, api_tokens.c.user_name == user_name,
                       api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self.clock())
            ).rowcount)

    def record_token_use(self, uses: Mapping[str, datetime]) -> None:
        """Set ``last_used_at`` of each token id (never moving it backwards)."""
        if not uses:
            return
        with write_transaction(self.engine) as conn:
            for token_id, at in uses.items():
                conn.execute(api_tokens.update().where(
                    api_tokens.c.id == token_id,
                    sa.or_(api_tokens.c.last_used_at.is_(None), api_tokens.c.last_used_at < at),
                ).values(last_used_at=at))

    # -- sessions --------------------------------------------------------------------------------

    def add_session(self, id_hash: str, user_name: str, expires_at: datetime) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(sessions.delete().where(sessions.c.expires_at <= self.clock()))
            conn.execute(sessions.insert().values(id_hash=id_hash, user_name=user_name, created_at=self.clock(),
                                                  expires_at=expires_at))

    def session_user(self, id_hash: str) -> tuple[User, datetime] | None:
        """The user of an unexpired session, and when the session expires."""
        query = (sa.select(*_USER_COLUMNS, sessions.c.expires_at)
                 .join(users, users.c.name == sessions.c.user_name)
                 .where(sessions.c.id_hash == id_hash, sessions.c.expires_at > self.clock()))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return (_user(row), row["expires_at"]) if row else None

    def delete_session(self, id_hash: str) -> bool:
        with write_transaction(self.engine) as conn:
            return bool(conn.execute(sessions.delete().where(sessions.c.id_hash == id_hash)).rowcount)

    # -- failed sign-ins -------------------------------------------------------------------------

    def failures(self, keys: list[str]) -> dict[str, Failures]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(signin_failures).where(signin_failures.c.key.in_(keys))).mappings().all()
        return {r["key"]: Failures(r["failures"], r["last_failed_at"], r["locked_until"]) for r in rows}

    def record_failure(self, key: str, policy: FailurePolicy) -> Failures:
        """Count one failed sign-in for ``key``; ``policy`` decides the new count and any lock."""
        for attempt in range(2):
            try:
                with write_transaction(self.engine) as conn:
                    row = conn.execute(sa.select(signin_failures).where(signin_failures.c.key == key)
                                       .with_for_update()).mappings().first()
                    before = Failures(row["failures"], row["last_failed_at"], row["locked_until"]) if row else None
                    after = policy(before, self.clock())
                    values = {"failures": after.count, "last_failed_at": after.last_failed_at,
                              "locked_until": after.locked_until}
                    if row is None:
                        conn.execute(signin_failures.insert().values(key=key, **values))
                    else:
                        conn.execute(signin_failures.update().where(signin_failures.c.key == key).values(**values))
                return after
            except sa.exc.IntegrityError:  # a concurrent first failure inserted the row: count on it
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def clear_failures(self, key: str) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(signin_failures.delete().where(signin_failures.c.key == key))
