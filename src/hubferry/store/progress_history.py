"""Each job's progress over time (a loss curve), kept cheap to write and bounded in size.

:meth:`hubferry.store.jobs.JobStore.update_progress` calls :func:`record` inside its own transaction, so a
report costs one indexed read and one write. A point covers :data:`MIN_INTERVAL` from its ``at``: reports
of the same stage within it overwrite the point's values, so a job has at most one point a second (plus
one per stage change) and the newest point of each stage is that stage's last progress. When a job
reaches :data:`MAX_POINTS`, every other point of it is dropped (first and last kept), so a long run
keeps its whole curve at a coarser grain instead of losing an end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from hubferry.domain.jobs import StageProgress
from hubferry.store.tables import UTCDateTime, metadata

#: Closest spacing of two stored points of one job (progress is reported about twice a second).
MIN_INTERVAL = timedelta(seconds=1)
#: Most points kept per job; reaching it halves the job's points.
MAX_POINTS = 2000
#: The point count is checked every this many points of a job (counting on every insert would cost more).
_COUNT_EVERY = 100
#: Ids per ``DELETE ... IN (...)`` (SQLite's variable limit is far higher; this keeps statements small).
_DELETE_CHUNK = 500

job_progress = sa.Table(
    "job_progress",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    # The job's point number, counting every point ever stored (thinning leaves gaps).
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("stage", sa.String(64)),
    sa.Column("percent", sa.Float),
    sa.Column("step", sa.Integer),
    sa.Column("total_steps", sa.Integer),
    sa.Column("loss", sa.Float),
    sa.Index("ix_job_progress_job", "job_id", "id"),
)


@dataclass(frozen=True)
class ProgressPoint:
    """One stored progress report of a job."""

    id: int
    at: datetime
    stage: str | None
    percent: float | None
    step: int | None
    total_steps: int | None
    loss: float | None


def record(conn: Connection, job_id: str, progress: StageProgress, *, now: datetime) -> bool:
    """Store ``progress`` in ``job_id``'s history inside ``conn``'s transaction: as a new point, or over the
    job's last point when that one is of the same stage and younger than :data:`MIN_INTERVAL`; returns
    whether a point was added."""
    last = conn.execute(
        sa.select(job_progress.c.id, job_progress.c.n, job_progress.c.at, job_progress.c.stage)
        .where(job_progress.c.job_id == job_id)
        .order_by(job_progress.c.id.desc())
        .limit(1)
    ).first()
    values = {"stage": progress.stage, "percent": progress.percent, "step": progress.step,
              "total_steps": progress.total_steps, "loss": progress.loss}
    if last is not None and last.stage == progress.stage and now - last.at < MIN_INTERVAL:
        conn.execute(sa.update(job_progress).where(job_progress.c.id == last.id).values(**values))
        return False
    n = (last.n if last is not None else 0) + 1
    conn.execute(sa.insert(job_progress).values(job_id=job_id, n=n, at=now, **values))
    if n % _COUNT_EVERY == 0:
        _thin(conn, job_id)
    return True


def _thin(conn: Connection, job_id: str) -> None:
    """Halve a job's points once it holds :data:`MAX_POINTS` or more (its first and last are kept)."""
    ids = list(conn.execute(
        sa.select(job_progress.c.id).where(job_progress.c.job_id == job_id).order_by(job_progress.c.id)
    ).scalars())
    if len(ids) < MAX_POINTS:
        return
    doomed = ids[1:-1:2]
    for start in range(0, len(doomed), _DELETE_CHUNK):
        conn.execute(sa.delete(job_progress).where(job_progress.c.id.in_(doomed[start:start + _DELETE_CHUNK])))


def points(engine: Engine, job_id: str, *, after: int = 0, limit: int = 1000) -> list[ProgressPoint]:
    """A job's points in time order, from the one after the point id ``after``."""
    query = (
        sa.select(job_progress)
        .where(job_progress.c.job_id == job_id, job_progress.c.id > after)
        .order_by(job_progress.c.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [
            ProgressPoint(row.id, row.at, row.stage, row.percent, row.step, row.total_steps, row.loss)
            for row in conn.execute(query)
        ]
