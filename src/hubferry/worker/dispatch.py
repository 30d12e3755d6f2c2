"""The one dispatch policy, used by the CLI and the API: the task queue when a worker will run the job,
else right here."""

from __future__ import annotations

from hubferry.services.context import Context, Dispatcher
from hubferry.worker.queue import TaskQueue
from hubferry.worker.run import local_worker_alive


def dispatcher_for(ctx: Context) -> tuple[Dispatcher, bool]:
    """The queue and ``True`` when a worker will run the job (this process serves one, a queue URL is
    set, or a worker of this home is alive); else the inline dispatcher and ``False``."""
    if isinstance(ctx.dispatcher, TaskQueue):
        return ctx.dispatcher, True
    if ctx.settings.queue_url or local_worker_alive(ctx):
        return TaskQueue(ctx.settings), True
    return ctx.dispatch(), False
