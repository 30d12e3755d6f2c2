"""What the dashboard shows of a job, computed from the store: stage steps, the loss curve, the timeline's
stages with their durations, published files. Pure functions of their inputs (no I/O but the listed reads)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubferry.domain.jobs import EventKind, Job, JobEvent, JobState
from hubferry.services import views as shared_views
from hubferry.store.progress_history import ProgressPoint

#: The stages a job goes through, in order, as the progress bar names them.
STAGES = ("preparing", "training", "publishing", "verifying")
#: Loss-curve drawing area in SVG user units (stretched to the box; the labels are HTML around it).
CHART_W, CHART_H = 1000, 300
#: Room kept above and below the curve so the line's stroke is not cut.
CHART_PAD = 6
#: Most points drawn (a long run's history is thinned evenly).
MAX_CHART_POINTS = 400
#: Files listed under a published job.
MAX_FILES = 200

ACTIVE = frozenset({JobState.QUEUED, JobState.PREPARING, JobState.TRAINING, JobState.PUBLISHING,
                    JobState.VERIFYING})


def is_live(job: Job) -> bool:
    """Whether the job may still change by itself (its page listens for events)."""
    return job.state in ACTIVE


def failed_after_training(job: Job) -> str | None:
    """The stage (``publishing`` or ``verifying``) a failed or cancelled job stopped in after its training had
    succeeded, else None: its page and row say the training is done rather than show a bar that stopped."""
    if job.state in (JobState.FAILED, JobState.CANCELLED) and job.progress.stage in ("publishing", "verifying"):
        return job.progress.stage
    return None


def can_cancel(job: Job) -> bool:
    return job.state in ACTIVE


def can_retry(job: Job) -> bool:
    return job.state in (JobState.FAILED, JobState.TRAINED)


@dataclass(frozen=True)
class StageStep:
    name: str
    #: ``done``, ``current``, ``failed`` or ``todo``.
    status: str


def stage_name(stage: str | None) -> str | None:
    """A progress stage as the dashboard names it (the tracker's ``starting`` is the ``preparing`` state)."""
    return "preparing" if stage == "starting" else stage


def failed_stage(events: Sequence[JobEvent]) -> str | None:
    """The stage of the timeline's last failure, if any."""
    for event in reversed(events):
        if event.kind is EventKind.STAGE_FAILED:
            return event.stage
    return None


def stage_steps(job: Job, failed: str | None = None) -> list[StageStep]:
    """The four stages with where the job is among them (``failed``: the stage a failed job stopped in)."""
    current = stage_name(job.progress.stage) or ("preparing" if job.state is JobState.QUEUED else None)
    if job.state in (JobState.FAILED, JobState.CANCELLED) and failed in STAGES:
        current = failed
    if job.state is JobState.PUBLISHED:
        return [StageStep(s, "done") for s in STAGES]
    if job.state is JobState.TRAINED:
        return [StageStep(s, "done" if s in ("preparing", "training") else "todo") for s in STAGES]
    index = STAGES.index(current) if current in STAGES else -1
    steps = []
    for i, stage in enumerate(STAGES):
        if i < index:
            status = "done"
        elif i == index:
            status = "failed" if job.state in (JobState.FAILED, JobState.CANCELLED) else "current"
        else:
            status = "todo"
        steps.append(StageStep(stage, status))
    return steps


@dataclass(frozen=True)
class Chart:
    """A loss curve ready to draw: an SVG polyline and its axis labels."""

    points: str
    loss_max: float
    loss_min: float
    step_min: int
    step_max: int
    count: int
    width: int = CHART_W
    height: int = CHART_H


def loss_chart(points: Sequence[ProgressPoint]) -> Chart | None:
    """The loss against the step (or the report's order, without steps); None before two losses are known."""
    raw = [(p.step if p.step is not None else i, p.loss) for i, p in enumerate(points)
           if p.loss is not None and math.isfinite(p.loss)]
    if len(raw) < 2:
        return None
    if len(raw) > MAX_CHART_POINTS:
        stride = len(raw) / MAX_CHART_POINTS
        raw = [raw[int(i * stride)] for i in range(MAX_CHART_POINTS - 1)] + [raw[-1]]
    xs = [float(x) for x, _ in raw]
    ys = [float(y) for _, y in raw]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    if x1 - x0 < 1e-12:
        x1 = x0 + 1
    left, right, top, bottom = 0, CHART_W, CHART_PAD, CHART_H - CHART_PAD

    def at(x: float, y: float) -> tuple[float, float]:
        return (round(left + (x - x0) / (x1 - x0) * (right - left), 1),
                round(bottom - (y - y0) / (y1 - y0) * (bottom - top), 1))

    drawn = [at(x, y) for x, y in zip(xs, ys, strict=True)]
    return Chart(" ".join(f"{x},{y}" for x, y in drawn), y1, y0, int(x0), int(x1), len(raw))


@dataclass(frozen=True)
class StageSpan:
    stage: str
    #: ``finished``, ``failed`` or ``running``.
    outcome: str
    started_at: Any
    seconds: float | None
    message: str


def stage_spans(events: Sequence[JobEvent], now: Any, *, live: bool = True) -> list[StageSpan]:
    """Each stage run of the timeline with how long it took.

    A stage ends with its own finished/failed entry, else when the next stage starts; the last one
    still open is running (timed until ``now``) while the job is live, else it ends at the last entry.
    """
    spans: list[StageSpan] = []
    open_stage: tuple[str, Any] | None = None

    def close(at: Any, outcome: str, message: str = "") -> None:
        nonlocal open_stage
        if open_stage is not None:
            stage, started = open_stage
            spans.append(StageSpan(stage, outcome, started, (at - started).total_seconds(), message))
            open_stage = None

    for event in events:
        if event.stage is None:
            continue
        if event.kind is EventKind.STAGE_STARTED:
            close(event.at, "finished")
            open_stage = (event.stage, event.at)
        elif event.kind in (EventKind.STAGE_FINISHED, EventKind.STAGE_FAILED) and open_stage is not None \
                and open_stage[0] == event.stage:
            close(event.at, "finished" if event.kind is EventKind.STAGE_FINISHED else "failed", event.message)
    if open_stage is not None:
        if live:
            spans.append(StageSpan(open_stage[0], "running", open_stage[1],
                                   (now - open_stage[1]).total_seconds(), ""))
        else:
            close(events[-1].at, "ended")
    return spans


def verified_files(events: Sequence[JobEvent]) -> int | None:
    """How many files the last successful read-back checked (None if none succeeded)."""
    for event in reversed(events):
        if event.kind is EventKind.STAGE_FINISHED and event.stage == "verifying":
            files = event.context.get("files")
            return int(files) if isinstance(files, int) else None
    return None


def published_files(job: Job, events: Sequence[JobEvent]) -> list[dict[str, Any]]:
    """The published files to list: the last read-back's record (each with its ``verified`` mark), or for a
    job published before files were recorded, its output folder (``verified`` None: not recorded per file)."""
    recorded = shared_views.published_files(list(events))
    if recorded is not None:
        return recorded[:MAX_FILES]
    return [{"path": path, "size": size, "verified": None} for path, size in output_files(job)]


def output_files(job: Job) -> list[tuple[str, int]]:
    """The files of the job's output folder (what was published) with their sizes, regular files only."""
    if not job.output_dir:
        return []
    root = Path(job.output_dir)
    found: list[tuple[str, int]] = []
    try:
        for path in sorted(root.rglob("*")):
            if len(found) >= MAX_FILES:
                break
            if path.is_file() and not path.is_symlink() and not any(p.startswith(".") for p in path.parts[-3:]):
                found.append((path.relative_to(root).as_posix(), path.stat().st_size))
    except OSError:
        return found
    return found
