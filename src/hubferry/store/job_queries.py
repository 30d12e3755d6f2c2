"""Read-only job queries of the REST API: keyset pages of a user's jobs, and the cheap "what changed"
reads that feed live event streams and outgoing notifications."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hubferry.domain.jobs import StageProgress
from hubferry.store.tables import jobs

#: Ids per ``IN (...)`` of one watch read.
_WATCH_CHUNK = 500

#: ``WHERE updated_at > :since`` scans of the notification outbox use this (created by migration 0005).
ix_jobs_updated = sa.Index("ix_jobs_updated", jobs.c.updated_at)


@dataclass(frozen=True)
class JobMark:
    """What a live stream needs to know about a job: its state, the seq of its newest timeline entry, and
    its progress."""

    job_id: str
    owner: str
    state: str
    seq: int
    progress: StageProgress
    updated_at: datetime


def _mark(row: sa.Row) -> JobMark:
    return JobMark(
        row.id, row.owner, row.state, row.last_event_seq,
        StageProgress(row.stage, row.percent, row.step, row.total_steps, row.loss, row.eta_seconds),
        row.updated_at,
    )


_MARK_COLUMNS = (
    jobs.c.id, jobs.c.owner, jobs.c.state, jobs.c.last_event_seq, jobs.c.stage, jobs.c.percent, jobs.c.step,
    jobs.c.total_steps, jobs.c.loss, jobs.c.eta_seconds, jobs.c.updated_at,
)


def marks(engine: Engine, job_ids: Iterable[str]) -> dict[str, JobMark]:
    """The current marks of ``job_ids`` (missing jobs are left out), in one query per 500 ids."""
    wanted = list(job_ids)
    found: dict[str, JobMark] = {}
    with engine.connect() as conn:
        for start in range(0, len(wanted), _WATCH_CHUNK):
            query = sa.select(*_MARK_COLUMNS).where(jobs.c.id.in_(wanted[start:start + _WATCH_CHUNK]))
            for row in conn.execute(query):
                found[row.id] = _mark(row)
    return found


def changed_since(engine: Engine, since: datetime, *, owners: Sequence[str] = (), job_ids: Sequence[str] = (),
                  limit: int = 1000) -> list[JobMark]:
    """Jobs updated after ``since`` (every state change and progress report bumps ``updated_at``) that
    belong to one of ``owners`` or are one of ``job_ids``, oldest change first."""
    if not owners and not job_ids:
        return []
    query = (
        sa.select(*_MARK_COLUMNS)
        .where(jobs.c.updated_at > since, sa.or_(jobs.c.owner.in_(list(owners)), jobs.c.id.in_(list(job_ids))))
        .order_by(jobs.c.updated_at)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [_mark(row) for row in conn.execute(query)]


@dataclass(frozen=True)
class PageKey:
    """Where a page of jobs (newest first) continues: after this job."""

    created_at: datetime
    job_id: str


def page_ids(
    engine: Engine, *, owner: str | None, states: Sequence[str] = (), trainers: Sequence[str] = (),
    after: PageKey | None = None, limit: int = 50,
) -> list[tuple[str, datetime]]:
    """Ids (and creation times) of jobs, newest first, optionally one owner's, in some states, of some
    trainers, and after a page key; ``limit`` ids at most."""
    query = sa.select(jobs.c.id, jobs.c.created_at).order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
    if owner is not None:
        query = query.where(jobs.c.owner == owner)
    if states:
        query = query.where(jobs.c.state.in_(list(states)))
    if trainers:
        query = query.where(jobs.c.trainer.in_(list(trainers)))
    if after is not None:
        query = query.where(sa.or_(
            jobs.c.created_at < after.created_at,
            sa.and_(jobs.c.created_at == after.created_at, jobs.c.id < after.job_id),
        ))
    with engine.connect() as conn:
        return [(row.id, row.created_at) for row in conn.execute(query)]
