"""Passwords of service users: argon2id hashes, random initial passwords, and the rules a new one must meet."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hubferry.errors import ValidationError

#: Shortest password a user may choose (generated ones are longer).
MIN_PASSWORD_CHARS = 10
#: Longest password accepted: hashing cost grows with length, and nobody types more.
MAX_PASSWORD_CHARS = 256

# argon2-cffi's defaults are RFC 9106's low-memory profile (argon2id, 64 MiB, t=3, p=4).
_hasher = PasswordHasher()
#: Verified against when the user does not exist, so an unknown name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def generate_password() -> str:
    """A random initial password (24 url-safe characters, 144 bits)."""
    return secrets.token_urlsafe(18)


def validate_password(password: object) -> str:
    """Return ``password`` if a user may choose it.

    Raises:
        ValidationError: naming the field ``password`` (the password is never quoted).
    """
    if not isinstance(password, str):
        raise ValidationError("the password must be a string", field="password")
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValidationError(f"the password is shorter than {MIN_PASSWORD_CHARS} characters", field="password",
                              hint="choose a longer one; a passphrase of several words is easy to type")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValidationError(f"the password is longer than {MAX_PASSWORD_CHARS} characters", field="password")
    return password


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string: algorithm, parameters, salt and hash) to store."""
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash``; with no hash (unknown user) it takes as long and says no."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than today's."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return False
