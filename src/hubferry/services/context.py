"""What every service call needs: settings, the job store, credentials, the ports, and a dispatcher."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from hubferry.config import Settings, load_settings

if TYPE_CHECKING:
    from hubferry.secrets.hub_credentials import HubCredentials
    from hubferry.services.ports import Publisher
    from hubferry.store import JobStore, PublishStore
    from hubferry.trainers import Trainer


class Dispatcher(Protocol):
    """Runs a job's next step somewhere: in this process, or through the task queue."""

    def train(self, job_id: str) -> None: ...

    def publish(self, job_id: str, delay_s: float = 0.0) -> None: ...

    def observe(self, job_id: str) -> None:
        """Read a remote training now (a webhook said it changed)."""
        ...


@dataclass
class Context:
    settings: Settings
    jobs: JobStore
    publishes: PublishStore
    credentials: HubCredentials
    publisher: Publisher
    #: The trainer for a job's ``trainer`` kind (``trainers.for_kind`` unless a test swaps it).
    trainer_for: Callable[[str], Trainer]
    #: Identifies this process as a lease holder (host, pid, random part).
    worker_id: str
    dispatcher: Dispatcher | None = None
    _inline: InlineDispatcher | None = field(default=None, repr=False)

    def dispatch(self) -> Dispatcher:
        if self.dispatcher is not None:
            return self.dispatcher
        if self._inline is None:
            self._inline = InlineDispatcher(self)
        return self._inline


def open_context(
    settings: Settings | None = None, dispatcher: Dispatcher | None = None, *, publisher: Publisher | None = None,
) -> Context:
    """Open the job store (migrating it to the current schema) under the configured home."""
    # Imported here: the database stack is not needed by commands that never open the job store.
    from hubferry.hub.client import HubClients
    from hubferry.hub.publisher import HubPublisher
    from hubferry.secrets.hub_credentials import HubCredentials
    from hubferry.secrets.vault import Vault
    from hubferry.services.credentials import provider_key
    from hubferry.services.datasets import stage_dataset
    from hubferry.store import JobStore, PublishStore, make_engine, upgrade
    from hubferry.trainers import for_kind

    settings = settings or load_settings()
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    credentials = HubCredentials(Vault.from_settings(settings))
    trainers: dict[str, Trainer] = {}

    def trainer_for(kind: str) -> Trainer:
        if kind not in trainers:
            trainers[kind] = for_kind(
                kind, settings, provider_key=lambda provider, owner, job_id: provider_key(
                    credentials, provider, owner, job_id),
                stage=lambda job, token: stage_dataset(settings, job, token),
            )
        return trainers[kind]

    return Context(
        settings=settings, jobs=JobStore(engine), publishes=PublishStore(engine), credentials=credentials,
        publisher=publisher or HubPublisher(settings, HubClients(settings)), trainer_for=trainer_for,
        worker_id=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}", dispatcher=dispatcher,
    )


class InlineDispatcher:
    """Runs each step right here: the embedded default with no worker running.

    Steps dispatched while a step runs (a training success starting its publish, a publish retried
    after a transient failure) are queued and run after it in the same loop, never recursively.
    """

    def __init__(self, ctx: Context, sleep: Callable[[float], None] = time.sleep) -> None:
        self.ctx = ctx
        self.sleep = sleep
        self._local = threading.local()

    def train(self, job_id: str) -> None:
        self._run("train", job_id, 0.0)

    def publish(self, job_id: str, delay_s: float = 0.0) -> None:
        self._run("publish", job_id, delay_s)

    def observe(self, job_id: str) -> None:
        self._run("observe", job_id, 0.0)

    def _run(self, step: str, job_id: str, delay_s: float) -> None:
        pending: deque[tuple[str, str, float]] = self._local.__dict__.setdefault("pending", deque())
        pending.append((step, job_id, delay_s))
        if self._local.__dict__.get("running"):
            return
        from hubferry.services.publishing import run_publish
        from hubferry.services.remote import observe_now
        from hubferry.services.training import run_training

        steps = {"train": run_training, "publish": run_publish, "observe": observe_now}
        self._local.running = True
        try:
            while pending:
                step, job_id, delay_s = pending.popleft()
                if delay_s:
                    self.sleep(delay_s)
                steps[step](self.ctx, job_id)
        finally:
            self._local.running = False
