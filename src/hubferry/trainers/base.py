"""The Trainer protocol every backend (local, Replicate, RunPod) implements."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RunState:
    """What a backend says about one training run."""

    status: RunStatus
    exit_code: int | None = None
    message: str = ""


class Trainer(Protocol):
    """Start, observe and stop one training run; the job service drives it."""

    #: Whether a failed run can be started again without losing anything (``hubferry retry``).
    supports_retry: bool

    def start(self, log_path: Path) -> int:
        """Start the run, sending its output to ``log_path``; returns a handle (a pid for local runs)."""
        ...

    def poll(self) -> RunState:
        """The run's current state, without blocking."""
        ...

    def cancel(self, grace_s: float) -> None:
        """Stop the run: politely, then forcibly after ``grace_s``."""
        ...
