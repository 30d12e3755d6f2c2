"""Outgoing job notifications: where each user (or one job) wants them, and every delivery with its attempts.

A delivery is one state change of one job for one target URL, unique on ``(target, job, seq)``, so any
number of senders scanning the same changes queue it once. Senders claim a due delivery with a
compare-and-set on ``next_at`` before sending, so only one of them sends each attempt, and a job's
changes are sent to a target one after the other, in order.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hubferry.store.database import write_transaction
from hubferry.store.tables import JSONType, UTCDateTime, job_events, jobs, metadata

notify_targets = sa.Table(
    "notify_targets",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(200), nullable=False),
    # NULL: the owner's target for all their jobs; else this job's own target.
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE")),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_notify_targets_owner", "owner"),
    sa.Index("ix_notify_targets_job", "job_id"),
)

notify_deliveries = sa.Table(
    "notify_deliveries",
    metadata,
    # Also the Standard Webhooks ``webhook-id``: the same on every attempt, so receivers can drop repeats.
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("target_id", sa.String(32), nullable=False),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("event_seq", sa.Integer, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    # pending, delivered or failed (gave up).
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_at", UTCDateTime),
    sa.Column("last_status", sa.Integer),
    sa.Column("last_error", sa.Text),
    # One entry per attempt: ``{"at", "status", "error", "ms"}`` (bounded by the sender's attempt limit).
    sa.Column("log", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("target_id", "job_id", "event_seq", name="uq_notify_deliveries_event"),
    sa.Index("ix_notify_deliveries_due", "state", "next_at"),
    sa.Index("ix_notify_deliveries_job", "job_id", "created_at"),
)


@dataclass(frozen=True)
class Target:
    id: str
    owner: str
    job_id: str | None
    url: str
    created_at: datetime


@dataclass(frozen=True)
class Delivery:
    id: str
    target_id: str
    job_id: str
    event_seq: int
    url: str
    payload: dict[str, Any]
    state: str
    attempts: int
    next_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    log: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class StateChange:
    """A ``state_changed`` timeline entry a target has not been sent yet."""

    job_id: str
    seq: int
    at: datetime
    context: dict[str, Any]
    message: str


def _target(row: Any) -> Target:
    return Target(row.id, row.owner, row.job_id, row.url, row.created_at)


def _delivery(row: Any) -> Delivery:
    return Delivery(
        row.id, row.target_id, row.job_id, row.event_seq, row.url, dict(row.payload), row.state, row.attempts,
        row.next_at, row.last_status, row.last_error, row.created_at, row.updated_at, list(row.log or []),
    )


class Outbox:
    """Notification targets and deliveries in the job database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- targets -----------------------------------------------------------------------------

    def set_target(self, owner: str, url: str, *, now: datetime, job_id: str | None = None) -> Target:
        """Point the owner's notifications (or one job's) at ``url``, replacing the previous URL.

        Deliveries already queued keep the URL they were queued for.
        """
        scope = notify_targets.c.job_id == job_id if job_id else notify_targets.c.job_id.is_(None)
        with write_transaction(self.engine) as conn:
            row = conn.execute(sa.select(notify_targets).where(notify_targets.c.owner == owner, scope)).first()
            if row is not None:
                conn.execute(sa.update(notify_targets).where(notify_targets.c.id == row.id).values(url=url))
                return Target(row.id, owner, job_id, url, row.created_at)
            target = Target("nt_" + secrets.token_hex(8), owner, job_id, url, now)
            conn.execute(sa.insert(notify_targets).values(
                id=target.id, owner=owner, job_id=job_id, url=url, created_at=now))
            return target

    def user_target(self, owner: str) -> Target | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(notify_targets).where(
                notify_targets.c.owner == owner, notify_targets.c.job_id.is_(None))).first()
        return _target(row) if row is not None else None

    def delete_user_target(self, owner: str) -> bool:
        with write_transaction(self.engine) as conn:
            result = conn.execute(sa.delete(notify_targets).where(
                notify_targets.c.owner == owner, notify_targets.c.job_id.is_(None)))
        return result.rowcount > 0

    def job_targets(self, owner: str) -> list[Target]:
        """The URLs ``owner``'s jobs were given of their own (``notify_url``), newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(notify_targets).where(
                notify_targets.c.owner == owner, notify_targets.c.job_id.is_not(None))
                .order_by(notify_targets.c.created_at.desc()))
            return [_target(row) for row in rows]

    def delete_job_target(self, owner: str, job_id: str) -> bool:
        """Stop sending one of ``owner``'s jobs' changes to its own URL (deliveries already made stay logged)."""
        with write_transaction(self.engine) as conn:
            result = conn.execute(sa.delete(notify_targets).where(
                notify_targets.c.owner == owner, notify_targets.c.job_id == job_id))
        return result.rowcount > 0

    def targets(self) -> list[Target]:
        """Every target (a small table: one per user and one per job that asked)."""
        with self.engine.connect() as conn:
            return [_target(row) for row in conn.execute(sa.select(notify_targets))]

    # -- queueing ----------------------------------------------------------------------------

    def unsent_changes(self, target: Target, job_id: str, *, limit: int = 100) -> list[StateChange]:
        """State changes of ``job_id`` after the newest one queued for ``target``, made since the target was set."""
        with self.engine.connect() as conn:
            newest = conn.execute(
                sa.select(sa.func.max(notify_deliveries.c.event_seq))
                .where(notify_deliveries.c.target_id == target.id, notify_deliveries.c.job_id == job_id)
            ).scalar()
            rows = conn.execute(
                sa.select(job_events)
                .where(job_events.c.job_id == job_id, job_events.c.kind == "state_changed",
                       job_events.c.seq > (newest or 0), job_events.c.at >= target.created_at)
                .order_by(job_events.c.seq)
                .limit(limit)
            )
            return [StateChange(r.job_id, r.seq, r.at, dict(r.context or {}), r.message) for r in rows]

    def enqueue(self, target: Target, change: StateChange, payload: dict[str, Any], *, now: datetime) -> bool:
        """Queue one delivery; False when it was queued already (by this or another process)."""
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(sa.insert(notify_deliveries).values(
                    id="msg_" + secrets.token_hex(12), target_id=target.id, job_id=change.job_id,
                    event_seq=change.seq, url=target.url, payload=payload, state="pending", attempts=0,
                    next_at=now, log=[], created_at=now, updated_at=now,
                ))
        except sa.exc.IntegrityError:
            return False
        return True

    # -- sending -----------------------------------------------------------------------------

    def due(self, now: datetime, *, limit: int = 20) -> list[Delivery]:
        """Pending deliveries whose next attempt is due, each the oldest still pending of its job and target:
        a job's changes reach a target in order (a change waits while an earlier one is being retried)."""
        earlier = notify_deliveries.alias("earlier")
        blocked = (
            sa.select(earlier.c.id)
            .where(earlier.c.target_id == notify_deliveries.c.target_id, earlier.c.job_id == notify_deliveries.c.job_id,
                   earlier.c.state == "pending", earlier.c.event_seq < notify_deliveries.c.event_seq)
            .exists()
        )
        query = (
            sa.select(notify_deliveries)
            .where(notify_deliveries.c.state == "pending", notify_deliveries.c.next_at <= now, ~blocked)
            .order_by(notify_deliveries.c.next_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_delivery(row) for row in conn.execute(query)]

    def claim(self, delivery: Delivery, *, now: datetime, hold: timedelta) -> bool:
        """Take the right to make the next attempt of ``delivery`` (read by :meth:`due`): one sender wins."""
        with write_transaction(self.engine) as conn:
            result = conn.execute(
                sa.update(notify_deliveries)
                .where(notify_deliveries.c.id == delivery.id, notify_deliveries.c.state == "pending",
                       notify_deliveries.c.next_at == delivery.next_at)
                .values(next_at=now + hold, attempts=notify_deliveries.c.attempts + 1, updated_at=now)
            )
        return result.rowcount == 1

    def finish_attempt(
        self, delivery_id: str, *, now: datetime, state: str, next_at: datetime | None, status: int | None,
        error: str | None, entry: dict[str, Any],
    ) -> None:
        """Record an attempt's outcome: ``delivered``, ``failed`` (given up) or ``pending`` until ``next_at``."""
        with write_transaction(self.engine) as conn:
            log = conn.execute(sa.select(notify_deliveries.c.log).where(notify_deliveries.c.id == delivery_id)).scalar()
            conn.execute(
                sa.update(notify_deliveries).where(notify_deliveries.c.id == delivery_id)
                .values(state=state, next_at=next_at, last_status=status, last_error=error,
                        log=[*(log or []), entry], updated_at=now)
            )

    def recent(self, owner: str, *, limit: int = 20) -> list[Delivery]:
        """The latest deliveries about ``owner``'s jobs (to any of their targets), most recently changed first."""
        query = (
            sa.select(notify_deliveries)
            .join(jobs, jobs.c.id == notify_deliveries.c.job_id)
            .where(jobs.c.owner == owner)
            .order_by(notify_deliveries.c.updated_at.desc(), notify_deliveries.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_delivery(row) for row in conn.execute(query)]

    def deliveries(self, job_id: str, *, limit: int = 200) -> list[Delivery]:
        """A job's deliveries, oldest first."""
        query = (
            sa.select(notify_deliveries)
            .where(notify_deliveries.c.job_id == job_id)
            .order_by(notify_deliveries.c.created_at, notify_deliveries.c.event_seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_delivery(row) for row in conn.execute(query)]
