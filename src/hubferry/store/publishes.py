"""Publish leases: a worker claims a job's publish with a fenced lease, so it happens exactly once.

The protocol (see ``reference/queue.md``) works the same on SQLite ≥ 3.35 and PostgreSQL:
a claim is one conditional ``UPDATE ... RETURNING fence`` that succeeds only when nobody holds
a live lease, and bumps the fence. Heartbeats and the final write carry the fence, so a worker
whose lease expired and was taken over (a zombie) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from hubferry.domain.jobs import ErrorInfo, JobState
from hubferry.domain.leases import PENDING_PUBLISH_GRACE, PUBLISH_LEASE_TTL, Lease, lease_deadline
from hubferry.store.database import utcnow, write_transaction
from hubferry.store.jobs import Clock, apply_transition, read_job_row
from hubferry.store.tables import jobs, publishes


class PublishState(StrEnum):
    """Where a job's publish is; the row exists from the job's first move to ``publishing``."""

    PENDING = "pending"  # waiting for a worker to claim it
    UPLOADING = "uploading"  # a worker holds (or held, if expired) the lease
    COMMITTED = "committed"  # the commit is on the Hub and recorded
    FAILED = "failed"  # given up; the job failed
    CANCELLED = "cancelled"  # the job was cancelled


@dataclass(frozen=True)
class Publish:
    """A job's publish record."""

    job_id: str
    state: PublishState
    fence: int
    attempts: int
    lease_owner: str | None
    lease_until: datetime | None
    repo_url: str | None
    commit_sha: str | None
    error: ErrorInfo | None
    created_at: datetime
    updated_at: datetime
    last_claimed_at: datetime | None


