"""Users and access tokens: tokens are stored only as sha256 hashes and carry a read or write role."""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Engine, delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from hubferry.errors import ValidationError

from . import storage
from .httperrors import HubHTTPError

_TOKEN_ALPHABET = string.ascii_letters
#: Random characters after the ``hf_`` prefix, as in Hub user access tokens.
TOKEN_RANDOM_CHARS = 34

_USER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9])?$")
#: Names that would shadow registry routes.
RESERVED_NAMES = frozenset(
    {"api", "datasets", "spaces", "models", "kernels", "health", "lfs-storage", "lfs-blobs", "settings"}
)
#: Characters of a token shown to tell tokens apart (``hf_`` and 6 of its 34 random letters).
PREFIX_CHARS = 9
#: ``last_used_at`` is written at most this often per token, so reads do not all become writes.
LAST_USED_RESOLUTION_S = 60.0


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user and the role of the token used, or anonymous (``user is None``)."""

    user: str | None
    role: str = "read"
    token_name: str = ""
    token_id: int | None = None


ANONYMOUS = Principal(None)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def validate_user_name(user: str) -> None:
    """Raises ``ValidationError`` unless ``user`` is a valid, unreserved namespace name."""
    if not _USER_NAME.match(user) or "--" in user or ".." in user:
        raise ValidationError(
            f"Invalid user name {user!r}: use letters, digits, '-', '_' or '.', not at either end",
            field="user",
        )
    if user.lower() in RESERVED_NAMES:
        raise ValidationError(f"User name {user!r} is reserved", field="user")


def create_token(engine: Engine, user: str, *, read_only: bool = False, display_name: str = "") -> str:
    """Create ``user`` if needed and a new token for it.

    Returns:
        The token (``hf_`` + 34 letters); only its hash is stored.
    """
    validate_user_name(user)
    token = "hf_" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(TOKEN_RANDOM_CHARS))
    now = time.time()
    with storage.writing(engine) as conn:
        if conn.execute(select(storage.users.c.name).where(storage.users.c.name == user)).first() is None:
            conn.execute(insert(storage.users).values(name=user, created_at=now))
        conn.execute(
            insert(storage.tokens).values(
                user=user,
                token_sha256=hash_token(token),
                role="read" if read_only else "write",
                display_name=display_name or ("read" if read_only else "write"),
                created_at=now,
                prefix=token[:PREFIX_CHARS],
            )
        )
    return token


def authenticate(engine: Engine, authorization: str | None) -> Principal:
    """The principal behind an ``Authorization`` header.

    Raises:
        HubHTTPError: 401 if a token is given but unknown or malformed.
    """
    if not authorization:
        return ANONYMOUS
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HubHTTPError(401, "Invalid credentials in Authorization header", code="Unauthorized")
    principal = principal_for_token(engine, token.strip())
    if principal is None:
        raise HubHTTPError(401, "Invalid user token", code="Unauthorized")
    return principal


def principal_for_token(engine: Engine, token: str) -> Principal | None:
    """Who ``token`` belongs to (``None`` if unknown); records when the token was last used."""
    return _principal(engine, storage.tokens.c.token_sha256 == hash_token(token))


def principal_for_token_id(engine: Engine, token_id: int) -> Principal | None:
    """Who token ``token_id`` belongs to, if it still exists (sessions are bound to a token id)."""
    return _principal(engine, storage.tokens.c.id == token_id)


def _principal(engine: Engine, condition: ColumnElement[bool]) -> Principal | None:
    t = storage.tokens.c
    with storage.reading(engine) as conn:
        row = conn.execute(select(t.id, t.user, t.role, t.display_name, t.last_used_at).where(condition)).first()
    if row is None:
        return None
    now = time.time()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION_S:
        # In the background: the write may wait for a long commit's lock, and the caller should not.
        threading.Thread(target=_touch, args=(engine, row.id, now), name="token-last-used", daemon=True).start()
    return Principal(row.user, row.role, row.display_name, row.id)


def _touch(engine: Engine, token_id: int, now: float) -> None:
    try:
        with storage.writing(engine) as conn:
            conn.execute(update(storage.tokens).where(storage.tokens.c.id == token_id).values(last_used_at=now))
    except SQLAlchemyError:  # best effort: a missed "last used" time is not worth an error
        pass


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a token: never the token itself."""

    id: int
    user: str
    name: str
    role: str
    prefix: str
    created_at: float
    last_used_at: float | None


def list_tokens(engine: Engine, user: str | None = None) -> list[TokenInfo]:
    """Tokens of ``user`` (of everyone if ``None``), oldest first."""
    t = storage.tokens.c
    query = select(t.id, t.user, t.display_name, t.role, t.prefix, t.created_at, t.last_used_at).order_by(t.id)
    if user is not None:
        query = query.where(t.user == user)
    with storage.reading(engine) as conn:
        rows = conn.execute(query).all()
    return [
        TokenInfo(r.id, r.user, r.display_name, r.role, r.prefix or "hf_", r.created_at, r.last_used_at) for r in rows
    ]


def find_token(engine: Engine, id_or_prefix: str, user: str | None = None) -> TokenInfo:
    """The one token with this id, or whose prefix starts with ``id_or_prefix`` (of ``user`` if given).

    Raises:
        ValidationError: no such token, or the prefix names several.
    """
    tokens = list_tokens(engine, user)
    if id_or_prefix.isdecimal():
        matches = [info for info in tokens if info.id == int(id_or_prefix)]
    elif id_or_prefix.startswith("hf_") and len(id_or_prefix) > 3:
        matches = [info for info in tokens if info.prefix.startswith(id_or_prefix[:PREFIX_CHARS])]
        matches = [info for info in matches if len(info.prefix) > 3]  # tokens from before prefixes were kept
    else:
        raise ValidationError(
            f"{id_or_prefix!r} is neither a token id nor a token prefix such as hf_AbCdEf", field="token"
        )
    if not matches:
        raise ValidationError(f"No token matches {id_or_prefix!r}; 'hubferry hub token list' shows them", field="token")
    if len(matches) > 1:
        ids = ", ".join(str(info.id) for info in matches)
        raise ValidationError(f"{id_or_prefix!r} matches several tokens (ids {ids}); give the id", field="token")
    return matches[0]


def revoke_token(engine: Engine, token_id: int) -> None:
    """Delete a token: it stops working at once, and so do page sessions signed in with it."""
    with storage.writing(engine) as conn:
        conn.execute(delete(storage.tokens).where(storage.tokens.c.id == token_id))


def require_user(principal: Principal) -> str:
    """The caller's user name; 401 for anonymous calls."""
    if principal.user is None:
        raise HubHTTPError(401, "Invalid user token", code="Unauthorized")
    return principal.user


def require_write(principal: Principal) -> str:
    """The caller's user name; 401 for anonymous calls, 403 for read-only tokens."""
    user = require_user(principal)
    if principal.role != "write":
        raise HubHTTPError(
            403,
            "You have read access but not the required permissions for this operation (read-only token)",
            code="Forbidden",
        )
    return user
