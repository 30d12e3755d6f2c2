"""The reconciler: re-dispatch work a crash or a lost task left behind (idempotent, run periodically)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from hubferry.domain.jobs import ErrorInfo, EventKind, JobState
from hubferry.errors import HubferryError
from hubferry.logs import get_logger
from hubferry.services.context import Context
from hubferry.services.credentials import provider_key
from hubferry.services.remote import REMOTE_KINDS, SELF_PUBLISHING_KINDS
from hubferry.trainers import RunStatus, SelfPublishingTrainer

log = get_logger(__name__)
#: A job left in ``verifying`` this long without progress is verified again.
VERIFY_STALL = timedelta(minutes=2)


#: A training job whose trainer process is gone is left alone this long (its runner may be finishing).
ORPHAN_GRACE = timedelta(seconds=30)


@dataclass(frozen=True)
class Report:
    expired_leases: int
    pending_publishes: int
    stalled_verifications: int
    orphaned_trainings: int
    terminated_pods: int = 0


def reconcile(ctx: Context) -> Report:
    """Re-dispatch publishes whose lease expired or that nobody claimed, and stalled verifications."""
    now = ctx.jobs.clock()
    dispatcher = ctx.dispatch()
    expired = ctx.publishes.expired_leases(now)
    for lease in expired:
        log.warning("publish lease expired; re-dispatching", job_id=lease.job_id, owner=lease.owner, fence=lease.fence)
        dispatcher.publish(lease.job_id)
    grace = timedelta(seconds=ctx.settings.publish_lease_ttl_s)
    pending = ctx.publishes.pending_publishes(now, idle_for=grace)
    for publish in pending:
        dispatcher.publish(publish.job_id)
    stalled = [
        j for j in ctx.jobs.list_jobs(states=[JobState.VERIFYING], updated_before=now - VERIFY_STALL, limit=1000)
    ]
    for job in stalled:
        dispatcher.publish(job.id)
    orphans = _fail_orphaned_trainings(ctx, now)
    report = Report(len(expired), len(pending), len(stalled), orphans, _terminate_orphaned_pods(ctx))
    if any(report.__dict__.values()):
        log.info("reconciled", **report.__dict__)
    return report


def _fail_orphaned_trainings(ctx: Context, now) -> int:
    """Fail training jobs whose run its trainer reports lost (runner and trainer both gone: a worker crashed).

    The trainer's exit code died with its runner, so success cannot be told from failure: the job
    fails as retryable, and the output folder is kept.
    """
    failed = 0
    for job in ctx.jobs.list_jobs(states=[JobState.TRAINING], updated_before=now - ORPHAN_GRACE, limit=1000):
        if not job.trainer_handle or job.trainer in REMOTE_KINDS:
            continue  # a remote run outlives any worker; its polls (services/remote.py) follow it
        seen = ctx.trainer_for(job.trainer).poll(job.trainer_handle)
        if seen.status is not RunStatus.LOST:
            continue
        error = ErrorInfo(
            "training_error", f"the worker running this training stopped: {seen.message}",
            hint=f"outputs so far are kept in {job.output_dir}; `hubferry retry {job.id}` trains again", retryable=True,
        )
        if ctx.jobs.transition(job.id, JobState.TRAINING, JobState.FAILED, error=error) is not None:
            ctx.jobs.append_event(job.id, EventKind.STAGE_FAILED, stage="training", message=error.message)
            failed += 1
    return failed


#: Job states whose pod must not exist any more (a failed training's pod holds nothing worth keeping).
_POD_DONE = (JobState.PUBLISHED, JobState.CANCELLED)
#: How far back the reconciler looks for the RunPod accounts of jobs (one pod listing per account).
ORPHAN_LOOKBACK_JOBS = 1000


def _terminate_orphaned_pods(ctx: Context) -> int:
    """Terminate pods hubferry deployed (named ``hubferry-{job id}``) whose job is final or unknown, or whose
    training failed: a crash between a job's end and its pod's release must not leave a pod billing."""
    jobs = [j for j in ctx.jobs.list_jobs(limit=ORPHAN_LOOKBACK_JOBS) if j.trainer in SELF_PUBLISHING_KINDS]
    seen_accounts: set[str] = set()
    terminated = 0
    for job in jobs:
        trainer = ctx.trainer_for(job.trainer)
        if not isinstance(trainer, SelfPublishingTrainer):
            continue
        try:
            account = provider_key(ctx.credentials, job.trainer, job.owner, job.id) or ""
            if not account or account in seen_accounts:
                continue
            seen_accounts.add(account)
            pods = trainer.list_runs(job.owner, job.id)
        except HubferryError as exc:
            log.warning("could not list pods", job_id=job.id, error=exc.message)
            continue
        for pod in pods:
            owner_job = ctx.jobs.get(str(pod["job_id"]))
            failed_training = owner_job is not None and owner_job.state is JobState.FAILED and not any(
                e.kind is EventKind.STAGE_FINISHED and e.stage == "training" for e in ctx.jobs.events(owner_job.id))
            if owner_job is not None and owner_job.state not in _POD_DONE and not failed_training:
                continue
            try:
                trainer.release({"pod_id": pod["id"], "owner": job.owner, "job_id": job.id}, keep_outputs=False)
            except HubferryError as exc:
                log.warning("could not terminate an orphaned pod", pod_id=pod.get("id"), error=exc.message)
                continue
            log.warning("terminated an orphaned pod", pod_id=pod.get("id"), pod_name=pod.get("name"))
            terminated += 1
    return terminated
