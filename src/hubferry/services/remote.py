"""Follow remote trainings (Replicate; RunPod later): one observation at a time, from polls, webhooks
and status reads alike, with at most one provider call per job per poll interval.

A remote training holds no thread while it runs. Whoever observes it (the poll task, a webhook's
task, ``jobs show``) reads it once through its Trainer, stores progress and the new log lines, and
on success downloads the outputs and starts the publish: the compare-and-set in
:func:`~hubferry.services.publishing.training_succeeded` keeps that to one.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import timedelta
from pathlib import Path

from hubferry.domain.jobs import ErrorInfo, EventKind, Job, JobState
from hubferry.errors import HubferryError, TransientError
from hubferry.logs import get_logger
from hubferry.services import progress as job_progress
from hubferry.services.context import Context
from hubferry.services.credentials import provider_key
from hubferry.services.datasets import discard_staged
from hubferry.services.publishing import training_succeeded
from hubferry.services.training import training_failure
from hubferry.tracking import ProgressTracker
from hubferry.tracking.logfile import append
from hubferry.trainers import RunStatus

log = get_logger(__name__)
#: Trainers whose runs are followed here rather than by the process that started them.
REMOTE_KINDS = ("replicate", "runpod")
#: Trainers whose runs publish their own outputs: their pods are also watched while they publish.
SELF_PUBLISHING_KINDS = ("runpod",)
#: Most jobs read in one poll cycle (the rest wait for the next).
POLL_BATCH = 1000
#: How long an observer that saw a training succeed holds the job while it downloads the weights; a
#: worker that dies meanwhile leaves the download to the first poll after it.
DOWNLOAD_HOLD = timedelta(minutes=15)
#: Observations of one poll cycle in flight at once: a provider round trip (~100 ms to Replicate) is
#: mostly waiting, so 1,000 jobs fit in a 5 s interval only when their reads overlap (1,000 x 0.1 s / 32 = 3 s).
POLL_THREADS = 32

_trackers: dict[str, ProgressTracker] = {}
_trackers_lock = threading.Lock()


def _tracker(job: Job) -> ProgressTracker:
    total = job.params.get("total_steps")
    with _trackers_lock:
        return _trackers.setdefault(job.id, ProgressTracker(total_steps=int(total) if total else None))


def forget_tracker(job_id: str) -> None:
    """Drop the progress tracker of a remote run that has ended."""
    with _trackers_lock:
        _trackers.pop(job_id, None)


def stale_after(ctx: Context) -> timedelta:
    return timedelta(seconds=ctx.settings.poll_interval_s)


def refresh(ctx: Context, job_id: str, *, force: bool = False) -> Job:
    """Observe a remote training job once, if nobody did within the poll interval (or ``force``: a
    webhook said something happened), and act on what it says. Any other job is returned as it is."""
    job = ctx.jobs.require(job_id)
    if not _remote_training(job):
        return job
    _observe(ctx, job, force=force)
    return ctx.jobs.require(job_id)


def _remote_training(job: Job) -> bool:
    watched = job.state is JobState.TRAINING or (
        job.state is JobState.PUBLISHING and job.trainer in SELF_PUBLISHING_KINDS)
    return job.trainer in REMOTE_KINDS and watched and bool(job.trainer_handle)


def _observe(ctx: Context, job: Job, *, force: bool = False) -> None:
    # the claimed job, read by the claim itself: the log cursor the previous observer left
    claimed = ctx.jobs.claim_observation(job.id, stale_after=timedelta(0) if force else stale_after(ctx))
    if claimed is not None and _remote_training(claimed):
        _read_claimed(ctx, claimed)


def _read_claimed(ctx: Context, job: Job) -> None:
    """Read a claimed remote training from its provider and act on what it says."""
    assert job.trainer_handle is not None
    trainer = ctx.trainer_for(job.trainer)
    seen = trainer.poll(job.trainer_handle, job.log_cursor or "")
    if trainer.capabilities.publishes_from_run:  # its log and results come from its agent's reports
        from hubferry.services.pod_agent import observed

        observed(ctx, job, seen)
        return
    record(ctx, job, seen.lines, seen.cursor)
    if seen.status is RunStatus.RUNNING:
        return
    forget_tracker(job.id)
    discard_staged(ctx.settings, job.trainer_handle.get("staged_ref"),
                   provider_key(ctx.credentials, "replicate", job.owner, job.id))
    if seen.status is RunStatus.SUCCEEDED:
        _succeeded(ctx, job, seen.outputs)
    elif seen.status is RunStatus.CANCELLED:
        if ctx.jobs.transition(job.id, JobState.TRAINING, JobState.CANCELLED, message=seen.message) is not None:
            ctx.jobs.append_event(job.id, EventKind.NOTICE, stage="training", message=seen.message)
    else:
        _fail(ctx, job, training_failure(job.id, seen.message, Path(job.log_path or "")))


def observe_now(ctx: Context, job_id: str) -> None:
    """The task a webhook dispatches: read the training now, whatever the poll interval."""
    refresh(ctx, job_id, force=True)


def record(ctx: Context, job: Job, lines: list[str], cursor: str, *, track: bool = True) -> None:
    """Append a remote run's new log lines to the job's log file and store the cursor, with the progress the
    lines give when ``track`` (one write)."""
    if lines:
        append(Path(job.log_path or ctx.settings.home / "logs" / f"{job.id}.log"), lines)
        if track:
            tracker = _tracker(job)
            now = time.monotonic()
            for line in lines:
                tracker.feed(line, at=now)
            progress = job_progress.from_snapshot(tracker.snapshot(now))
            if ctx.jobs.update_progress(job.id, progress, log_cursor=cursor):
                return
    if cursor != (job.log_cursor or ""):
        ctx.jobs.set_log_cursor(job.id, cursor)


def _succeeded(ctx: Context, job: Job, outputs: str | None = None) -> None:
    """Download the outputs (at once: providers delete them), then start the publish exactly once.

    ``outputs`` is where the observation said they are (the trainer reads the run again when it is
    not given).

    The observer whose claim is the latest holds the job for :data:`DOWNLOAD_HOLD` while it downloads:
    a webhook, a poll or a status read that sees the success meanwhile leaves the download to it.
    """
    assert job.trainer_handle is not None and job.output_dir is not None
    held_until = ctx.jobs.clock() + DOWNLOAD_HOLD
    if not ctx.jobs.hold_observation(job.id, claimed_at=job.observed_at, until=held_until):
        return  # another observer claimed the job after us: it downloads and publishes
    output = Path(job.output_dir)
    started = time.monotonic()
    if not (output.is_dir() and any(output.iterdir())):
        output.parent.mkdir(parents=True, exist_ok=True)  # an adopted job never ran ``start``, which makes it
        scratch = output.parent / f".{output.name}.{uuid.uuid4().hex[:8]}"
        try:
            handle = {**job.trainer_handle, "outputs": outputs} if outputs else job.trainer_handle
            fetched = ctx.trainer_for(job.trainer).fetch_outputs(handle, scratch)
            if output.is_dir() and not any(output.iterdir()):
                output.rmdir()
            if not output.exists():
                fetched.rename(output)  # one observer wins; the others' copies are dropped
        except HubferryError as exc:
            if isinstance(exc, TransientError):
                ctx.jobs.append_event(job.id, EventKind.NOTICE, stage="training",
                                      message=f"downloading the outputs failed; will retry: {exc.message}"[:500])
                # released: the next poll, one interval from now, downloads again
                ctx.jobs.hold_observation(job.id, claimed_at=held_until, until=ctx.jobs.clock())
                return
            _fail(ctx, job, ErrorInfo.from_exception(exc))
            return
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            for leftover in output.parent.glob(f".{output.name}.*"):
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)
    ctx.jobs.append_event(job.id, EventKind.STAGE_FINISHED, stage="training",
                          context={"output_dir": str(output), "download_s": round(time.monotonic() - started, 2)})
    training_succeeded(ctx, job.id)


def _fail(ctx: Context, job: Job, error: ErrorInfo) -> None:
    if ctx.jobs.transition(job.id, JobState.TRAINING, JobState.FAILED, error=error) is not None:
        ctx.jobs.append_event(job.id, EventKind.STAGE_FAILED, stage="training", message=error.message[:500])


def poll_due(ctx: Context) -> int:
    """One poll cycle: observe every remote training not observed within the interval; returns how many.

    Due jobs are claimed a few at a time (one statement for up to :data:`POLL_THREADS` jobs) as
    threads free up, and read up to :data:`POLL_THREADS` at once: provider round trips overlap, and a
    claim is never ahead of its read by more than a moment (so reads stay an interval apart). A rate
    limit (429) ends the cycle early: the remaining jobs wait for the next one.
    """
    rate_limited = threading.Event()

    def observe(job: Job) -> None:
        if rate_limited.is_set():
            return  # claimed but not read: read after one interval, when the limit may have passed
        try:
            _read_claimed(ctx, job)
        except HubferryError as exc:
            log.warning("poll failed", job_id=job.id, error=exc.message)
            if exc.category == "rate_limit":
                rate_limited.set()
        except Exception:  # noqa: BLE001 - one job's crash must not cost the others their observation
            log.exception("poll crashed", job_id=job.id)

    polled = 0
    in_flight: set[Future[None]] = set()
    with ThreadPoolExecutor(POLL_THREADS, thread_name_prefix="hubferry-poll") as pool:
        while polled < POLL_BATCH and not rate_limited.is_set():
            room = POLL_THREADS - len(in_flight)
            if room < POLL_THREADS // 2:  # claim again once half the threads are free: no job waits for one
                in_flight = wait(in_flight, return_when=FIRST_COMPLETED).not_done
                continue
            batch = ctx.jobs.claim_due(REMOTE_KINDS, stale_after=stale_after(ctx), limit=min(room, POLL_BATCH - polled),
                                       publishing_kinds=SELF_PUBLISHING_KINDS)
            if not batch:
                break
            polled += len(batch)
            in_flight |= {pool.submit(observe, job) for job in batch}
    return polled