class PublishStore:
    """Claims, heartbeats and results of publishes, in the same database as :class:`~hubferry.store.jobs.JobStore`.

    Args:
        engine: from :func:`~hubferry.store.database.make_engine`.
        clock: returns the current timezone-aware time; tests pass a fake.
    """

    def __init__(self, engine: Engine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    def get(self, job_id: str) -> Publish | None:
        """The job's publish record, or ``None`` before the job first reached ``publishing``."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(publishes).where(publishes.c.job_id == job_id)).mappings().first()
        return _publish_from_row(row) if row is not None else None

    def claim_publish(self, job_id: str, owner: str, ttl: timedelta = PUBLISH_LEASE_TTL) -> int | None:
        """Take the lease on a job's publish.

        Returns:
            The new fence (1 for the first claim, +1 on each takeover), or ``None`` when someone
            holds a live lease or the publish is not open (committed, failed, cancelled, absent).
        """
        now = self.clock()
        p = publishes.c
        with write_transaction(self.engine) as conn:
            return conn.execute(
                sa.update(publishes)
                .where(
                    p.job_id == job_id,
                    p.state.in_([PublishState.PENDING.value, PublishState.UPLOADING.value]),
                    sa.or_(p.lease_until.is_(None), p.lease_until < now),
                )
                .values(
                    state=PublishState.UPLOADING.value,
                    lease_owner=owner,
                    lease_until=lease_deadline(now, ttl),
                    fence=p.fence + 1,
                    attempts=p.attempts + 1,
                    last_claimed_at=now,
                    updated_at=now,
                )
                .returning(p.fence)
            ).scalar_one_or_none()

    def heartbeat(self, job_id: str, fence: int, ttl: timedelta = PUBLISH_LEASE_TTL) -> bool:
        """Extend the lease held with ``fence``.

        Returns:
            ``False`` when the lease was lost (taken over, or the publish was stopped): the
            holder must stop cooperatively and write nothing more.
        """
        now = self.clock()
        with write_transaction(self.engine) as conn:
            result = conn.execute(_fenced(job_id, fence).values(lease_until=lease_deadline(now, ttl), updated_at=now))
        return result.rowcount == 1

    def finish_publish(self, job_id: str, fence: int, repo_url: str, commit_sha: str) -> bool:
        """Record the commit made under ``fence`` and move the job from ``publishing`` to ``verifying``.

        Returns:
            ``False`` when ``fence`` is stale or the publish was stopped: nothing was recorded.
        """
        now = self.clock()
        with write_transaction(self.engine) as conn:
            result = conn.execute(
                _fenced(job_id, fence).values(
                    state=PublishState.COMMITTED.value,
                    repo_url=repo_url,
                    commit_sha=commit_sha,
                    lease_owner=None,
                    lease_until=None,
                    error=None,
                    updated_at=now,
                )
            )
            if result.rowcount != 1:
                return False
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id)
                .values(repo_url=repo_url, commit_sha=commit_sha, updated_at=now)
            )
            row = read_job_row(conn, job_id)
            if row is not None:
                apply_transition(conn, row, JobState.PUBLISHING, JobState.VERIFYING, now=now)
        return True

    def fail_publish(self, job_id: str, fence: int, error: ErrorInfo) -> bool:
        """Give up the publish held with ``fence`` and fail the job with ``error``.

        Returns:
            ``False`` when ``fence`` is stale or the publish was stopped: nothing was recorded.
        """
        now = self.clock()
        with write_transaction(self.engine) as conn:
            result = conn.execute(
                _fenced(job_id, fence).values(
                    state=PublishState.FAILED.value,
                    lease_until=None,
                    error=error.to_dict(),
                    updated_at=now,
                )
            )
            if result.rowcount != 1:
                return False
            row = read_job_row(conn, job_id)
            if row is not None:
                apply_transition(conn, row, JobState.PUBLISHING, JobState.FAILED, now=now, error=error)
        return True

    def release_publish(self, job_id: str, fence: int, error: ErrorInfo | None = None) -> bool:
        """Hand the publish back (e.g. after a transient error) so another attempt can claim it at once.

        Returns:
            ``False`` when ``fence`` is stale or the publish was stopped.
        """
        now = self.clock()
        with write_transaction(self.engine) as conn:
            result = conn.execute(
                _fenced(job_id, fence).values(
                    state=PublishState.PENDING.value,
                    lease_owner=None,
                    lease_until=None,
                    error=error.to_dict() if error else None,
                    updated_at=now,
                )
            )
        return result.rowcount == 1

    def expired_leases(self, now: datetime | None = None) -> list[Lease]:
        """Publishes whose holder stopped heartbeating: the reconciler re-dispatches them."""
        now = now or self.clock()
        p = publishes.c
        query = (
            sa.select(p.job_id, p.lease_owner, p.fence, p.lease_until)
            .where(p.state == PublishState.UPLOADING.value, p.lease_until < now)
            .order_by(p.lease_until)
        )
        with self.engine.connect() as conn:
            return [Lease(r.job_id, r.lease_owner or "", r.fence, r.lease_until) for r in conn.execute(query)]

    def pending_publishes(
        self, now: datetime | None = None, *, idle_for: timedelta = PENDING_PUBLISH_GRACE
    ) -> list[Publish]:
        """Open publishes nobody claimed for ``idle_for``: lost dispatches the reconciler re-sends."""
        now = now or self.clock()
        p = publishes.c
        query = (
            sa.select(publishes)
            .join(jobs, jobs.c.id == p.job_id)
            .where(
                p.state == PublishState.PENDING.value,
                p.updated_at < now - idle_for,
                jobs.c.state == JobState.PUBLISHING.value,
            )
            .order_by(p.updated_at)
        )
        with self.engine.connect() as conn:
            return [_publish_from_row(row) for row in conn.execute(query).mappings()]


def _fenced(job_id: str, fence: int) -> sa.Update:
    """An update that only touches a publish still held with ``fence``."""
    p = publishes.c
    return sa.update(publishes).where(p.job_id == job_id, p.fence == fence, p.state == PublishState.UPLOADING.value)


def _publish_from_row(row: RowMapping) -> Publish:
    error: Any = row["error"]
    return Publish(
        job_id=row["job_id"],
        state=PublishState(row["state"]),
        fence=row["fence"],
        attempts=row["attempts"],
        lease_owner=row["lease_owner"],
        lease_until=row["lease_until"],
        repo_url=row["repo_url"],
        commit_sha=row["commit_sha"],
        error=ErrorInfo.from_dict(error) if error else None,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_claimed_at=row["last_claimed_at"],
    )
