"""User actions on existing jobs: cancel and retry."""

from __future__ import annotations

from pathlib import Path

from hubferry.domain.jobs import ACTIVE_STATES, EventKind, Job, JobState
from hubferry.domain.naming import validate_repo_id
from hubferry.errors import ValidationError
from hubferry.services import credentials
from hubferry.services.context import Context
from hubferry.services.publishing import begin_publish


def cancel(ctx: Context, job_id: str) -> Job:
    """Cancel an active job; a running trainer is stopped through its backend.

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
            trainer = ctx.trainer_for(job.trainer)
            running = job.state in (JobState.PREPARING, JobState.TRAINING) or trainer.capabilities.publishes_from_run
            if job.trainer_handle and running:  # a pod is terminated whatever it was doing
                trainer.cancel(job.trainer_handle, ctx.settings.cancel_grace_s)
            ctx.jobs.append_event(job_id, EventKind.NOTICE, message="cancelled by the user",
                                  context={"from_state": job.state.value})
            credentials.forget_job(ctx.credentials, job_id)
            return ctx.jobs.require(job_id)
    raise ValidationError(f"job {job_id} kept changing state; try again", field="job_id")


def _retarget(ctx: Context, job: Job, *, token: str | None, repo_id: str | None, endpoint: str | None) -> Job:
    """Apply a retry's ``--token``/``--repo``/``--endpoint`` and the retrying shell's HF_TOKEN.

    Given no token, the job keeps its own, unless the Hub refused that token (an authentication
    failure): then the owner's stored token (read at publish time) takes over.
    """
    target, source = credentials.resolve_for_command(
        ctx.settings, ctx.credentials, job.owner, endpoint=endpoint or str(job.params.get("hub_endpoint") or ""),
        token=token,
    )
    if repo_id:
        validate_repo_id(repo_id)
    refused = job.error is not None and job.error.category == "authentication"
    keep_own = source not in (credentials.FLAG, credentials.SHELL) and not refused and not endpoint
    recorded = job.params.get("credential") if keep_own else None
    if recorded is None:
        recorded = credentials.bind_to_job(ctx.credentials, job.id, target, source)
    params = {**job.params, "hub_endpoint": target.endpoint, "credential": recorded}
    ctx.jobs.retarget(job.id, repo_id=repo_id or job.repo_id, repo_auto_named=job.repo_auto_named and not repo_id,
                      params=params)
    if repo_id or endpoint or not keep_own:
        ctx.jobs.append_event(job.id, EventKind.NOTICE, message="retry target",
                              context={"repo_id": repo_id or job.repo_id, "endpoint": target.endpoint,
                                       "token": recorded.get("source")})
    return ctx.jobs.require(job.id)


def retry(
    ctx: Context, job_id: str, *, token: str | None = None, repo_id: str | None = None, endpoint: str | None = None,
) -> Job:
    """Re-run what failed without retraining when possible, and dispatch it.

    A failed or skipped publish (``failed`` with training output, or ``trained``) goes back to
    ``publishing`` (to ``repo_id``/``endpoint`` when given, with ``token`` when given); a failed
    training goes back to ``queued``.

    Raises:
        ValidationError: the job is not in a retryable state, with the reason.
    """
    job = ctx.jobs.require(job_id)
    has_output = ctx.trainer_for(job.trainer).capabilities.publishes_from_run or bool(  # a pod keeps its own
        job.output_dir and Path(job.output_dir).is_dir() and any(Path(job.output_dir).iterdir()))
    trained_before = any(e.kind is EventKind.STAGE_FINISHED and e.stage == "training" for e in ctx.jobs.events(job_id))
    if job.state is JobState.TRAINED or (job.state is JobState.FAILED and trained_before and has_output):
        job = _retarget(ctx, job, token=token, repo_id=repo_id, endpoint=endpoint)
        if not begin_publish(ctx, job, job.state, message="publish retried by the user"):
            raise ValidationError(f"job {job_id} changed state meanwhile; run `hubferry jobs show {job_id}`")
        return ctx.jobs.require(job_id)
    if job.state is JobState.FAILED:
        if not ctx.trainer_for(job.trainer).capabilities.can_retry_training:
            raise ValidationError(f"the {job.trainer} trainer cannot retry a failed training", field="job_id",
                                  hint="submit a new job")
        job = _retarget(ctx, job, token=token, repo_id=repo_id, endpoint=endpoint)
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
