"""Presigned URLs: HMAC-signed, expiring query strings that authorise one transfer without a token.

The LFS client sends no ``authorization`` header on object PUTs, and blob downloads must work
after a redirect, so these URLs carry their own proof, like S3 presigned URLs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from urllib.parse import urlencode


class Signer:
    """Signs and checks ``path + sorted params + expiry``."""

    def __init__(self, key: bytes, ttl_s: int) -> None:
        self._key = key
        self.ttl_s = ttl_s

    @classmethod
    def for_data_dir(cls, data_dir: Path, secret: str | None, ttl_s: int) -> Signer:
        """Use ``secret`` or the key kept in ``<data_dir>/signing.key`` (created on first use)."""
        if secret:
            return cls(secret.encode(), ttl_s)
        key_path = Path(data_dir) / "signing.key"
        if not key_path.exists():
            tmp = key_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            try:
                os.link(tmp, key_path)  # first writer wins if two servers start together
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        return cls(key_path.read_text().strip().encode(), ttl_s)

    def _mac(self, path: str, params: dict[str, str]) -> str:
        message = path + "?" + urlencode(sorted(params.items()))
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def sign(self, path: str, **params: str | int) -> str:
        """Return ``path?params&exp=..&sig=..``, valid for ``ttl_s`` seconds."""
        values = {k: str(v) for k, v in params.items()}
        values["exp"] = str(int(time.time()) + self.ttl_s)
        values["sig"] = self._mac(path, values)
        return path + "?" + urlencode(values)

    def check(self, path: str, query: dict[str, str]) -> bool:
        """True if ``query`` carries a valid, unexpired signature for ``path``."""
        params = dict(query)
        signature = params.pop("sig", "")
        try:
            expires = int(params.get("exp", "0"))
        except ValueError:
            return False
        if expires < time.time():
            return False
        # Bytes: compare_digest refuses non-ASCII str, and the query is attacker-controlled.
        return hmac.compare_digest(signature.encode(), self._mac(path, params).encode())

    def tag(self, *parts: str | int) -> str:
        """A short MAC over ``parts``; used as multipart part ETags that can be checked later."""
        message = "\0".join(str(p) for p in parts)
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()[:32]
