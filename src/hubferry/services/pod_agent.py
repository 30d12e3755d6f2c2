"""The orchestrator's side of a pod's agent (docs/pod-agent.md): what it reports, what it is told to do,
the Hub token handed over when it publishes, its liveness, and when its pod is stopped or terminated.

Teardown rules: the pod is terminated once the publish is verified, after a failed training, or on
cancel; it is only stopped (its volume keeps the weights) when a trained model could not be
published, so ``hubferry retry`` can resume it and publish. Nothing else ever terminates a pod
holding weights that were not published.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hubferry.domain.billing import billed_seconds
from hubferry.domain.jobs import ErrorInfo, EventKind, Job, JobState
from hubferry.errors import HubferryError, PermanentError, ValidationError
from hubferry.hub.manifest import LocalFile
from hubferry.logs import get_logger, printable, redact
from hubferry.services import credentials, remote
from hubferry.services import progress as job_progress
from hubferry.services.context import Context
from hubferry.services.training import training_failure
from hubferry.store.publishes import PublishState
from hubferry.trainers import Observation, RunStatus, SelfPublishingTrainer

log = get_logger(__name__)
#: How often the agent reports when it has nothing to say.
HEARTBEAT_S = 15.0
#: The pod's publish lease: its liveness is judged by heartbeats, so the lease only has to outlast a publish.
POD_PUBLISH_LEASE = timedelta(hours=24)
#: Caps on one report: lines, characters per line, files in a published manifest.
MAX_LINES = 500
MAX_LINE_CHARS = 2000
MAX_FILES = 10_000

PHASES = ("starting", "training", "trained", "publishing", "published", "failed")


@dataclass(frozen=True)
class Report:
    seq: int
    phase: str
    lines: list[str] = field(default_factory=list)
    exit_code: int | None = None
    message: str = ""
    stage: str | None = None
    result: dict[str, Any] | None = None


def job_token_digest(token: str) -> str:
    """What a job records of its pod's callback token."""
    return hashlib.sha256(token.encode()).hexdigest()


class Unauthorized(Exception):
    """The callback token does not open this job (the API answers 401, or 404 when there is no such job)."""


def authenticate(ctx: Context, job_id: str, token: str) -> Job:
    """The job a callback token opens.

    Raises:
        Unauthorized: wrong token, or not a pod job (the caller answers 401 either way: a token must not
            tell which job ids exist).
    """
    job = ctx.jobs.get(job_id)
    expected = str((job.params if job else {}).get("job_token_sha256") or "")
    if job is None or not expected or not hmac.compare_digest(job_token_digest(token), expected):
        raise Unauthorized(job_id)
    return job


def spec(ctx: Context, job: Job) -> dict[str, Any]:
    """What the agent trains: the validated config, a signed URL of a local dataset, the heartbeat period."""
    from hubferry.services.datasets import stage_dataset

    dataset_url = None
    if job.params.get("dataset_file"):
        dataset_url, _ = stage_dataset(ctx.settings, job, "")
    return {"job_id": job.id, "config": job.params["config"], "dataset_url": dataset_url,
            "hub_endpoint": job.params.get("hub_endpoint"), "heartbeat_s": HEARTBEAT_S}


def report(ctx: Context, job: Job, body: Report) -> str:
    """Record a report (its lines once per ``seq``), act on its phase, and say what the agent does next."""
    if body.phase not in PHASES:
        raise ValidationError(f"unknown phase {body.phase!r}", field="phase", hint="one of " + ", ".join(PHASES))
    if job.trainer_handle:  # before the pod's handle is recorded, the start grace covers the agent
        ctx.jobs.merge_handle(job.id, {"heartbeat_at": ctx.jobs.clock().isoformat()})
    if body.seq > int(job.log_cursor or 0):
        _record_lines(ctx, job, body)
    job = ctx.jobs.require(job.id)
    if job.state is JobState.CANCELLED:
        remote.forget_tracker(job.id)
        return "cancel"
    if body.phase == "failed":
        return _failed(ctx, job, body)
    if body.phase == "trained":
        return _trained(ctx, job)
    if body.phase == "published":
        return _published(ctx, job, body.result or {})
    if job.state is JobState.PUBLISHING:  # an agent already publishing goes on; one that restarted is told to
        return "continue" if body.phase == "publishing" else "publish"
    return "continue" if job.state in (JobState.PREPARING, JobState.TRAINING, JobState.VERIFYING) else "exit"


