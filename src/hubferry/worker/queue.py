"""Huey in its box: a typed dispatcher whose tasks carry only job ids.

Huey delivers at most once (a task taken by a consumer that dies is gone), so nothing here is
trusted for correctness: the job database is the truth, every task is idempotent, and the
reconciler re-dispatches whatever a crash lost.
"""

from __future__ import annotations

import threading

from huey import Huey, RedisHuey, SqliteHuey
from huey.consumer import Consumer

from hubferry.config import Settings
from hubferry.logs import get_logger

log = get_logger(__name__)
#: Longest pause between queue polls of an idle consumer (Huey's default of 10 s delays publishes; a
#: completed webhook's read, queued here, must start well within the 1 s promised for publishing).
CONSUMER_MAX_POLL_S = 0.5


def make_huey(settings: Settings) -> Huey:
    """Huey on Redis (``HUBFERRY_QUEUE_URL=redis://…``, many machines) or SQLite under ``home``."""
    if settings.queue_url:
        return RedisHuey(settings.queue_name, url=settings.queue_url, results=False, utc=True)
    settings.home.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(settings.queue_name, filename=str(settings.home / "queue.db"), results=False, utc=True)


class TaskQueue:
    """Implements :class:`hubferry.services.context.Dispatcher` by enqueueing Huey tasks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.huey = make_huey(settings)
        self._train = self.huey.task(name="hubferry.train")(_train)
        self._publish = self.huey.task(name="hubferry.publish")(_publish)
        self._observe = self.huey.task(name="hubferry.observe")(_observe)

    def train(self, job_id: str) -> None:
        self._train(job_id)

    def publish(self, job_id: str, delay_s: float = 0.0) -> None:
        if delay_s > 0:
            self._publish.schedule((job_id,), delay=delay_s)
        else:
            self._publish(job_id)

    def observe(self, job_id: str) -> None:
        self._observe(job_id)

    def pending(self) -> int:
        return self.huey.pending_count()

    def consumer(self, workers: int, *, embedded: bool = False) -> Consumer:
        """A consumer with thread workers; ``embedded`` leaves signals to the host (``hubferry serve``)."""
        cls = _EmbeddedConsumer if embedded else Consumer
        return cls(
            self.huey, workers=workers, worker_type="thread", periodic=False, check_worker_health=True,
            max_delay=CONSUMER_MAX_POLL_S,
        )


class _EmbeddedConsumer(Consumer):
    def _set_signal_handlers(self) -> None:  # uvicorn owns the signals
        pass


_context_lock = threading.Lock()
_context = None


def worker_context():
    """This process's service context, dispatching through the queue (built once)."""
    global _context
    with _context_lock:
        if _context is None:
            from hubferry.config import load_settings
            from hubferry.services.context import open_context

            settings = load_settings()
            _context = open_context(settings, dispatcher=TaskQueue(settings))
        return _context


def bind_context(ctx) -> None:
    """Use ``ctx`` for tasks run in this process (the worker and ``serve`` build theirs first)."""
    global _context
    with _context_lock:
        _context = ctx


def _train(job_id: str) -> None:
    from hubferry.services.training import run_training

    run_training(worker_context(), job_id)


def _publish(job_id: str) -> None:
    from hubferry.services.publishing import run_publish

    run_publish(worker_context(), job_id)


def _observe(job_id: str) -> None:
    from hubferry.services.remote import observe_now

    observe_now(worker_context(), job_id)
