"""Users of ``hubferry serve``: create them, set passwords, issue and revoke API tokens, sign in.

The one place that turns a password, an API token or a session id into a :class:`User`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from hubferry.accounts import passwords, throttle, tokens
from hubferry.errors import PermanentError, TransientError, ValidationError
from hubferry.logs import get_logger
from hubferry.store.accounts import AccountStore, ApiToken, User
from hubferry.store.database import utcnow

#: How long a dashboard session lasts (not renewed by use: sign in again after it).
SESSION_TTL = timedelta(hours=12)
#: Longest token label.
MAX_LABEL_CHARS = 100

#: A user name: also the owner of jobs and secrets, so no ``:`` (``job:<id>`` owns a job's secrets).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

log = get_logger(__name__)


def validate_username(name: object, field: str = "name") -> str:
    """Return ``name`` if it may name a user: 1-64 of ``A-Z a-z 0-9 . _ -``, starting with a letter or digit.

    Raises:
        ValidationError: naming ``field``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = repr(name)[:70] if isinstance(name, str) else type(name).__name__
        raise ValidationError(f"invalid user name {shown}", field=field,
                              hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def validate_label(label: object) -> str:
    if not isinstance(label, str) or len(label) > MAX_LABEL_CHARS or not label.isprintable():
        raise ValidationError(f"a token label is printable text of at most {MAX_LABEL_CHARS} characters",
                              field="label")
    return label.strip()


@dataclass(frozen=True)
class NewToken:
    """A token just created: its record, and the token itself, to be shown once."""

    record: ApiToken
    secret: str

    def __repr__(self) -> str:  # never show the token
        return f"NewToken(id={self.record.id!r}, user={self.record.user_name!r})"


@dataclass(frozen=True)
class NewSession:
    user: User
    #: The session id to put in the cookie (the server keeps only its sha256).
    secret: str
    expires_at: datetime

    def __repr__(self) -> str:
        return f"NewSession(user={self.user.name!r}, expires_at={self.expires_at.isoformat()})"


class Accounts:
    """Account operations over an :class:`AccountStore`.

    Args:
        store: the users, tokens and sessions.
        clock: the current time.
    """

    def __init__(self, store: AccountStore, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.clock = clock
        self.token_uses = tokens.LastUseRecorder(store.record_token_use)

    @classmethod
    def on(cls, engine: Engine) -> Accounts:
        """Accounts in the job database at ``engine`` (migrated)."""
        return cls(AccountStore(engine))

    # -- users -----------------------------------------------------------------------------------

    def create_user(self, name: str, *, admin: bool = False, password: str | None = None) -> tuple[User, str]:
        """Create a user; returns it and its password (a random one unless ``password`` is given)."""
        name = validate_username(name)
        password = passwords.validate_password(password) if password is not None else passwords.generate_password()
        user = self.store.add_user(name, passwords.hash_password(password), is_admin=admin)
        log.info("user created", user=name, admin=admin)
        return user, password

    def user(self, name: str) -> User:
        """The user ``name``.

        Raises:
            PermanentError: there is none (404).
        """
        user = self.store.user(name)
        if user is None:
            raise PermanentError(f"no user named {name!r}", category="validation", status=404,
                                 hint="list them with `hubferry users list`")
        return user

    def set_password(self, name: str, password: str) -> None:
        """Set a user's password; every session of the user ends (API tokens stay valid)."""
        password = passwords.validate_password(password)
        if not self.store.set_password_hash(self.user(name).name, passwords.hash_password(password), sign_out=True):
            self.user(name)  # deleted meanwhile: raise its error
        log.info("password changed", user=name)

    # -- API tokens ------------------------------------------------------------------------------

    def create_token(self, name: str, label: str = "") -> NewToken:
        user = self.user(name)
        secret = tokens.new_api_token()
        record = self.store.add_token(user.name, tokens.new_token_id(), validate_label(label), tokens.digest(secret))
        log.info("API token created", user=user.name, token_id=record.id)
        return NewToken(record, secret)

    def tokens(self, name: str) -> list[ApiToken]:
        return self.store.tokens(self.user(name).name)

    def revoke_token(self, name: str, token_id: str) -> bool:
        """Revoke the user's token ``token_id``; ``False`` when the user has no such live token."""
        revoked = self.store.revoke_token(name, token_id)
        if revoked:
            log.info("API token revoked", user=name, token_id=token_id)
        return revoked

    def user_for_token(self, secret: str) -> tuple[User, str] | None:
        """The user of a live API token and the token's id (its use is recorded in the background)."""
        if not tokens.looks_like_api_token(secret):
            return None
        expected = tokens.digest(secret)
        found = self.store.token_owner(expected)
        if found is None or not tokens.same_digest(found[2], expected):
            return None
        user, token_id, _ = found
        self.token_uses.used(token_id, self.clock())
        return user, token_id

    # -- sessions --------------------------------------------------------------------------------

    def sign_in(self, name: str, password: str, address: str) -> NewSession:
        """Check a password and open a session.

        Raises:
            TransientError: too many failed sign-ins for this user or address (429, ``retry_after_s``);
                the password was not checked.
            PermanentError: wrong user name or password (401); the same answer for both.
        """
        keys = throttle.keys_for(name, address)
        if (wait := throttle.locked_for(self.store.failures(keys), self.clock())) is not None:
            seconds = max(1, int(wait.total_seconds() + 0.999))
            log.warning("sign-in refused while locked", user=name, address=address)
            raise TransientError("too many failed sign-ins: wait before trying again", category="rate_limit",
                                 status=429, retry_after_s=seconds, hint=f"try again in {seconds} s")
        stored = self.store.password_hash(name) if _NAME.fullmatch(name) else None
        if not passwords.verify_password(stored, password):
            for key in keys:
                self.store.record_failure(key, functools.partial(throttle.after_failure, key))
            log.warning("sign-in failed", user=name, address=address)
            raise PermanentError("wrong user name or password", category="authentication", status=401,
                                 hint="ask an admin to run `hubferry users set-password NAME` if you forgot it")
        assert stored is not None
        self.store.clear_failures(keys[0])
        if passwords.needs_rehash(stored):
            self.store.rehash_password(name, stored, passwords.hash_password(password))
        secret = tokens.new_session_id()
        expires_at = self.clock() + SESSION_TTL
        self.store.add_session(tokens.digest(secret), name, expires_at)
        log.info("signed in", user=name)
        return NewSession(self.user(name), secret, expires_at)

    def session(self, secret: str) -> tuple[User, datetime] | None:
        """The user of a live session and when it expires."""
        return self.store.session_user(tokens.digest(secret))

    def sign_out(self, secret: str) -> None:
        self.store.delete_session(tokens.digest(secret))
