"""What the dashboard computes for a job page: stage steps, stage durations, the loss curve."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hubferry.domain.jobs import EventKind, JobEvent, JobState, StageProgress, new_job
from hubferry.store.progress_history import ProgressPoint
from hubferry.web import views

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def event(seq: int, seconds: float, kind: EventKind, stage: str | None, message: str = "") -> JobEvent:
    return JobEvent("job_x", seq, T0 + timedelta(seconds=seconds), kind, stage, message)


def job(state: JobState, stage: str | None = None):
    made = new_job(owner="ann", name="j", trainer="local", params={}, dataset="/data", repo_id="ann/j", now=T0)
    return dataclasses.replace(made, state=state, progress=StageProgress(stage=stage) if stage else made.progress)


def test_stages_end_when_the_next_starts_and_a_failure_is_kept_with_its_message():
    events = [event(1, 0, EventKind.STAGE_STARTED, "preparing"), event(2, 2, EventKind.STAGE_STARTED, "training"),
              event(3, 62, EventKind.STAGE_FINISHED, "training"), event(4, 63, EventKind.STAGE_STARTED, "publishing"),
              event(5, 65, EventKind.STAGE_FAILED, "publishing", "403 from the Hub")]
    spans = views.stage_spans(events, T0 + timedelta(seconds=100), live=False)
    assert [(s.stage, s.outcome, s.seconds) for s in spans] == [
        ("preparing", "finished", 2), ("training", "finished", 60), ("publishing", "failed", 2)]
    assert spans[-1].message == "403 from the Hub"
    running = views.stage_spans(events[:2], T0 + timedelta(seconds=10), live=True)
    assert [(s.stage, s.outcome, s.seconds) for s in running] == [("preparing", "finished", 2),
                                                                 ("training", "running", 8)]
    assert views.failed_stage(events) == "publishing"


def test_stage_steps_mark_done_current_and_failed():
    steps = views.stage_steps(job(JobState.TRAINING, "training"))
    assert [(s.name, s.status) for s in steps] == [("preparing", "done"), ("training", "current"),
                                                   ("publishing", "todo"), ("verifying", "todo")]
    failed = views.stage_steps(job(JobState.FAILED, "starting"), failed="publishing")
    assert [s.status for s in failed] == ["done", "done", "failed", "todo"]
    assert views.stage_steps(job(JobState.PREPARING, "starting"))[0].status == "current"


def test_the_loss_curve_spans_the_box_and_skips_unknown_losses():
    points = [ProgressPoint(i, T0, "training", None, step, 100, loss)
              for i, (step, loss) in enumerate([(1, 3.0), (2, None), (10, float("nan")), (50, 1.0), (100, 0.5)])]
    chart = views.loss_chart(points)
    assert chart is not None and chart.count == 3 and (chart.step_min, chart.step_max) == (1, 100)
    xy = [tuple(map(float, p.split(","))) for p in chart.points.split()]
    assert xy[0][0] == 0 and xy[-1][0] == views.CHART_W  # first and last step at the edges
    assert xy[0][1] < xy[1][1] < xy[2][1]  # falling loss goes down the box (SVG y grows downwards)
    assert views.loss_chart(points[:1]) is None
