"""Housekeeping that runs in the background of a serving registry: leftover multipart parts.

Parts of an upload that was never completed would stay on disk forever; once every URL of the
upload has expired nobody can complete it, so its parts are removed.
"""

from __future__ import annotations

import threading

import structlog

from .context import RegistryContext

log = structlog.get_logger("hubferry.registry")


def clean_expired_uploads(ctx: RegistryContext, now: float | None = None) -> int:
    """Remove multipart uploads idle for two URL lifetimes (by then no request of theirs can still run).

    Returns:
        How many uploads were removed.
    """
    removed = ctx.blobs.remove_stale_uploads(2 * ctx.settings.url_ttl_s, now)
    if removed:
        log.info("removed expired multipart uploads", count=removed)
    return removed


class Janitor:
    """Runs :func:`clean_expired_uploads` now and every ``cleanup_interval_s`` in a daemon thread."""

    def __init__(self, ctx: RegistryContext) -> None:
        self._ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-janitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            try:
                clean_expired_uploads(self._ctx)
            except OSError:
                log.exception("cleaning expired uploads failed; retrying at the next interval")
            if self._stop.wait(self._ctx.settings.cleanup_interval_s):
                return
