"""Publish a trained job exactly once: claim (CAS + fenced lease), push, record, verify.

Whoever first sees a training success calls :func:`training_succeeded`; its compare-and-set
lets exactly one caller move the job to ``publishing`` and dispatch the publish. The publish
runs under a lease with heartbeats; a worker that dies loses the lease and the reconciler hands
the job to another worker, whose push resumes (it sends only what the Hub lacks).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

from hubferry.domain.jobs import ErrorInfo, EventKind, Job, JobState
from hubferry.domain.leases import heartbeat_interval
from hubferry.errors import HubferryError, PermanentError, TransientError
from hubferry.hub import CardInfo, PushProgress
from hubferry.hub.publish import Publication, local_manifest, publish, verify_publication
from hubferry.logs import get_logger, register_secret
from hubferry.secrets.vault import HF_TOKEN
from hubferry.services import progress as job_progress
from hubferry.services.context import Context

log = get_logger(__name__)
#: Claims of one publish before a transient failure fails the job (it stays retryable).
MAX_PUBLISH_CLAIMS = 5
#: Delay before re-dispatching a publish after a transient failure, times the claim number.
REDISPATCH_DELAY_S = 15.0


def _token(ctx: Context, job: Job) -> str | None:
    token = ctx.vault.get(job.owner, HF_TOKEN) or os.environ.get("HF_TOKEN")
    register_secret(token)
    return token


def training_succeeded(ctx: Context, job_id: str) -> bool:
    """Record a training success; returns True for the one caller that started the publish."""
    job = ctx.jobs.require(job_id)
    if _token(ctx, job) is None:
        moved = ctx.jobs.transition(
            job_id, JobState.TRAINING, JobState.TRAINED, output_dir=job.output_dir,
            message="publishing skipped: no Hub token configured",
        )
        if moved is not None:
            ctx.jobs.append_event(
                job_id, EventKind.NOTICE, stage="publishing",
                message=f"no Hub token configured: weights kept in {job.output_dir}; set a token "
                f"(hubferry secrets set hf_token) and run `hubferry retry {job_id}` to publish",
            )
        return False
    return begin_publish(ctx, job, JobState.TRAINING)


def begin_publish(ctx: Context, job: Job, expected: JobState, message: str = "") -> bool:
    """Move ``job`` from ``expected`` to ``publishing`` (compare-and-set) and dispatch the publish.

    Returns:
        True for the one caller whose move won; False when the job had already moved on.
    """
    moved = ctx.jobs.transition(job.id, expected, JobState.PUBLISHING, output_dir=job.output_dir, message=message)
    if moved is None:
        return False
    ctx.jobs.append_event(job.id, EventKind.STAGE_STARTED, stage="publishing", message=message,
                          context={"repo_id": job.repo_id})
    ctx.jobs.update_progress(job.id, job_progress.for_stage("publishing", 0.0))
    ctx.dispatch().publish(job.id)
    return True


def _card(job: Job) -> CardInfo:
    return CardInfo(title=job.name, training_params={"trainer": job.trainer, "hubferry_job": job.id})


def _commit_message(job: Job) -> str:
    return f"Publish {job.name} (hubferry job {job.id})"


class _Lease:
    """Heartbeats a claimed publish in the background; ``lost`` is set when the lease is gone."""

    def __init__(self, ctx: Context, job_id: str, fence: int) -> None:
        self.ctx, self.job_id, self.fence = ctx, job_id, fence
        self.ttl = timedelta(seconds=ctx.settings.publish_lease_ttl_s)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"lease-{job_id}")

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(heartbeat_interval(self.ttl).total_seconds()):
            if not self.ctx.publishes.heartbeat(self.job_id, self.fence, self.ttl):
                log.warning("publish lease lost; stopping", job_id=self.job_id, fence=self.fence)
                self.lost.set()
                return


def run_publish(ctx: Context, job_id: str) -> None:
    """Publish (or finish verifying) ``job_id``; a no-op for jobs in any other state."""
    job = ctx.jobs.require(job_id)
    if job.state is JobState.VERIFYING:
        _verify(ctx, job)
        return
    if job.state is not JobState.PUBLISHING:
        return
    fence = ctx.publishes.claim_publish(job_id, ctx.worker_id, timedelta(seconds=ctx.settings.publish_lease_ttl_s))
    if fence is None:
        log.info("publish held by another worker or closed", job_id=job_id)
        return
    token = _token(ctx, job)
    started = time.monotonic()
    ctx.jobs.append_event(job_id, EventKind.NOTICE, stage="publishing", message="upload started",
                          context={"worker": ctx.worker_id, "fence": fence})
    with _Lease(ctx, job_id, fence) as lease:

        def on_progress(event: PushProgress) -> None:
            if lease.lost.is_set():
                raise TransientError("publish lease lost to another worker", category="service_error",
                                     job_id=job_id, hint="another worker is finishing this publish")
            fraction = event.bytes_done / event.bytes_total if event.bytes_total else 0.0
            ctx.jobs.update_progress(job_id, job_progress.for_stage("publishing", fraction))

        try:
            if token is None:
                raise PermanentError("no Hub token configured", category="authentication",
                                    hint=f"hubferry secrets set hf_token, then hubferry retry {job_id}")
            publication = publish(
                job.output_dir, job.repo_id, endpoint=job.params.get("hub_endpoint"), token=token,
                private=job.private, message=_commit_message(job), card=_card(job), progress=on_progress,
                settings=ctx.settings, verify_after=False,
            )
        except HubferryError as exc:
            _publish_failed(ctx, job, fence, exc)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must fail the job visibly, not hold the lease forever
            log.exception("publish crashed", job_id=job_id)
            _publish_failed(ctx, job, fence, PermanentError(
                f"publishing crashed: {type(exc).__name__}: {exc}", category="internal", job_id=job_id,
                hint=f"report this with the log; `hubferry retry {job_id}` tries again",
            ))
            return
    if not ctx.publishes.finish_publish(job_id, fence, publication.repo_url, publication.commit_sha):
        log.warning("lease lost before recording the commit; the new holder records it", job_id=job_id)
        return
    ctx.jobs.append_event(
        job_id, EventKind.STAGE_FINISHED, stage="publishing",
        context={"commit_sha": publication.commit_sha, "repo_url": publication.repo_url,
                 "files": len(publication.files), "bytes_uploaded": publication.bytes_uploaded,
                 "commits_created": publication.commits_created, "duration_s": round(time.monotonic() - started, 2)},
    )
    _verify(ctx, ctx.jobs.require(job_id), publication)


def _publish_failed(ctx: Context, job: Job, fence: int, exc: HubferryError) -> None:
    error = ErrorInfo.from_exception(exc)
    record = ctx.publishes.get(job.id)
    attempts = record.attempts if record else 1
    if exc.retryable and attempts < MAX_PUBLISH_CLAIMS:
        if ctx.publishes.release_publish(job.id, fence, error):
            ctx.jobs.append_event(job.id, EventKind.NOTICE, stage="publishing",
                                  message=f"publish attempt {attempts} failed; retrying: {exc.message}"[:500])
            ctx.dispatch().publish(job.id, delay_s=REDISPATCH_DELAY_S * attempts)
        return
    if ctx.publishes.fail_publish(job.id, fence, error):
        ctx.jobs.append_event(job.id, EventKind.STAGE_FAILED, stage="publishing", message=exc.message[:500],
                              context={k: v for k, v in exc.to_dict().items() if k not in ("message", "hint")})


def _verify(ctx: Context, job: Job, publication: Publication | None = None) -> None:
    """Read the recorded commit back; ``verifying → published`` only when every file matches."""
    token = _token(ctx, job)
    ctx.jobs.append_event(job.id, EventKind.STAGE_STARTED, stage="verifying", context={"commit_sha": job.commit_sha})
    ctx.jobs.update_progress(job.id, job_progress.for_stage("verifying", 0.0))
    started = time.monotonic()
    try:
        if publication is None:  # a worker died after the commit was recorded: rebuild the manifest
            files = local_manifest(Path(job.output_dir), job.repo_id, card=_card(job), settings=ctx.settings)
            publication = Publication(
                repo_id=job.repo_id, repo_url=job.repo_url or "", revision="main", commit_sha=job.commit_sha or "",
                files=files, bytes_uploaded=0, commits_created=0, elapsed_s=0.0,
            )
        verify_publication(publication, endpoint=job.params.get("hub_endpoint"), token=token or "",
                           settings=ctx.settings)
    except HubferryError as exc:
        if exc.retryable:
            ctx.dispatch().publish(job.id, delay_s=REDISPATCH_DELAY_S)
            return
        error = ErrorInfo.from_exception(exc)
        if ctx.jobs.transition(job.id, JobState.VERIFYING, JobState.FAILED, error=error) is not None:
            ctx.jobs.append_event(job.id, EventKind.STAGE_FAILED, stage="verifying", message=exc.message[:500])
        return
    ctx.jobs.update_progress(job.id, job_progress.for_stage("verifying", 1.0))
    if ctx.jobs.transition(job.id, JobState.VERIFYING, JobState.PUBLISHED) is not None:
        ctx.jobs.append_event(job.id, EventKind.STAGE_FINISHED, stage="verifying",
                              context={"files": len(publication.files), "commit_sha": publication.commit_sha,
                                       "duration_s": round(time.monotonic() - started, 2)})
        log.info("published", job_id=job.id, repo_url=job.repo_url, commit=publication.commit_sha)
