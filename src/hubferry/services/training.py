"""Run a training job through its Trainer: start it, follow its log live, hand success to publishing."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from hubferry.domain.jobs import ErrorInfo, EventKind, Job, JobState
from hubferry.errors import HubferryError
from hubferry.logs import get_logger, printable
from hubferry.secrets.hub_credentials import job_owner
from hubferry.services import progress as job_progress
from hubferry.services.context import Context
from hubferry.services.publishing import training_succeeded
from hubferry.tracking import ProgressTracker
from hubferry.tracking.logfile import tail
from hubferry.trainers import Handle, Observation, RunStatus, Trainer

log = get_logger(__name__)
#: How often the log is read and progress stored while training runs.
FOLLOW_INTERVAL_S = 0.5
#: Log lines kept in a failed job's error, and the most characters that error may hold.
TAIL_LINES = 20
MAX_ERROR_CHARS = 4000
#: Vault entries (owner ``job:<id>``) of a job's secrets: the variables the user passed on purpose, and
#: the command itself when it holds a token (the job records it redacted).
PASSED_ENV = "pass-env"
SECRET_COMMAND = "command"


def run_training(ctx: Context, job_id: str) -> None:
    """Train ``job_id`` if it is queued (idempotent: anything else is left alone)."""
    if ctx.jobs.transition(job_id, JobState.QUEUED, JobState.PREPARING) is None:
        log.info("not queued; skipping", job_id=job_id)
        return
    job = ctx.jobs.require(job_id)
    ctx.jobs.append_event(job_id, EventKind.STAGE_STARTED, stage="preparing")
    ctx.jobs.update_progress(job_id, job_progress.for_stage("starting", 0.0))
    log_path = ctx.settings.home / "logs" / f"{job_id}.log"
    output_dir = Path(job.params["output_dir"])
    try:
        trainer = ctx.trainer_for(job.trainer)
        output_dir.mkdir(parents=True, exist_ok=True)
        runnable, passed = _with_secrets(ctx, job)
        ctx.jobs.set_log_cursor(job_id, "")  # a new run's log (a retried training's too) is read from its start
        handle = trainer.start(runnable, log_path, passed)
    except (HubferryError, OSError) as exc:
        _fail(ctx, job_id, JobState.PREPARING, ErrorInfo.from_exception(exc), "preparing")
        return
    ctx.jobs.set_runtime(job_id, trainer_handle=handle, log_path=str(log_path), output_dir=str(output_dir))
    if ctx.jobs.transition(job_id, JobState.PREPARING, JobState.TRAINING) is None:
        trainer.cancel(handle, ctx.settings.cancel_grace_s)  # cancelled meanwhile
        return
    ctx.jobs.append_event(job_id, EventKind.STAGE_STARTED, stage="training", context=dict(handle))
    if trainer.capabilities.pushes_events:
        return  # a remote run: webhooks, polls and status reads follow it (services/remote.py)
    started = time.monotonic()
    seen = _follow(ctx, job_id, trainer, handle, job.params.get("total_steps"))
    duration = round(time.monotonic() - started, 2)
    if seen.status is RunStatus.CANCELLED or ctx.jobs.require(job_id).state is JobState.CANCELLED:
        ctx.jobs.append_event(job_id, EventKind.NOTICE, stage="training", message="trainer stopped (cancelled)",
                              context={"duration_s": duration})
        return
    if seen.status is not RunStatus.SUCCEEDED:
        _fail(ctx, job_id, JobState.TRAINING, training_failure(job_id, seen.message, log_path), "training",
              exit_code=seen.exit_code, duration_s=duration)
        return
    try:
        outputs = trainer.fetch_outputs(handle, output_dir)
    except HubferryError as exc:
        _fail(ctx, job_id, JobState.TRAINING, ErrorInfo.from_exception(exc), "training", duration_s=duration)
        return
    if not outputs.is_dir() or not any(outputs.iterdir()):
        error = ErrorInfo(
            "training_error", f"the training command exited 0 but wrote nothing to {outputs}",
            hint="pass the folder the trainer writes its weights to with --output", retryable=True,
        )
        _fail(ctx, job_id, JobState.TRAINING, error, "training", duration_s=duration)
        return
    ctx.jobs.append_event(job_id, EventKind.STAGE_FINISHED, stage="training",
                          context={"duration_s": duration, "output_dir": str(outputs)})
    training_succeeded(ctx, job_id)


def _with_secrets(ctx: Context, job: Job) -> tuple[Job, dict[str, str]]:
    """The job as its trainer must run it (the real command), and the secret variables it was given."""
    vault, owner = ctx.credentials.vault, job_owner(job.id)
    command, passed = vault.get(owner, SECRET_COMMAND), vault.get(owner, PASSED_ENV)
    if command is not None:
        job = dataclasses.replace(job, params={**job.params, "command": json.loads(command)})
    return job, json.loads(passed) if passed else {}


def training_failure(job_id: str, reason: str, log_path: Path) -> ErrorInfo:
    """A failed training's error: the reason (always kept) and the end of its log, escapes removed,
    secrets redacted, at most :data:`MAX_ERROR_CHARS` long."""
    reason = printable(reason) + ". Last lines of the log:\n"
    log_tail = printable(tail(log_path, TAIL_LINES))[-max(0, MAX_ERROR_CHARS - len(reason)):]
    return ErrorInfo(
        "training_error", (reason + log_tail)[:MAX_ERROR_CHARS],
        hint=f"read the full log with `hubferry logs show {job_id}`, fix the problem, then `hubferry retry {job_id}`",
        retryable=True,
    )


def _follow(ctx: Context, job_id: str, trainer: Trainer, handle: Handle, total_steps: int | None) -> Observation:
    tracker = ProgressTracker(total_steps=total_steps)
    cursor = ""
    while True:
        seen = trainer.poll(handle, cursor)
        cursor = seen.cursor
        now = time.monotonic()
        for line in seen.lines:
            tracker.feed(line, at=now)
        if seen.lines:
            ctx.jobs.update_progress(job_id, job_progress.from_snapshot(tracker.snapshot(now)))
        if seen.status is not RunStatus.RUNNING:
            return seen
        if ctx.jobs.require(job_id).state is JobState.CANCELLED:
            trainer.cancel(handle, ctx.settings.cancel_grace_s)
        time.sleep(FOLLOW_INTERVAL_S)


def _fail(ctx: Context, job_id: str, expected: JobState, error: ErrorInfo, stage: str, **context: object) -> None:
    if ctx.jobs.transition(job_id, expected, JobState.FAILED, error=error) is not None:
        ctx.jobs.append_event(job_id, EventKind.STAGE_FAILED, stage=stage, message=error.message[:500],
                              context={k: v for k, v in context.items() if v is not None})
    log.warning("training failed", job_id=job_id, error=error.message.splitlines()[0])
