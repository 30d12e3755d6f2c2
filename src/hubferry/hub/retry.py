"""Retry of Hub calls with exponential backoff, jitter and Retry-After."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hubferry.config import Settings
from hubferry.errors import HubferryError, TransientError
from hubferry.hub.client import forget_answer
from hubferry.hub.failures import classify
from hubferry.logs import get_logger

T = TypeVar("T")
log = get_logger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry one call."""

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 30.0
    retry_after_cap: float = 300.0
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts, base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay, retry_after_cap=settings.retry_after_cap,
        )

    def delay(self, attempt: int, error: HubferryError) -> float:
        """Seconds to wait after failed ``attempt`` (1-based): full jitter, or the server's Retry-After."""
        retry_after = error.context.get("retry_after")
        if retry_after is not None:
            return min(float(retry_after), self.retry_after_cap)
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


def call(
    fn: Callable[[], T],
    *,
    what: str,
    endpoint: str,
    policy: RetryPolicy,
    before_retry: Callable[[HubferryError], T | None] | None = None,
    **context: object,
) -> T:
    """Run ``fn`` until it succeeds, retrying only :class:`TransientError` failures.

    Args:
        fn: the call.
        what: the operation's name for messages.
        endpoint: the Hub endpoint, for hints.
        policy: attempts and backoff.
        before_retry: called before each re-send; a non-None result means the work
            already happened (a commit whose response was lost) and is returned as is.
        **context: kept on the raised error (``repo_id`` ...).

    Raises:
        HubferryError: the last failure, with ``attempt`` and ``elapsed_s`` set.
    """
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        forget_answer()
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - every failure is classified, then re-raised or retried
            elapsed = round(time.monotonic() - started, 3)
            error = classify(exc, what=what, endpoint=endpoint, **context)
            error.context.update(attempt=attempt, elapsed_s=elapsed)
            if not isinstance(error, TransientError) or attempt >= policy.max_attempts:
                if isinstance(error, TransientError):
                    error.hint = f"gave up after {attempt} attempts; " + error.hint
                raise error from exc
            wait = policy.delay(attempt, error)
            log.warning("retrying", what=what, attempt=attempt, wait_s=round(wait, 2), error=error.message)
            policy.sleep(wait)
            if before_retry is not None:
                done = before_retry(error)
                if done is not None:
                    return done
