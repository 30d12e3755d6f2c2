"""Run a worker: the Huey consumer plus housekeeping (reconcile, poll remote trainings) and a liveness file."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubferry.logs import get_logger
from hubferry.services.context import Context
from hubferry.services.reconcile import reconcile
from hubferry.services.remote import poll_due

log = get_logger(__name__)
#: A worker touches its liveness file this often; older files mean the worker is gone.
LIVENESS_INTERVAL_S = 5.0
LIVENESS_STALE_S = 20.0
#: How often expired staged datasets are deleted.
STAGING_CLEANUP_S = 600.0


def clean_staging(ctx: Context) -> int:
    from hubferry.staging import cleanup

    return cleanup(ctx.settings)


def _liveness_dir(ctx: Context) -> Path:
    return ctx.settings.home / "workers"


def local_worker_alive(ctx: Context) -> bool:
    """Whether a worker (or ``hubferry serve``) using this home touched its liveness file recently."""
    folder = _liveness_dir(ctx)
    if not folder.is_dir():
        return False
    now = time.time()
    return any(now - p.stat().st_mtime < LIVENESS_STALE_S for p in folder.glob("*.alive"))


@dataclass
class _Chore:
    run: Callable[[Context], object]
    every_s: float
    due: float = 0.0


class Housekeeper:
    """Background thread: reconcile every ``reconcile_interval_s``, poll remote trainings every
    ``poll_interval_s``, touch the liveness file."""

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
        settings = self.ctx.settings
        chores = [_Chore(reconcile, settings.reconcile_interval_s), _Chore(poll_due, settings.poll_interval_s),
                  _Chore(clean_staging, STAGING_CLEANUP_S)]
        while not self._stop.is_set():
            self.liveness.touch()
            for chore in chores:
                if time.monotonic() >= chore.due:
                    try:
                        chore.run(self.ctx)
                    except Exception as exc:  # noqa: BLE001 - the loop must survive a bad round; it is logged
                        log.error("housekeeping failed", chore=chore.run.__name__, error=str(exc))
                    chore.due = time.monotonic() + chore.every_s
            self._stop.wait(min(LIVENESS_INTERVAL_S, settings.reconcile_interval_s, settings.poll_interval_s))