def _record_lines(ctx: Context, job: Job, body: Report) -> None:
    lines = [printable(line)[:MAX_LINE_CHARS] for line in body.lines[:MAX_LINES]]
    remote.record(ctx, job, lines, str(body.seq), track=job.state is JobState.TRAINING)


def _failed(ctx: Context, job: Job, body: Report) -> str:
    message = redact(printable(body.message))[:2000] or "the agent reported a failure"
    if job.state is JobState.TRAINING and body.stage != "publishing":
        error = training_failure(job.id, f"the training in the pod failed (exit {body.exit_code}): {message}",
                                 Path(job.log_path or ""))
        if ctx.jobs.transition(job.id, JobState.TRAINING, JobState.FAILED, error=error) is not None:
            ctx.jobs.append_event(job.id, EventKind.STAGE_FAILED, stage="training", message=error.message[:500],
                                  context={"exit_code": body.exit_code})
            release(ctx, ctx.jobs.require(job.id), keep_outputs=False)
        return "exit"
    if job.state is JobState.PUBLISHING:
        category = "authentication" if any(w in message.lower() for w in ("401", "403", "token", "unauthor")) \
            else "network"
        fail_publish(ctx, job, ErrorInfo(
            category, f"publishing from the pod failed: {message}",
            hint=f"fix the cause (e.g. `hubferry secrets set hf_token`), then `hubferry retry {job.id}`: the pod, "
            "stopped with the weights on its volume, is resumed and publishes", retryable=True))
        return "exit"
    return "exit" if job.state not in (JobState.TRAINING, JobState.VERIFYING) else "continue"


def _trained(ctx: Context, job: Job) -> str:
    """The training finished in the pod: publish from there, or keep the pod's weights when no token is set."""
    if job.state is JobState.PUBLISHING:
        return "publish"
    if job.state is not JobState.TRAINING:
        return "continue" if job.state is JobState.VERIFYING else "exit"
    remote.forget_tracker(job.id)
    ctx.jobs.append_event(job.id, EventKind.STAGE_FINISHED, stage="training",
                          context={"pod_id": (job.trainer_handle or {}).get("pod_id")})
    if credentials.for_job(ctx.credentials, job).token is None:
        if ctx.jobs.transition(job.id, JobState.TRAINING, JobState.TRAINED,
                               message="publishing skipped: no Hub token configured") is not None:
            ctx.jobs.append_event(job.id, EventKind.NOTICE, stage="publishing", message=(
                f"no Hub token configured: the weights stay on the stopped pod's volume; set a token "
                f"(hubferry secrets set hf_token) and run `hubferry retry {job.id}` to publish"))
            release(ctx, job, keep_outputs=True)
        return "exit"
    moved = ctx.jobs.transition(job.id, JobState.TRAINING, JobState.PUBLISHING, message="the pod publishes")
    if moved is not None:
        ctx.jobs.append_event(job.id, EventKind.STAGE_STARTED, stage="publishing", context={"repo_id": job.repo_id,
                                                                                             "from": "pod"})
        ctx.jobs.update_progress(job.id, job_progress.after_training(moved.progress, "publishing", 0.0))
        claim(ctx, moved)
    return "publish"


def claim(ctx: Context, job: Job) -> None:
    """Take the job's publish for its pod (the fence is kept on the handle for the ``published`` report)."""
    fence = ctx.publishes.claim_publish(job.id, f"pod:{(job.trainer_handle or {}).get('pod_id')}", POD_PUBLISH_LEASE)
    if fence is not None:
        ctx.jobs.merge_handle(job.id, {"fence": fence})


def grant(ctx: Context, job: Job) -> dict[str, Any]:
    """The Hub token and target of the publish, read now (a token fixed while the pod trained is used).

    Raises:
        PermanentError: with status 409 when the job is not publishing or no token is stored.
    """
    from hubferry.services.publishing import commit_message, resolve_auto_named

    if job.state is not JobState.PUBLISHING:
        raise PermanentError(f"job {job.id} is {job.state.value}, not publishing", status=409, category="validation",
                             hint="wait for the `publish` action")
    target = credentials.for_job(ctx.credentials, job)
    if target.token is None:
        raise PermanentError(f"no Hub token for {target.endpoint}", status=409, category="authentication",
                             hint=f"`hubferry secrets set hf_token --endpoint {target.endpoint}`, then "
                             f"`hubferry retry {job.id}`")
    job = resolve_auto_named(ctx, job, target)
    ctx.jobs.append_event(job.id, EventKind.NOTICE, stage="publishing", message="the pod started publishing",
                          context={"repo_id": job.repo_id})
    return {"endpoint": target.endpoint, "token": target.token, "repo_id": job.repo_id, "private": job.private,
            "revision": "main", "commit_message": commit_message(job), "card": dict(job.params.get("card") or {})}


