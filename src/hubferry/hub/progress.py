"""Progress events a push reports to its caller (CLI bar, job tracker), and how sizes and rates read."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

_UNITS = ("kB", "MB", "GB", "TB", "PB")


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


def format_size(size: float) -> str:
    """``size`` bytes for people, in decimal units as the Hub shows them: ``1.0 GB``, ``512 bytes``."""
    if size < 1000:
        count = int(size)
        return f"{count} byte" if count == 1 else f"{count} bytes"
    for unit in _UNITS:
        size /= 1000
        if size < 999.95 or unit == _UNITS[-1]:
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


class TransferRate:
    """The average rate of a transfer, from its first counted byte to now (or to its end).

    A sliding window over progress samples (rich's default) shows nonsense after a burst: a 15.7 MB
    upload reported in one tick, then a 371-byte commit a second later, reads "371 bytes/s". The
    average since the transfer started is what the user means, and it stops moving once done.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started: float | None = None
        self._start_bytes = 0
        self._last_bytes = 0
        self._ended: float | None = None

    def update(self, bytes_done: int, *, finished: bool = False) -> None:
        now = self._clock()
        if self._started is None:
            self._started, self._start_bytes = now, bytes_done
        self._last_bytes = max(self._last_bytes, bytes_done)
        if finished and self._ended is None:
            self._ended = now

    def per_second(self) -> float | None:
        """Bytes per second, or None while too little is known."""
        if self._started is None:
            return None
        elapsed = (self._ended if self._ended is not None else self._clock()) - self._started
        moved = self._last_bytes - self._start_bytes
        if elapsed <= 0 or moved <= 0:
            return None
        return moved / elapsed

    def text(self) -> str:
        rate = self.per_second()
        return "" if rate is None else f"{format_size(rate)}/s"
