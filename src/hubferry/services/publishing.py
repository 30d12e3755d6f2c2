"""Publish a trained job exactly once: claim (CAS + fenced lease), push, record, verify.

Whoever first sees a training success calls :func:`training_succeeded`; its compare-and-set
lets exactly one caller move the job to ``publishing`` and dispatch the publish. The publish
runs under a lease with heartbeats; a worker that dies loses the lease and the reconciler hands
the job to another worker, whose push resumes (it sends only what the Hub lacks).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from hubferry.domain.jobs import ErrorInfo, EventKind, Job, JobState
from hubferry.domain.leases import heartbeat_interval
from hubferry.domain.naming import auto_repo_id
from hubferry.errors import HubferryError, PermanentError, TransientError
from hubferry.hub import CardInfo, PushProgress
from hubferry.hub.manifest import LocalFile
from hubferry.logs import get_logger
from hubferry.services import credentials
from hubferry.services import progress as job_progress
from hubferry.services.context import Context
from hubferry.services.ports import HubTarget

log = get_logger(__name__)
#: Claims of one publish before a transient failure fails the job (it stays retryable).
MAX_PUBLISH_CLAIMS = 5
#: Delay before re-dispatching a publish after a transient failure, times the claim number.
REDISPATCH_DELAY_S = 15.0
#: Read-backs of one commit that may fail transiently before the job fails (it stays retryable).
MAX_VERIFY_ATTEMPTS = 5
#: Files of a successful read-back listed in the timeline (path, size, hash each); the count covers them all.
MAX_RECORDED_FILES = 1000


def training_succeeded(ctx: Context, job_id: str) -> bool:
    """Record a training success; returns True for the one caller that started the publish."""
    job = ctx.jobs.require(job_id)
    if credentials.for_job(ctx.credentials, job).token is None:
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
    ctx.jobs.update_progress(job.id, job_progress.after_training(job.progress, "publishing", 0.0))
    ctx.dispatch().publish(job.id)
    return True


def _card(job: Job) -> CardInfo:
    """The model card facts of a job: what its trainer recorded (``params.card``), plus the job itself."""
    facts = dict(job.params.get("card") or {})
    known = {k: v for k, v in facts.items() if k in CardInfo.__dataclass_fields__ and k != "training_params"}
    params = {**(facts.get("training_params") or {}), "trainer": job.trainer, "hubferry_job": job.id}
    params = {k: v for k, v in params.items() if v is not None}
    return CardInfo(**{"title": job.name, **known, "training_params": params})


def commit_message(job: Job) -> str:
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
    from hubferry.services import pod_agent  # it builds on this module

    job = ctx.jobs.require(job_id)
    from_run = ctx.trainer_for(job.trainer).capabilities.publishes_from_run
    if job.state is JobState.VERIFYING:
        _verify(ctx, job, pod_agent.manifest(job) if from_run else None)
        return
    if job.state is not JobState.PUBLISHING:
        return
    if from_run:  # the run publishes its own weights (a pod's agent); here it is only asked to
        pod_agent.request_publish(ctx, job)
        return
    fence = ctx.publishes.claim_publish(job_id, ctx.worker_id, timedelta(seconds=ctx.settings.publish_lease_ttl_s))
    if fence is None:
        log.info("publish held by another worker or closed", job_id=job_id)
        return
    target = credentials.for_job(ctx.credentials, job)
    started = time.monotonic()
    with _Lease(ctx, job_id, fence) as lease:

        def on_progress(event: PushProgress) -> None:
            if lease.lost.is_set():
                raise TransientError("publish lease lost to another worker", category="service_error",
                                     job_id=job_id, hint="another worker is finishing this publish")
            fraction = event.bytes_done / event.bytes_total if event.bytes_total else 0.0
            ctx.jobs.update_progress(job_id, job_progress.after_training(job.progress, "publishing", fraction))

        try:
            if target.token is None:
                raise PermanentError(
                    f"no Hub token for {target.endpoint}", category="authentication",
                    hint=f"`hubferry secrets set hf_token --endpoint {target.endpoint}`, or "
                    f"`hubferry retry {job_id} --token TOKEN`",
                )
            job = resolve_auto_named(ctx, job, target)
            ctx.jobs.append_event(job_id, EventKind.NOTICE, stage="publishing", message="upload started",
                                  context={"worker": ctx.worker_id, "fence": fence, "repo_id": job.repo_id})
            publication = ctx.publisher.publish(
                Path(str(job.output_dir)), job.repo_id, target, private=job.private, message=commit_message(job),
                card=_card(job), progress=on_progress,
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
    _verify(ctx, ctx.jobs.require(job_id), publication.files)


def resolve_auto_named(ctx: Context, job: Job, target: HubTarget) -> Job:
    """An auto-named repo follows the token's user: a job named before any token was known
    (``root/...``) publishes to ``{token's user}/...``."""
    if not job.repo_auto_named:
        return job
    identity = ctx.publisher.identify(target)
    namespace = job.repo_id.split("/", 1)[0]
    if identity.can_write(namespace):
        return job
    others = {j.repo_id.lower() for j in ctx.jobs.list_jobs(limit=10_000) if j.id != job.id}
    repo_id = auto_repo_id(identity.name, job.name,
                           lambda r: r.lower() in others or ctx.publisher.repo_exists(target, r))
    ctx.jobs.retarget(job.id, repo_id=repo_id, repo_auto_named=True)
    ctx.jobs.append_event(job.id, EventKind.NOTICE, stage="publishing",
                          message=f"target renamed to the token's user: {job.repo_id} -> {repo_id}",
                          context={"repo_id": repo_id})
    return ctx.jobs.require(job.id)


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


def verified_record(files: list[LocalFile]) -> dict[str, Any]:
    """What the timeline keeps of a successful read-back: each file checked (path, size, sha256), the first
    :data:`MAX_RECORDED_FILES` of them by path (``files_recorded`` says how many were kept)."""
    kept = sorted(files, key=lambda f: f.path_in_repo)[:MAX_RECORDED_FILES]
    return {"verified_files": [{**f.to_dict(), "verified": True} for f in kept], "files_recorded": len(kept)}


def _verify(ctx: Context, job: Job, files: list[LocalFile] | None = None) -> None:
    """Read the recorded commit back; ``verifying → published`` only when every file matches.

    Transient failures are retried up to :data:`MAX_VERIFY_ATTEMPTS` times, then the job fails
    (retryable with ``hubferry retry``).
    """
    target = credentials.for_job(ctx.credentials, job)
    attempt = 1
    for e in ctx.jobs.events(job.id):  # read-backs since this publish started
        if e.kind is EventKind.STAGE_STARTED and e.stage in ("publishing", "verifying"):
            attempt = 1 if e.stage == "publishing" else attempt + 1
    ctx.jobs.append_event(job.id, EventKind.STAGE_STARTED, stage="verifying",
                          context={"commit_sha": job.commit_sha, "attempt": attempt})
    ctx.jobs.update_progress(job.id, job_progress.after_training(job.progress, "verifying", 0.0))
    started = time.monotonic()
    try:
        files = ctx.publisher.verify(Path(str(job.output_dir)), job.repo_id, target, job.commit_sha or "",
                                     _card(job), files)
    except HubferryError as exc:
        if exc.retryable and attempt < MAX_VERIFY_ATTEMPTS:
            ctx.dispatch().publish(job.id, delay_s=REDISPATCH_DELAY_S)
            return
        error = ErrorInfo.from_exception(exc)
        if exc.retryable:
            error = ErrorInfo(error.category, f"verification failed {attempt} times: {exc.message}",
                              f"`hubferry retry {job.id}` reads the commit back again", retryable=True)
        if ctx.jobs.transition(job.id, JobState.VERIFYING, JobState.FAILED, error=error) is not None:
            ctx.jobs.append_event(job.id, EventKind.STAGE_FAILED, stage="verifying", message=exc.message[:500])
        return
    ctx.jobs.update_progress(job.id, job_progress.after_training(job.progress, "verifying", 1.0))
    if ctx.jobs.transition(job.id, JobState.VERIFYING, JobState.PUBLISHED) is not None:
        ctx.jobs.append_event(job.id, EventKind.STAGE_FINISHED, stage="verifying",
                              context={"files": len(files), "commit_sha": job.commit_sha,
                                       "duration_s": round(time.monotonic() - started, 2),
                                       **verified_record(files)})
        credentials.forget_job(ctx.credentials, job.id)
        log.info("published", job_id=job.id, repo_url=job.repo_url, commit=job.commit_sha)
        if ctx.trainer_for(job.trainer).capabilities.publishes_from_run:
            from hubferry.services.pod_agent import release

            release(ctx, job, keep_outputs=False)  # its pod holds nothing more
