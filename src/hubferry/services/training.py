"""Run a local training job: start the trainer, follow its log live, hand success to publishing."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from hubferry.domain.jobs import ErrorInfo, EventKind, JobState
from hubferry.errors import HubferryError
from hubferry.logs import get_logger, redact
from hubferry.services import progress as job_progress
from hubferry.services.context import Context
from hubferry.services.publishing import training_succeeded
from hubferry.tracking import ProgressTracker
from hubferry.trainers.base import RunStatus
from hubferry.trainers.local import LocalTrainer

log = get_logger(__name__)
#: How often the log is read and progress stored while training runs.
FOLLOW_INTERVAL_S = 0.5
#: Log lines kept in a failed job's error.
TAIL_LINES = 20


class LogFollower:
    """Reads what a trainer appended to its log since the last call; ``\\r`` ends a line too (tqdm)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = ""

    def read_new(self) -> list[str]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        text = self.partial + data.decode("utf-8", errors="replace")
        parts = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self.partial = parts.pop()
        return [p for p in parts if p]

    def flush(self) -> list[str]:
        lines = self.read_new()
        if self.partial:
            lines.append(self.partial)
            self.partial = ""
        return lines


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log (tqdm redraws collapsed), secrets redacted."""
    try:
        text = path.read_bytes()[-64_000:].decode("utf-8", errors="replace")
    except OSError:
        return ""
    rows = [r.rstrip("\r").split("\r")[-1] for r in text.split("\n") if r.strip()]
    return redact("\n".join(rows[-lines:]))


def run_training(ctx: Context, job_id: str) -> None:
    """Train ``job_id`` if it is queued (idempotent: anything else is left alone)."""
    if ctx.jobs.transition(job_id, JobState.QUEUED, JobState.PREPARING) is None:
        log.info("not queued; skipping", job_id=job_id)
        return
    job = ctx.jobs.require(job_id)
    ctx.jobs.append_event(job_id, EventKind.STAGE_STARTED, stage="preparing")
    ctx.jobs.update_progress(job_id, job_progress.for_stage("starting", 0.0))
    params = job.params
    log_path = ctx.settings.home / "logs" / f"{job_id}.log"
    output_dir = Path(params["output_dir"])
    # The command can find the folder to write into in HUBFERRY_OUTPUT_DIR.
    trainer = LocalTrainer(params["command"], cwd=params.get("cwd"), env={"HUBFERRY_OUTPUT_DIR": str(output_dir)})
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        pid = trainer.start(log_path)
    except (HubferryError, OSError) as exc:
        _fail(ctx, job_id, JobState.PREPARING, ErrorInfo.from_exception(exc), "preparing")
        return
    ctx.jobs.set_runtime(job_id, pid=pid, log_path=str(log_path), output_dir=str(output_dir))
    if ctx.jobs.transition(job_id, JobState.PREPARING, JobState.TRAINING) is None:
        trainer.cancel(ctx.settings.cancel_grace_s)  # cancelled meanwhile
        return
    started = time.monotonic()
    ctx.jobs.append_event(job_id, EventKind.STAGE_STARTED, stage="training",
                          context={"pid": pid, "host": socket.gethostname(), "log_path": str(log_path)})
    state = _follow(ctx, job_id, trainer, LogFollower(log_path), params.get("total_steps"))
    duration = round(time.monotonic() - started, 2)
    if state.status is RunStatus.CANCELLED:
        ctx.jobs.append_event(job_id, EventKind.NOTICE, stage="training", message="trainer stopped (cancelled)")
        return
    if state.status is RunStatus.FAILED:
        tail = log_tail(log_path)
        error = ErrorInfo(
            "training_error", f"{state.message}. Last lines of the log:\n{tail}",
            hint=f"read the full log at {log_path}, fix the problem, then `hubferry retry {job_id}`", retryable=True,
        )
        _fail(ctx, job_id, JobState.TRAINING, error, "training", exit_code=state.exit_code, duration_s=duration)
        return
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        error = ErrorInfo(
            "training_error", f"the training command exited 0 but wrote nothing to {output_dir}",
            hint="pass the folder the trainer writes its weights to with --output", retryable=True,
        )
        _fail(ctx, job_id, JobState.TRAINING, error, "training", duration_s=duration)
        return
    ctx.jobs.set_runtime(job_id, pid=None)
    ctx.jobs.append_event(job_id, EventKind.STAGE_FINISHED, stage="training",
                          context={"duration_s": duration, "output_dir": str(output_dir)})
    training_succeeded(ctx, job_id)


def _follow(ctx: Context, job_id: str, trainer: LocalTrainer, follower: LogFollower, total_steps: int | None):
    tracker = ProgressTracker(total_steps=total_steps)
    while True:
        state = trainer.poll()
        lines = follower.read_new() if state.status is RunStatus.RUNNING else follower.flush()
        now = time.monotonic()
        for line in lines:
            tracker.feed(line, at=now)
        if lines:
            ctx.jobs.update_progress(job_id, job_progress.from_snapshot(tracker.snapshot(now)))
        if state.status is not RunStatus.RUNNING:
            return state
        job = ctx.jobs.require(job_id)
        if job.state is JobState.CANCELLED:
            trainer.cancel(ctx.settings.cancel_grace_s)
            return trainer.poll()
        time.sleep(FOLLOW_INTERVAL_S)


def _fail(ctx: Context, job_id: str, expected: JobState, error: ErrorInfo, stage: str, **context: object) -> None:
    if ctx.jobs.transition(job_id, expected, JobState.FAILED, error=error) is not None:
        ctx.jobs.append_event(job_id, EventKind.STAGE_FAILED, stage=stage, message=error.message[:500],
                              context={k: v for k, v in context.items() if v is not None})
    log.warning("training failed", job_id=job_id, error=error.message.splitlines()[0])
