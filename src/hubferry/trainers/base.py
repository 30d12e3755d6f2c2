"""The Trainer protocol every backend (local, Replicate, RunPod) implements, and what it reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from hubferry.domain.jobs import Job


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: The run cannot be found any more (its runner and process are gone).
    LOST = "lost"


#: A serialisable record naming one run, stored on the job: pid/pgid for local, a training id for
#: Replicate, a pod id for RunPod.
Handle = Mapping[str, Any]


@dataclass(frozen=True)
class Capabilities:
    #: A failed training can be started again without losing anything (``hubferry retry``).
    can_retry_training: bool
    #: The provider pushes events (webhooks, agent callbacks); polling is then only the fallback.
    pushes_events: bool
    #: The run publishes its own outputs (a pod's agent); the orchestrator only verifies the commit.
    publishes_from_run: bool = False


@dataclass(frozen=True)
class Observation:
    """What a backend says about one run at one moment."""

    status: RunStatus
    #: Log lines since the cursor given to :meth:`Trainer.poll`, and the cursor to pass next time.
    lines: list[str] = field(default_factory=list)
    cursor: str = ""
    exit_code: int | None = None
    message: str = ""
    #: Progress the provider reports itself (``percent``, ``step``, ``total_steps``), beyond the log.
    hints: Mapping[str, Any] = field(default_factory=dict)
    #: Where the outputs are, once the run succeeded (a local folder, or a URL to fetch).
    outputs: str | None = None


class Trainer(Protocol):
    """Start, observe and stop training runs; services touch a backend only through this."""

    kind: str
    capabilities: Capabilities

    def start(self, job: Job, log_path: Path, secrets: Mapping[str, str] | None = None) -> Handle:
        """Start the run for ``job`` (its recorded command, environment and working directory), giving it
        ``secrets``: the variables the user passed on purpose (``--pass-env``)."""
        ...

    def poll(self, handle: Handle, cursor: str = "") -> Observation:
        """The run's state and the log since ``cursor``, without blocking."""
        ...

    def cancel(self, handle: Handle, grace_s: float) -> None:
        """Stop the run: politely, then forcibly after ``grace_s``. A run already gone is not an error."""
        ...

    def fetch_outputs(self, handle: Handle, dest: Path) -> Path:
        """Make the outputs of a succeeded run available under ``dest``; returns the folder to publish."""
        ...


@runtime_checkable
class SelfPublishingTrainer(Trainer, Protocol):
    """A trainer whose runs publish their own outputs and hold paid resources until released."""

    def release(self, handle: Handle, *, keep_outputs: bool) -> None:
        """Free the run's resources, keeping its outputs when asked (a stopped pod keeps its volume)."""
        ...

    def resume(self, handle: Handle) -> bool:
        """Start a released run again so it can publish; False when it is running already."""
        ...

    def list_runs(self, owner: str, job_id: str) -> list[dict[str, Any]]:
        """The runs this trainer started on the account used for ``owner``'s job, each with ``id`` and the
        ``job_id`` it was started for (to find orphans)."""
        ...
