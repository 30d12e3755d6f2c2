"""``hubferry worker`` and ``hubferry serve``: the long-running processes."""

from __future__ import annotations

from typing import Annotated

import typer

from hubferry.cli.console import say
from hubferry.config import load_settings
from hubferry.services.context import open_context


def worker(
    threads: Annotated[int | None, typer.Option(min=1, help="Task threads (default HUBFERRY_WORKER_THREADS).")]
    = None,
) -> None:
    """Run a worker: executes queued trainings and publishes, and reconciles stuck jobs."""
    from hubferry.worker.queue import TaskQueue, bind_context
    from hubferry.worker.run import Housekeeper

    settings = load_settings()
    queue = TaskQueue(settings)
    ctx = open_context(settings, dispatcher=queue)
    bind_context(ctx)
    housekeeper = Housekeeper(ctx)
    housekeeper.start()
    say(f"worker {ctx.worker_id} on ", settings.queue_url_display())
    try:
        queue.consumer(threads or settings.worker_threads).run()
    finally:
        housekeeper.stop()


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8470,
) -> None:
    """Run the REST API with an in-process worker (the embedded default: one process, SQLite)."""
    import uvicorn

    from hubferry.api.app import create_app

    ctx = open_context(load_settings())
    say(f"hubferry API on http://{host}:{port} (docs at /docs), jobs in ", ctx.settings.database_display())
    uvicorn.run(create_app(ctx), host=host, port=port, log_level="warning")
