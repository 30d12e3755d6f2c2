"""Run a worker: the Huey consumer plus a reconcile loop and a liveness file."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from hubferry.logs import get_logger
from hubferry.services.context import Context
from hubferry.services.reconcile import reconcile

log = get_logger(__name__)
#: A worker touches its liveness file this often; older files mean the worker is gone.
LIVENESS_INTERVAL_S = 5.0
LIVENESS_STALE_S = 20.0


def _liveness_dir(ctx: Context) -> Path:
    return ctx.settings.home / "workers"


def local_worker_alive(ctx: Context) -> bool:
    """Whether a worker (or ``hubferry serve``) using this home touched its liveness file recently."""
    folder = _liveness_dir(ctx)
    if not folder.is_dir():
        return False
    now = time.time()
    return any(now - p.stat().st_mtime < LIVENESS_STALE_S for p in folder.glob("*.alive"))


class Housekeeper:
    """Background thread: reconcile every ``reconcile_interval_s``, touch the liveness file."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="hubferry-housekeeper")
        folder = _liveness_dir(ctx)
        folder.mkdir(parents=True, exist_ok=True)
        self.liveness = folder / f"{socket.gethostname()}-{os.getpid()}.alive"

    def start(self) -> None:
        self.liveness.touch()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.liveness.unlink(missing_ok=True)

    def _run(self) -> None:
        next_reconcile = 0.0
        while not self._stop.is_set():
            self.liveness.touch()
            if time.monotonic() >= next_reconcile:
                try:
                    reconcile(self.ctx)
                except Exception as exc:  # noqa: BLE001 - the loop must survive a bad round; it is logged
                    log.error("reconcile failed", error=str(exc))
                next_reconcile = time.monotonic() + self.ctx.settings.reconcile_interval_s
            self._stop.wait(min(LIVENESS_INTERVAL_S, self.ctx.settings.reconcile_interval_s))
