"""Progress events a push reports to its caller (CLI bar, job tracker)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PushProgress:
    """One progress report. ``bytes_done`` never decreases within a push."""

    stage: str  # preflight | hashing | uploading | committing | verifying | done
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    message: str = ""


ProgressCallback = Callable[[PushProgress], None]


def ignore(_event: PushProgress) -> None:
    """The default callback: report nowhere."""