def _published(ctx: Context, job: Job, result: dict[str, Any]) -> str:
    """The pod says it committed: record the commit, then read it back before the job may say published."""
    if job.state in (JobState.VERIFYING, JobState.PUBLISHED):
        return "continue" if job.state is JobState.VERIFYING else "exit"
    if job.state is not JobState.PUBLISHING:
        return "exit"
    commit, repo_id = str(result.get("commit_sha") or ""), str(result.get("repo_id") or "")
    files = result.get("files")
    if not commit or repo_id != job.repo_id or not isinstance(files, dict) or not files or len(files) > MAX_FILES:
        fail_publish(ctx, job, ErrorInfo("service_error", "the pod reported a publish hubferry cannot check "
                                         f"(repo {repo_id!r}, commit {commit!r}, {len(files or {})} files)",
                                         hint=f"`hubferry retry {job.id}` publishes again", retryable=True))
        return "exit"
    handle = ctx.jobs.merge_handle(job.id, {"manifest": {str(k)[:1000]: v for k, v in files.items()}}) or {}
    endpoint = str(job.params.get("hub_endpoint") or "").rstrip("/")
    if not ctx.publishes.finish_publish(job.id, int(handle.get("fence") or 0), f"{endpoint}/{job.repo_id}", commit):
        log.warning("a pod reported a publish it did not hold", job_id=job.id)
        return "exit"
    ctx.jobs.append_event(job.id, EventKind.STAGE_FINISHED, stage="publishing",
                          context={"commit_sha": commit, "repo_id": repo_id, "files": len(files), "from": "pod"})
    ctx.dispatch().publish(job.id)  # the read-back (services/publishing.py)
    return "continue"


def manifest(job: Job) -> list[LocalFile]:
    """The files the pod says it published, to compare with what the Hub holds."""
    files = (job.trainer_handle or {}).get("manifest") or {}
    try:
        return [LocalFile(path_in_repo=path, size=int(f["size"]), sha256=str(f["sha256"]),
                          git_sha1=str(f["git_sha1"]) if f.get("git_sha1") else None) for path, f in files.items()]
    except (KeyError, TypeError, ValueError):
        raise PermanentError("the pod's manifest of published files is malformed", category="service_error",
                             hint=f"`hubferry retry {job.id}` publishes again") from None


def fail_publish(ctx: Context, job: Job, error: ErrorInfo) -> None:
    """Fail a pod's publish; the pod is stopped, its volume keeping the weights for a retry."""
    fence = int((job.trainer_handle or {}).get("fence") or 0)
    failed = ctx.publishes.fail_publish(job.id, fence, error) if fence else None
    if not failed:
        failed = ctx.jobs.transition(job.id, JobState.PUBLISHING, JobState.FAILED, error=error) is not None
    if failed:
        ctx.jobs.append_event(job.id, EventKind.STAGE_FAILED, stage="publishing", message=error.message[:500])
        release(ctx, job, keep_outputs=True)


def request_publish(ctx: Context, job: Job) -> None:
    """A publish was started (after training, or by ``retry``): claim it for the pod, and resume the pod if
    it was stopped; the agent is told to publish by the answer to its next report."""
    trainer = ctx.trainer_for(job.trainer)
    if not job.trainer_handle or not isinstance(trainer, SelfPublishingTrainer):
        return
    claim(ctx, job)
    try:
        if trainer.resume(job.trainer_handle):
            ctx.jobs.append_event(job.id, EventKind.NOTICE, stage="publishing",
                                  message="the stopped pod was resumed to publish its weights")
            now = ctx.jobs.clock().isoformat()
            ctx.jobs.merge_handle(job.id, {"heartbeat_at": None, "resumed_at": now, "running_since": now,
                                           "released": None})
    except HubferryError as exc:
        if not exc.retryable:
            fail_publish(ctx, ctx.jobs.require(job.id), ErrorInfo.from_exception(exc))
        else:
            raise


