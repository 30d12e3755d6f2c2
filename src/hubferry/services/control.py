"""User actions on existing jobs: cancel and retry."""

from __future__ import annotations

from pathlib import Path

from hubferry.domain.jobs import ACTIVE_STATES, EventKind, Job, JobState
from hubferry.errors import ValidationError
from hubferry.services.context import Context
from hubferry.services.publishing import begin_publish
from hubferry.trainers.local import terminate_group


def cancel(ctx: Context, job_id: str) -> Job:
    """Cancel an active job; a running local trainer's process group is terminated.

    Raises:
        ValidationError: the job has already ended (published, failed, cancelled, trained).
    """
    for _ in range(5):  # the job may move while we try; re-read and try again
        job = ctx.jobs.require(job_id)
        if job.state not in ACTIVE_STATES:
            raise ValidationError(
                f"job {job_id} is {job.state.value}; only queued, preparing, training, publishing or verifying jobs "
                "can be cancelled", field="job_id",
            )
        if ctx.jobs.transition(job_id, job.state, JobState.CANCELLED, message="cancelled by the user") is not None:
            if job.pid and job.state in (JobState.PREPARING, JobState.TRAINING):
                terminate_group(job.pid, ctx.settings.cancel_grace_s)
            ctx.jobs.append_event(job_id, EventKind.NOTICE, message="cancelled by the user",
                                  context={"from_state": job.state.value})
            return ctx.jobs.require(job_id)
    raise ValidationError(f"job {job_id} kept changing state; try again", field="job_id")


def retry(ctx: Context, job_id: str) -> Job:
    """Re-run what failed without retraining when possible, and dispatch it.

    A failed or skipped publish (``failed`` with training output, or ``trained``) goes back to
    ``publishing``; a failed training goes back to ``queued``.

    Raises:
        ValidationError: the job is not in a retryable state, with the reason.
    """
    job = ctx.jobs.require(job_id)
    has_output = bool(job.output_dir and Path(job.output_dir).is_dir() and any(Path(job.output_dir).iterdir()))
    trained_before = any(e.kind is EventKind.STAGE_FINISHED and e.stage == "training" for e in ctx.jobs.events(job_id))
    if job.state is JobState.TRAINED or (job.state is JobState.FAILED and trained_before and has_output):
        if not begin_publish(ctx, job, job.state, message="publish retried by the user"):
            raise ValidationError(f"job {job_id} changed state meanwhile; run `hubferry jobs show {job_id}`")
        return ctx.jobs.require(job_id)
    if job.state is JobState.FAILED:
        if job.trainer != "local":
            raise ValidationError(f"the {job.trainer} trainer cannot retry a failed training", field="job_id")
        moved = ctx.jobs.transition(job_id, JobState.FAILED, JobState.QUEUED, message="training retried by the user")
        if moved is None:
            raise ValidationError(f"job {job_id} changed state meanwhile; run `hubferry jobs show {job_id}`")
        ctx.dispatch().train(job_id)
        return ctx.jobs.require(job_id)
    reason = {
        JobState.PUBLISHED: "it is already published",
        JobState.CANCELLED: "it was cancelled; submit a new job",
    }.get(job.state, "it is still running")
    raise ValidationError(f"job {job_id} cannot be retried: {reason} (state {job.state.value})", field="job_id")
