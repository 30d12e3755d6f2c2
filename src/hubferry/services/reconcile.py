"""The reconciler: re-dispatch work a crash or a lost task left behind (idempotent, run periodically)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from hubferry.domain.jobs import JobState
from hubferry.logs import get_logger
from hubferry.services.context import Context

log = get_logger(__name__)
#: A job left in ``verifying`` this long without progress is verified again.
VERIFY_STALL = timedelta(minutes=2)


@dataclass(frozen=True)
class Report:
    expired_leases: int
    pending_publishes: int
    stalled_verifications: int


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
    report = Report(len(expired), len(pending), len(stalled))
    if any((report.expired_leases, report.pending_publishes, report.stalled_verifications)):
        log.info("reconciled", **report.__dict__)
    return report
