"""Smoothed training speed and time to finish: raw it/s jumps around, a user wants a steady ETA."""

from __future__ import annotations

import math

#: Weight of the newest observation in the exponential moving average of the rate. Higher
#: follows changes sooner (a sampling pause, a faster phase); lower gives a steadier ETA.
DEFAULT_SMOOTHING = 0.3

#: A time-based estimate stops here: running past the expected duration does not mean done.
TIME_ESTIMATE_CAP = 99.0


class RateEstimator:
    """Steps per second, smoothed, from the trainer's own rate or else from timestamps.

    The trainer's printed it/s (tqdm's own, already measured over real time) is preferred as
    soon as one is seen; otherwise the rate is measured between timestamped step counts. Call
    :meth:`reset` when the thing being measured changes (another bar is followed).
    """

    def __init__(self, smoothing: float = DEFAULT_SMOOTHING) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        self._smoothing = smoothing
        self.reset()

    def reset(self) -> None:
        """Forget every observation."""
        self._reported: float | None = None
        self._reported_step: float | None = None
        self._timed: float | None = None
        self._anchor: tuple[float, float] | None = None

    def observe_rate(self, rate_per_s: float, step: float | None = None) -> None:
        """Fold in a rate the trainer printed (``2.37it/s``, or ``2.38s/it`` inverted).

        With ``step`` (the step count the rate was printed at), a rate printed many steps after
        the previous one weighs as much as the updates in between would have: a log read in
        sparse samples is not held back by a warm-up rate from long ago.
        """
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            return
        updates = 1.0
        if step is not None and math.isfinite(step):
            if self._reported_step is not None and step > self._reported_step:
                updates = step - self._reported_step
            self._reported_step = step
        self._reported = self._blend(self._reported, rate_per_s, updates)

    def observe_step(self, step: float, at: float) -> None:
        """Fold in the step count seen at time ``at`` (seconds on any monotonic-enough clock).

        Observations at the same instant as the last anchor (many ``\\r`` updates in one chunk)
        wait for a later timestamp; a step count going down (a restarted bar) starts afresh.
        """
        if not (math.isfinite(step) and math.isfinite(at)):
            return
        if self._anchor is None:
            self._anchor = (at, step)
            return
        anchor_at, anchor_step = self._anchor
        if step < anchor_step or at < anchor_at:
            self._anchor = (at, step)
            return
        elapsed = at - anchor_at
        if elapsed <= 0:
            return
        if step > anchor_step:
            self._timed = self._blend(self._timed, (step - anchor_step) / elapsed)
            self._anchor = (at, step)

    @property
    def rate_per_s(self) -> float | None:
        """The smoothed rate, or ``None`` before anything was measured."""
        return self._reported if self._reported is not None else self._timed

    def _blend(self, old: float | None, new: float, updates: float = 1.0) -> float:
        if old is None:
            return new
        weight = 1.0 - (1.0 - self._smoothing) ** min(updates, 1000.0)
        return old + weight * (new - old)


def eta_seconds(remaining_steps: float | None, rate_per_s: float | None) -> float | None:
    """Seconds left at ``rate_per_s``; ``None`` when either is unknown or the rate is not positive."""
    if remaining_steps is None or rate_per_s is None or not rate_per_s > 0:
        return None
    eta = max(0.0, remaining_steps) / rate_per_s
    return eta if math.isfinite(eta) else None


def time_based_percent(elapsed_s: float | None, expected_s: float | None) -> float | None:
    """Percent of an expected duration that has passed, capped at :data:`TIME_ESTIMATE_CAP`.

    ``None`` without an expected duration: a percent is never invented.
    """
    if elapsed_s is None or expected_s is None or not expected_s > 0 or not math.isfinite(elapsed_s):
        return None
    return min(TIME_ESTIMATE_CAP, max(0.0, 100.0 * elapsed_s / expected_s))
