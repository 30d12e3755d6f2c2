"""Turn a trainer's log, line by line, into one steady progress reading a user can trust.

A trainer log holds many bars (downloads, checkpoint shards, latent caching, sample images,
validation) besides the training one. The tracker follows one *training source* at a time
and switches only to a better one, ranked by, in order:

1. its total equals the expected number of steps (``total_steps=``, or announced in the log:
   ``Total optimization steps = 375``);
2. its label looks like training (``flux_train_replicate``, ``steps``, ``Epoch 3``), while
   unlabelled bars rank lower and bars clearly not training are never followed;
3. it has a total; then the kind of source (tqdm bar, step line, Trainer dict, epoch line);
4. the larger total.

A bar's bare form (``flux_train_replicate: 31%``, a printed percent without ``n/total``) is
followed only when its label looks like training, and only while no bar with a total is: its
percent is tqdm's rounded one (``999/1000`` prints ``100%``), so counts win whenever they exist.

Stages go ``starting`` → ``training`` (later ones are set with :meth:`ProgressTracker.advance`).
The tracker enters ``training`` on the first sign of it: a training-labelled bar, a step,
epoch or Trainer line, a ``Running training`` banner, an unlabelled bar whose total is the
expected one or that reports a loss. Until then unlabelled and non-training bars count as
progress of ``starting``. Within a stage the percent never goes back: a validation bar, a
restarted bar or a cut-off line cannot lower it.

When nothing gives a training percent and the caller named an expected duration, the
percent is the share of that duration that has passed (capped at 99, and the stage becomes
``training``); without one it stays ``None``: a percent is never invented.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from hubferry.domain.progress import STAGES, overall_percent, stage_index
from hubferry.tracking.eta import DEFAULT_SMOOTHING, RateEstimator, eta_seconds, time_based_percent
from hubferry.tracking.parsers import Reading, classify_label, is_bare, parse_line

_STARTING, _TRAINING = stage_index("starting"), stage_index("training")
_KIND_PRIORITY = {"bar": 3, "steps": 2, "trainer": 1, "epochs": 0}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Progress at one moment.

    Attributes:
        stage: one of :data:`hubferry.domain.progress.STAGES`.
        percent: progress through ``stage``, 0–100, or ``None`` when unknown.
        step: the training step reached, when the log says.
        total_steps: the number of training steps, when known.
        loss: the latest training loss seen.
        rate_per_s: smoothed training steps per second.
        eta_seconds: seconds until training ends, from the rate and the steps left.
    """

    stage: str
    percent: float | None
    step: int | None
    total_steps: int | None
    loss: float | None
    rate_per_s: float | None
    eta_seconds: float | None

    @property
    def overall_percent(self) -> float:
        """Where this snapshot sits on the whole job's bar; see :mod:`hubferry.domain.progress`."""
        return overall_percent(self.stage, self.percent)

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-ready values."""
        return {
            "stage": self.stage,
            "percent": self.percent,
            "step": self.step,
            "total_steps": self.total_steps,
            "loss": self.loss,
            "rate_per_s": self.rate_per_s,
            "eta_seconds": self.eta_seconds,
        }


class ProgressTracker:
    """Fed log lines (and, when known, when they arrived), reports :class:`Snapshot` objects.

    Args:
        total_steps: the number of training steps, when the caller knows it; the bar with
            exactly this total is followed.
        total_epochs: the number of epochs, for logs that only report epochs.
        expected_duration_s: how long training should take, for a time-based estimate when
            no line gives progress.
        started_at: when training started, on the clock of the ``at`` timestamps; defaults to
            the first timestamp fed.
        smoothing: weight of the newest rate observation, see :class:`RateEstimator`.
    """

    def __init__(
        self,
        total_steps: int | None = None,
        *,
        total_epochs: int | None = None,
        expected_duration_s: float | None = None,
        started_at: float | None = None,
        smoothing: float = DEFAULT_SMOOTHING,
    ) -> None:
        self._total_steps = _positive("total_steps", total_steps)
        self._total_epochs = _positive("total_epochs", total_epochs)
        self._expected_duration_s = _positive("expected_duration_s", expected_duration_s)
        self._announced_steps: int | None = None
        self._announced_epochs: int | None = None
        self._started_at = started_at
        self._last_at: float | None = None
        self._stage = _STARTING
        self._floor: float | None = None
        self._confirmed = False
        self._parsed_percent = False
        self._sources: dict[tuple[Any, ...], Reading] = {}
        self._selected: tuple[Any, ...] | None = None
        self._loss: float | None = None
        self._rate = RateEstimator(smoothing)

    @property
    def stage(self) -> str:
        """The current stage."""
        return STAGES[self._stage]

    @property
    def expected_steps(self) -> int | None:
        """The number of training steps: as given, else as announced in the log."""
        return self._total_steps if self._total_steps is not None else self._announced_steps

    def feed(self, line: str, at: float | None = None) -> None:
        """Read one line of output (it may hold many ``\\r``-separated tqdm updates).

        Args:
            line: the text, with or without its newline.
            at: when the line arrived, in seconds on any clock that does not go back
                (``time.monotonic()``, a Unix time); enables timestamp-based rates and the
                time-based estimate.
        """
        if at is not None and math.isfinite(at):
            if self._started_at is None:
                self._started_at = at
            self._last_at = at if self._last_at is None else max(self._last_at, at)
        for reading in parse_line(line):
            self._apply(reading, at)
        self._apply_time_estimate(self._last_at)

    def snapshot(self, now: float | None = None) -> Snapshot:
        """Progress now; ``now`` (same clock as ``at``) defaults to the latest timestamp fed."""
        if now is not None and math.isfinite(now):
            self._apply_time_estimate(now)
        step = total = None
        rate = eta = None
        if self._stage >= _TRAINING:
            _, step, total = self._progress()
            if total is None:
                total = self.expected_steps
        if self._stage == _TRAINING:
            if self._selected is not None:
                rate = self._rate.rate_per_s
                if step is not None and total is not None:
                    eta = eta_seconds(total - step, rate)
            elif not self._parsed_percent:
                eta = self._time_based_eta(now)
        elif self._stage == _STARTING:
            total = self.expected_steps
        return Snapshot(
            stage=self.stage,
            percent=self._floor,
            step=None if step is None else int(step),
            total_steps=None if total is None else int(total),
            loss=self._loss,
            rate_per_s=rate,
            eta_seconds=eta,
        )

    # -- internals -------------------------------------------------------------------------

    def _apply(self, reading: Reading, at: float | None) -> None:
        kind = reading.kind
        if kind == "setup":
            if reading.total_steps is not None and self._announced_steps is None:
                self._announced_steps = reading.total_steps
            if reading.total_epochs is not None and self._announced_epochs is None:
                self._announced_epochs = reading.total_epochs
            if reading.training_started:
                self._confirm()
            return
        if kind == "loss":
            self._loss = reading.loss
            return
        if kind == "bar" and not self._is_training_bar(reading):
            if self._stage == _STARTING and reading.percent is not None and not self._is_unknown_bare(reading):
                self._raise_floor(reading.percent)
            return
        self._confirm()
        if reading.loss is not None:
            self._loss = reading.loss
        if self._stage != _TRAINING:
            return
        key = _source_key(reading)
        self._sources[key] = reading
        if key != self._selected:
            current = self._sources.get(self._selected) if self._selected is not None else None
            if current is not None and self._score(reading) <= self._score(current):
                return
            self._selected = key
            self._rate.reset()
        percent, step, _ = self._progress()
        if reading.rate_per_s is not None:
            self._rate.observe_rate(reading.rate_per_s, step)
        if at is not None and step is not None:
            self._rate.observe_step(step, at)
        if percent is not None:
            self._parsed_percent = True
            self._raise_floor(percent)

    def _is_training_bar(self, reading: Reading) -> bool:
        label_class = classify_label(reading.label, counts_bytes=reading.counts_bytes)
        if label_class == "other":
            return False
        if is_bare(reading):
            # "label: 45%" is too common a shape ("GPU util: 45%") to trust without a training label.
            return label_class == "training"
        if label_class == "training" or self._confirmed or reading.loss is not None:
            return True
        return reading.total is not None and reading.total == self.expected_steps

    @staticmethod
    def _is_unknown_bare(reading: Reading) -> bool:
        """A bare percent whose label says nothing: not progress of anything we know."""
        return is_bare(reading) and classify_label(reading.label) == "unknown"

    def _score(self, reading: Reading) -> tuple[bool, int, bool, int, float]:
        expected = self.expected_steps
        total = reading.total
        if reading.kind == "trainer":
            matches = expected is not None
            labelled = 1
        else:
            matches = expected is not None and total is not None and total == expected
            if reading.kind == "bar":
                labelled = 2 if classify_label(reading.label) == "training" else 1
            else:
                labelled = 2 if reading.kind == "steps" else 1
        has_total = total is not None or (reading.kind in ("trainer", "steps") and expected is not None)
        return (matches, labelled, has_total, _KIND_PRIORITY[reading.kind], total or 0.0)

    def _progress(self) -> tuple[float | None, float | None, float | None]:
        """(percent, step, total steps) of the followed source."""
        reading = self._sources.get(self._selected) if self._selected is not None else None
        if reading is None:
            return None, None, None
        expected = self.expected_steps
        if reading.kind == "epochs":
            if reading.n is None or not reading.total:
                return None, None, expected
            # "epoch 2/10" is printed when epoch 2 starts in most trainers (and at its end in
            # others): count only the epochs surely done, so the estimate never runs ahead.
            return 100.0 * max(0.0, reading.n - 1) / reading.total, None, expected
        if reading.kind == "trainer":
            if reading.n is not None and expected is not None:
                return 100.0 * reading.n / expected, reading.n, expected
            epochs = self._total_epochs if self._total_epochs is not None else self._announced_epochs
            if reading.epoch is not None and epochs is not None:
                fraction = reading.epoch / epochs
                step = round(fraction * expected) if expected is not None else None
                return 100.0 * fraction, step, expected
            return None, reading.n, expected
        total = reading.total if reading.total is not None else expected
        if reading.n is not None and total is not None:
            return 100.0 * reading.n / total, reading.n, total
        return reading.percent, reading.n, total

    def _confirm(self) -> None:
        self._confirmed = True
        if self._stage == _STARTING:
            self._enter(_TRAINING)

    def _enter(self, index: int) -> None:
        self._stage = index
        self._floor = None
        self._rate.reset()

    def _raise_floor(self, percent: float) -> None:
        if math.isnan(percent):
            return
        percent = min(100.0, max(0.0, percent))
        if self._floor is None or percent > self._floor:
            self._floor = percent

    def _apply_time_estimate(self, now: float | None) -> None:
        if self._expected_duration_s is None or self._parsed_percent or self._stage > _TRAINING:
            return
        if now is None or self._started_at is None:
            return
        percent = time_based_percent(now - self._started_at, self._expected_duration_s)
        if percent is None:
            return
        if self._stage == _STARTING:
            self._enter(_TRAINING)
        self._raise_floor(percent)

    def _time_based_eta(self, now: float | None) -> float | None:
        now = now if now is not None else self._last_at
        if self._expected_duration_s is None or now is None or self._started_at is None:
            return None
        remaining = self._expected_duration_s - (now - self._started_at)
        return remaining if remaining > 0 else None


def parse_log(
    stream_or_lines: IO[str] | IO[bytes] | Iterable[str | bytes] | str, total_steps: int | None = None
) -> Snapshot:
    """Read a whole log and report where it got to (used by ``hubferry logs parse``).

    Args:
        stream_or_lines: an open text or binary stream, an iterable of lines, or the whole
            log as one string. Bytes are decoded as UTF-8, replacing what does not decode.
        total_steps: the number of training steps, when known.

    Returns:
        The snapshot after the last line. No timestamps are known, so ``rate_per_s`` and
        ``eta_seconds`` come only from the rates the trainer printed.

    Raises:
        ValueError: ``total_steps`` is not a positive number.
    """
    tracker = ProgressTracker(total_steps=total_steps)
    lines: Iterable[str | bytes]
    lines = io.StringIO(stream_or_lines) if isinstance(stream_or_lines, str) else stream_or_lines
    for line in lines:
        tracker.feed(line.decode("utf-8", "replace") if isinstance(line, bytes) else line)
    return tracker.snapshot()


def _source_key(reading: Reading) -> tuple[Any, ...]:
    label = "".join("#" if c.isdigit() else c for c in reading.label.lower())
    return (reading.kind, " ".join(label.split()), reading.total)


def _positive(name: str, value: float | None) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value
