"""What every service call needs: settings, the job store, the vault and a dispatcher."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hubferry.config import Settings, load_settings

if TYPE_CHECKING:
    from hubferry.secrets.vault import Vault
    from hubferry.store import JobStore, PublishStore


class Dispatcher(Protocol):
    """Runs a job's next step somewhere: in this process, or through the task queue."""

    def train(self, job_id: str) -> None: ...

    def publish(self, job_id: str, delay_s: float = 0.0) -> None: ...


@dataclass
class Context:
    settings: Settings
    jobs: JobStore
    publishes: PublishStore
    vault: Vault
    #: Identifies this process as a lease holder (host, pid, random part).
    worker_id: str
    dispatcher: Dispatcher | None = None

    def dispatch(self) -> Dispatcher:
        return self.dispatcher or InlineDispatcher(self)


def open_context(settings: Settings | None = None, dispatcher: Dispatcher | None = None) -> Context:
    """Open the job store (migrating it to the current schema) under the configured home."""
    # Imported here: the database stack is not needed by commands that never open the job store.
    from hubferry.secrets.vault import Vault
    from hubferry.store import JobStore, PublishStore, make_engine, upgrade

    settings = settings or load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    return Context(
        settings=settings, jobs=JobStore(engine), publishes=PublishStore(engine), vault=Vault(settings.home),
        worker_id=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}", dispatcher=dispatcher,
    )


class InlineDispatcher:
    """Runs each step right here, synchronously: the embedded default with no worker running."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def train(self, job_id: str) -> None:
        from hubferry.services.training import run_training

        run_training(self.ctx, job_id)

    def publish(self, job_id: str, delay_s: float = 0.0) -> None:
        from hubferry.services.publishing import run_publish

        if delay_s:
            import time

            time.sleep(delay_s)
        run_publish(self.ctx, job_id)
