"""Retries of calls to a storage service (S3, Replicate Files) with the backoff policy of Hub calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hubferry.errors import HubferryError
from hubferry.hub import retry

T = TypeVar("T")


def classified_call(fn: Callable[[], T], *, classify: Callable[[Exception], HubferryError], what: str,
                    endpoint: str, policy: retry.RetryPolicy) -> T:
    """:func:`hubferry.hub.retry.call` for a client other than the Hub's: ``classify`` turns its
    exceptions into hubferry errors, and only the transient ones are retried."""

    def attempt() -> T:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - every client failure is classified here
            raise classify(exc) from exc

    return retry.call(attempt, what=what, endpoint=endpoint, policy=policy)
