"""API tokens and session ids: random secrets, kept by the server only as their sha256.

A token is ``hfy_`` and 32 url-safe characters (192 bits): far too many to guess, so a plain
sha256 is as good as a slow hash for storing it, and lets a request be authenticated with one
indexed lookup. Last use is recorded at most once a minute per token, by a background thread, so
authenticating never waits for a database write.
"""

from __future__ import annotations

import hashlib
import hmac
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from hubferry.logs import get_logger

TOKEN_PREFIX = "hfy_"
_TOKEN = re.compile(r"hfy_[A-Za-z0-9_-]{32}")
#: How often a token's ``last_used_at`` is written, at most.
LAST_USE_RESOLUTION_S = 60.0

log = get_logger(__name__)


def new_api_token() -> str:
    """A new API token, to be shown once."""
    return TOKEN_PREFIX + secrets.token_urlsafe(24)


def new_token_id() -> str:
    """The public id of a token (listed, and used to revoke it)."""
    return "tok_" + secrets.token_hex(8)


def new_session_id() -> str:
    """A new session id (256 bits)."""
    return secrets.token_urlsafe(32)


def looks_like_api_token(value: str) -> bool:
    return bool(_TOKEN.fullmatch(value))


def digest(secret: str) -> str:
    """The sha256 (hex) under which a token or session id is stored."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))


class LastUseRecorder:
    """Collects token uses and writes them from a daemon thread, at most once a minute per token.

    Args:
        write: ``{token id: used at} -> None``, e.g. ``AccountStore.record_token_use``.
        resolution_s: minimum interval between two writes for one token.
    """

    def __init__(self, write: Callable[[Mapping[str, datetime]], None], *,
                 resolution_s: float = LAST_USE_RESOLUTION_S) -> None:
        self._write = write
        self._resolution_s = resolution_s
        self._queued: dict[str, float] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, datetime]] = queue.Queue()
        self._thread: threading.Thread | None = None

    def used(self, token_id: str, at: datetime) -> None:
        """Note a use; returns at once."""
        now = time.monotonic()
        with self._lock:
            last = self._queued.get(token_id)
            if last is not None and now - last < self._resolution_s:
                return
            self._queued[token_id] = now
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hubferry-token-use", daemon=True)
                self._thread.start()
        self._queue.put((token_id, at))

    def flush(self) -> None:
        """Wait until every use noted so far is written (tests, shutdown)."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                self._write(dict(batch))
            except Exception as exc:  # noqa: BLE001 - last use is advisory: log and keep serving
                log.warning("could not record API token use", error=type(exc).__name__)
            finally:
                for _ in batch:
                    self._queue.task_done()