def observed(ctx: Context, job: Job, seen: Observation) -> None:
    """Judge a pod job from a poll of its pod: an agent silent too long, or a pod that stopped, fails the job."""
    handle = job.trainer_handle or {}
    now = ctx.jobs.clock()
    if seen.status is RunStatus.RUNNING:
        last = handle.get("heartbeat_at")
        since = last or handle.get("resumed_at") or handle.get("launched_at")
        grace = ctx.settings.runpod_heartbeat_grace_s if last else ctx.settings.runpod_start_grace_s
        if since and now - datetime.fromisoformat(str(since)) <= timedelta(seconds=grace):
            return
        reason = (f"the pod's agent has not reported for over {grace:.0f} s" if last
                  else f"the pod's agent never reported within {grace:.0f} s of the pod's start (image pull "
                  "failed, or the pod cannot reach HUBFERRY_PUBLIC_URL)")
    else:
        reason = seen.message or "the pod stopped"
        if job.params.get("token_in_env") and job.state is JobState.TRAINING and _published_by_image(ctx, job):
            return
        publish = ctx.publishes.get(job.id)
        if job.state is JobState.PUBLISHING and publish is not None and publish.state is PublishState.PENDING:
            request_publish(ctx, job)  # a retried publish whose pod is not resumed yet: resume it, do not fail it
            return
    lost(ctx, job, reason)


#: Files that make a commit a model (an image of the user's own must publish at least one).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def _published_by_image(ctx: Context, job: Job) -> bool:
    """A pod of the user's own image (``--token-in-env``) exited: if it committed to the job's repo after it
    was launched, read that commit back (it must hold weights) and publish the job with it."""
    target = credentials.for_job(ctx.credentials, job)
    handle = job.trainer_handle or {}
    newest = ctx.publisher.newest_commit(target, job.repo_id)
    launched = datetime.fromisoformat(str(handle.get("launched_at")))
    if newest is None or newest[1] < launched:
        return False
    commit = newest[0]
    files = ctx.publisher.remote_files(target, job.repo_id, commit)
    if not any(f.path_in_repo.endswith(WEIGHT_SUFFIXES) and f.size > 0 for f in files):
        return False
    manifest = {f.path_in_repo: {"size": f.size, "sha256": f.sha256, "git_sha1": f.git_sha1} for f in files}
    moved = ctx.jobs.transition(job.id, JobState.TRAINING, JobState.PUBLISHING, message="the pod's image published")
    if moved is None:
        return True
    ctx.jobs.append_event(job.id, EventKind.STAGE_FINISHED, stage="training", context={"pod_id": handle.get("pod_id")})
    ctx.jobs.append_event(job.id, EventKind.STAGE_STARTED, stage="publishing", context={"from": "image"})
    claim(ctx, moved)
    _published(ctx, ctx.jobs.require(job.id), {"commit_sha": commit, "repo_id": job.repo_id, "files": manifest})
    return True


def lost(ctx: Context, job: Job, reason: str) -> None:
    """The pod or its agent is gone: fail the job, keeping the pod's weights when the training had finished."""
    if job.state is JobState.PUBLISHING:
        fail_publish(ctx, job, ErrorInfo(
            "network", f"publishing from the pod did not finish: {reason}",
            hint=f"`hubferry retry {job.id}` resumes the pod, which publishes the weights on its volume",
            retryable=True))
        return
    if job.state is JobState.TRAINING:
        error = ErrorInfo("training_error", f"the pod was lost while training: {reason}",
                          hint=f"`hubferry retry {job.id}` trains again on a new pod", retryable=True)
        if ctx.jobs.transition(job.id, JobState.TRAINING, JobState.FAILED, error=error) is not None:
            ctx.jobs.append_event(job.id, EventKind.STAGE_FAILED, stage="training", message=error.message[:500])
            release(ctx, job, keep_outputs=False)


def release(ctx: Context, job: Job, *, keep_outputs: bool) -> None:
    """Stop (keeping the weights) or terminate the job's pod; a failure is logged for the reconciler."""
    remote.forget_tracker(job.id)
    trainer = ctx.trainer_for(job.trainer)
    if not job.trainer_handle or not isinstance(trainer, SelfPublishingTrainer):
        return
    try:
        trainer.release(job.trainer_handle, keep_outputs=keep_outputs)
    except HubferryError as exc:
        log.warning("could not release the pod; the reconciler retries", job_id=job.id, error=exc.message)
        return
    now = ctx.jobs.clock()
    current = ctx.jobs.require(job.id).trainer_handle or {}
    handle = ctx.jobs.merge_handle(job.id, {
        "released_at": now.isoformat(), "released": "stopped" if keep_outputs else "terminated",
        "billed_s": billed_seconds(current, now), "running_since": None}) or {}
    where = (f"the pod {handle.get('pod_id')} is stopped; its volume keeps the weights until the job is "
             "published or cancelled" if keep_outputs else f"the pod {handle.get('pod_id')} was terminated")
    ctx.jobs.append_event(job.id, EventKind.NOTICE, message=where, context={"pod_id": handle.get("pod_id")})

