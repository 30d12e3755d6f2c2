"""Users and access tokens: tokens are stored only as sha256 hashes and carry a read or write role."""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import time
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select

from hubferry.errors import ValidationError

from . import storage
from .httperrors import HubHTTPError

_TOKEN_ALPHABET = string.ascii_letters
#: Random characters after the ``hf_`` prefix, as in Hub user access tokens.
TOKEN_RANDOM_CHARS = 34

_USER_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9])?$")
#: Names that would shadow registry routes.
RESERVED_NAMES = frozenset({"api", "datasets", "spaces", "models", "kernels", "health", "lfs-storage", "lfs-blobs"})


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user and the role of the token used, or anonymous (``user is None``)."""

    user: str | None
    role: str = "read"
    token_name: str = ""

    @property
    def can_write(self) -> bool:
        return self.user is not None and self.role == "write"


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
    with storage.reading(engine) as conn:
        row = conn.execute(
            select(storage.tokens.c.user, storage.tokens.c.role, storage.tokens.c.display_name).where(
                storage.tokens.c.token_sha256 == hash_token(token.strip())
            )
        ).first()
    if row is None:
        raise HubHTTPError(401, "Invalid user token", code="Unauthorized")
    return Principal(row.user, row.role, row.display_name)


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
