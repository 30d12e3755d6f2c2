"""Turn tracker snapshots and push events into the job's stored progress."""

from __future__ import annotations

from dataclasses import replace

from hubferry.domain.jobs import StageProgress
from hubferry.domain.progress import overall_percent
from hubferry.tracking import Snapshot


def from_snapshot(snapshot: Snapshot) -> StageProgress:
    """Training progress: the overall bar (5–95 % while training) plus step, loss and ETA."""
    return StageProgress(
        stage=snapshot.stage, percent=round(snapshot.overall_percent, 2), step=snapshot.step,
        total_steps=snapshot.total_steps, loss=snapshot.loss, eta_seconds=snapshot.eta_seconds,
    )


def for_stage(stage: str, fraction: float | None = None, eta_seconds: float | None = None) -> StageProgress:
    """Progress of a non-training stage (``starting``, ``publishing``, ``verifying``)."""
    percent = None if fraction is None else max(0.0, min(100.0, fraction * 100))
    return StageProgress(stage=stage, percent=round(overall_percent(stage, percent), 2), eta_seconds=eta_seconds)


def after_training(trained: StageProgress, stage: str, fraction: float | None = None) -> StageProgress:
    """Progress of ``publishing`` or ``verifying`` that keeps the step training reached (and its total), so a
    job whose publish fails still shows how far its training went. The loss is not repeated: each report is
    also a point of the loss curve, which must hold the trainer's reports only."""
    return replace(for_stage(stage, fraction), step=trained.step, total_steps=trained.total_steps)
