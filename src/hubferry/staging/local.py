"""Staging in ``hubferry serve`` itself: files under ``$HUBFERRY_HOME/staging/files`` fetched through
HMAC-signed, expiring URLs of ``public_url``, for a hubferry the remote trainer can reach.

The signing key is ``$HUBFERRY_HOME/keys/staging.key`` (0600, in the 0700 ``keys`` folder), created on
first use. It is separate from the vault key, so rotating the vault does not break URLs handed out,
and deleting the file revokes every URL at once. The worker that stages and the ``hubferry serve``
that answers must therefore share ``HUBFERRY_HOME``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from hubferry.config import Settings
from hubferry.errors import ConfigError, ValidationError
from hubferry.staging.base import StagedFile, split_ref, validate_key
from hubferry.staging.index import StagingIndex

KIND = "local"
KEY_FILE = Path("keys") / "staging.key"
#: The name of a staged file: a random part, then the key with '/' as '-'; one URL path segment.
_NAME = re.compile(r"[0-9a-f]{16}-[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_KEY_BYTES = 32


def valid_name(name: str) -> bool:
    """Whether ``name`` may be the name of a staged file (one safe path segment)."""
    return bool(_NAME.fullmatch(name))


def signing_key(home: Path) -> bytes:
    """The HMAC key of staging URLs, created (0600) on first use; racing creators agree on the first.

    Raises:
        ConfigError: the key file is unreadable or not a key.
    """
    path = home / KEY_FILE
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".staging.key.")  # created 0600
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(_KEY_BYTES) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # never replaces: the first key written wins
        os.unlink(tmp)
    try:
        key = path.read_text("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the staging key {path}: {type(exc).__name__}", path=str(path),
                          hint="delete it to make a new one (URLs handed out stop working)") from None
    if len(key) < 2 * _KEY_BYTES:
        raise ConfigError(f"the staging key {path} is too short", path=str(path),
                          hint="delete it to make a new one (URLs handed out stop working)")
    return key.encode("ascii")


class LocalStaging:
    """Copies under ``home/staging/files``; URLs ``{public_url}/staging/{name}?exp=..&sig=..``."""

    kind = KIND

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.public_url = settings.public_url.rstrip("/") if settings.public_url else None
        self.folder = settings.home / "staging" / "files"
        self.index = StagingIndex(settings.home / "staging")
        self.ttl_s = settings.staging_ttl_s
        self.clock = clock
        self._home = settings.home
        self._key: bytes | None = None

    def stage(self, path: Path, *, key: str, token: str | None = None) -> StagedFile:
        if not self.public_url:
            raise ConfigError("the local staging needs the address where trainers reach hubferry serve",
                              setting="HUBFERRY_PUBLIC_URL",
                              hint="set HUBFERRY_PUBLIC_URL (e.g. https://hubferry.example.org), or use "
                              "HUBFERRY_STAGING=s3 with HUBFERRY_S3_BUCKET")
        name = f"{secrets.token_hex(8)}-{validate_key(key).replace('/', '-')}"
        ref = f"{KIND}:{name}"
        expires = int(self.clock()) + self.ttl_s
        self.index.record(ref, expires)  # first: a crash below leaves an entry that cleanup removes, not a stray file
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".incoming.")
        try:
            with os.fdopen(fd, "wb") as out, path.open("rb") as source:
                shutil.copyfileobj(source, out, 1024 * 1024)
            os.replace(tmp, self.folder / name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            self.index.forget(ref)
            raise
        url = f"{self.public_url}/staging/{quote(name)}?exp={expires}&sig={self.signature(name, expires)}"
        return StagedFile(url=url, expires_at=datetime.fromtimestamp(expires, UTC), ref=ref)

    def delete(self, ref: str, *, token: str | None = None) -> None:
        backend, name = split_ref(ref)
        if backend != KIND or not valid_name(name):
            raise ValidationError(f"not a local staging reference: {ref[:80]!r}", field="ref",
                                  hint="pass the ref of a locally staged file unchanged")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder / name)  # unlinks a link itself, never its target
        self.index.forget(ref)

    def expired(self, now: float | None = None) -> list[str]:
        return self.index.expired(KIND, self.clock() if now is None else now)

    def signature(self, name: str, expires: int) -> str:
        """The hex HMAC-SHA256 binding ``name`` to its expiry."""
        if self._key is None:
            self._key = signing_key(self._home)
        return hmac.new(self._key, f"hubferry-staging\n{name}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def verify(self, name: str, exp: str, sig: str) -> bool:
        """Whether ``exp``/``sig`` (from the URL) are a valid, unexpired signature of ``name``."""
        if not valid_name(name) or not (exp.isascii() and exp.isdigit() and len(exp) <= 12) or int(exp) < self.clock():
            return False
        # Bytes: compare_digest refuses non-ASCII str, and the query is the caller's.
        return hmac.compare_digest(sig.encode(), self.signature(name, int(exp)).encode())

    def open(self, name: str) -> tuple[BinaryIO, int] | None:
        """The staged file ``name``, opened for reading, and its size; None when it is gone or not a
        regular file. Links are never followed, neither the file nor the staging folder."""
        if not valid_name(name):
            return None
        try:
            folder = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            # O_NONBLOCK: opening a FIFO planted there must not hang the server.
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
        except OSError:
            return None
        finally:
            os.close(folder)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        return os.fdopen(fd, "rb"), info.st_size
