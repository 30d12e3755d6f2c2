"""The durable job repository: jobs, compare-and-set state transitions, progress and the event timeline.

Every state change is checked by :func:`hubferry.domain.jobs.transition` and then written with
``UPDATE jobs ... WHERE id = :id AND state = :expected AND state_version = :seen``, so when a
webhook, a poll and the reconciler race to move a job, exactly one of them wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from hubferry.domain import jobs as domain
from hubferry.domain.jobs import ErrorInfo, EventKind, Job, JobEvent, JobState, StageProgress
from hubferry.errors import ValidationError
from hubferry.store import progress_history
from hubferry.store.database import utcnow, write_transaction
from hubferry.store.tables import job_events, jobs, publishes, webhook_deliveries

Clock = Callable[[], datetime]

#: Job states in which the publish row is live (claimable or held).
_PUBLISH_LIVE = ("pending", "uploading")
#: Job states whose training output exists but which are not yet published.


class _Unset(Enum):
    UNSET = "unset"


#: Marks an argument that was not given (``None`` means "clear the field").
UNSET = _Unset.UNSET


class JobStore:
    """Jobs in a SQLite or PostgreSQL database whose schema :func:`~hubferry.store.migrations.upgrade` made.

    Args:
        engine: from :func:`~hubferry.store.database.make_engine`.
        clock: returns the current timezone-aware time; tests pass a fake.
    """

    def __init__(self, engine: Engine, *, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.clock = clock

    # -- jobs ------------------------------------------------------------------------------

    def create(self, job: Job) -> Job:
        """Insert a new job (from :func:`hubferry.domain.jobs.new_job`) and return it.

        Raises:
            ValidationError: a job with this id exists already.
        """
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(sa.insert(jobs).values(**_job_to_row(job), state_version=0, last_event_seq=0))
        except sa.exc.IntegrityError as exc:
            raise ValidationError(f"job {job.id} exists already", field="id", job_id=job.id) from exc
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or ``None``."""
        with self.engine.connect() as conn:
            row = _read(conn, job_id)
        return _job_from_row(row) if row is not None else None

    def require(self, job_id: str) -> Job:
        """The job with this id.

        Raises:
            ValidationError: no such job.
        """
        job = self.get(job_id)
        if job is None:
            raise _unknown(job_id)
        return job

    def list_jobs(
        self,
        *,
        owner: str | None = None,
        states: Iterable[JobState] | None = None,
        updated_before: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs newest first, optionally only one owner's, in some states, or idle since a time."""
        query = sa.select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit).offset(offset)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        if states is not None:
            query = query.where(jobs.c.state.in_([JobState(s).value for s in states]))
        if updated_before is not None:
            query = query.where(jobs.c.updated_at < updated_before)
        with self.engine.connect() as conn:
            return [_job_from_row(row) for row in conn.execute(query).mappings()]

    # -- state -----------------------------------------------------------------------------

    def transition(
        self,
        job_id: str,
        expected: JobState,
        new_state: JobState,
        *,
        error: ErrorInfo | None = None,
        output_dir: str | None = None,
        message: str = "",
    ) -> Job | None:
        """Move a job from ``expected`` to ``new_state`` if it is still in ``expected``.

        The move and a ``state_changed`` event are written in one transaction. Moving to
        ``publishing`` also (re)opens the job's publish for claiming; moving a publishing job to
        ``failed``/``cancelled`` closes it, so its holder's next heartbeat fails.

        Returns:
            The updated job, or ``None`` when the job was no longer in ``expected`` (another
            caller won the race; nothing was changed).

        Raises:
            IllegalTransition: the state machine forbids the move.
            ValidationError: no such job.
        """
        domain.check_transition(expected, new_state, job_id=job_id)
        with write_transaction(self.engine) as conn:
            row = _read(conn, job_id)
            if row is None:
                raise _unknown(job_id)
            return apply_transition(
                conn, row, expected, new_state, now=self.clock(), error=error, output_dir=output_dir, message=message
            )

    # -- progress and runtime facts ----------------------------------------------------------

    def update_progress(self, job_id: str, progress: StageProgress, *, log_cursor: str | None = None) -> bool:
        """Record the latest progress of an active job (and, in the same write, how much of a remote run's
        log it was read from).

        Returns:
            ``False`` when the job is gone or no longer active (a late report is dropped).
        """
        now = self.clock()
        values: dict[str, Any] = {
            "stage": progress.stage,
            "percent": progress.percent,
            "step": progress.step,
            "total_steps": progress.total_steps,
            "loss": progress.loss,
            "eta_seconds": progress.eta_seconds,
            "updated_at": now,
        }
        if log_cursor is not None:
            values["log_cursor"] = log_cursor
        active = [s.value for s in domain.ACTIVE_STATES]
        with write_transaction(self.engine) as conn:
            result = conn.execute(sa.update(jobs).where(jobs.c.id == job_id, jobs.c.state.in_(active)).values(**values))
            if result.rowcount == 1:  # also a point of the job's progress history (its loss curve)
                progress_history.record(conn, job_id, progress, now=now)
        return result.rowcount == 1

    def claim_observation(self, job_id: str, *, stale_after: timedelta) -> Job | None:
        """Take the right to read a remote run from its provider now: the job (as the claim left it, with
        the log cursor of the previous observation) for one caller per interval, ``None`` for the others.

        A compare-and-set on ``observed_at``, so pollers, webhooks and status reads on any number of
        processes make at most one provider call per job per ``stale_after``.
        """
        now = self.clock()
        fresh = sa.or_(jobs.c.observed_at.is_(None), jobs.c.observed_at <= now - stale_after)
        with write_transaction(self.engine) as conn:
            row = conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id, fresh).values(observed_at=now).returning(*jobs.c)
            ).mappings().first()
        return _job_from_row(row) if row is not None else None

    def hold_observation(self, job_id: str, *, claimed_at: datetime | None, until: datetime) -> bool:
        """Move a job's observation mark from ``claimed_at`` (the claim the caller holds) to ``until``.

        A mark in the future keeps every other observer, forced ones included, from claiming the job until
        then; a mark of now lets the next poll claim it after one interval. Returns False when another
        observer claimed the job since ``claimed_at`` (it now holds the job; the caller must back off).
        """
        with write_transaction(self.engine) as conn:
            result = conn.execute(sa.update(jobs).where(jobs.c.id == job_id, jobs.c.observed_at == claimed_at)
                                  .values(observed_at=until))
        return result.rowcount == 1

    def set_log_cursor(self, job_id: str, cursor: str) -> None:
        """Remember how much of a remote run's log has been consumed."""
        with write_transaction(self.engine) as conn:
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(log_cursor=cursor))

    def claim_due(self, kinds: Iterable[str], *, stale_after: timedelta, limit: int = 1000,
                  publishing_kinds: Iterable[str] = ()) -> list[Job]:
        """Claim (as :meth:`claim_observation` does, in one statement) the training jobs of the remote
        ``kinds`` (and the publishing jobs of ``publishing_kinds``) not observed for ``stale_after``, oldest
        observation first; returns them as claimed."""
        now = self.clock()
        fresh = sa.or_(jobs.c.observed_at.is_(None), jobs.c.observed_at <= now - stale_after)
        watched = sa.or_(jobs.c.state == JobState.TRAINING.value, sa.and_(
            jobs.c.state == JobState.PUBLISHING.value, jobs.c.trainer.in_(list(publishing_kinds))))
        due = (
            sa.select(jobs.c.id)
            .where(jobs.c.trainer.in_(list(kinds)), watched, fresh)
            .order_by(jobs.c.observed_at.asc().nulls_first())
            .limit(limit)
        )
        claim = sa.update(jobs).where(jobs.c.id.in_(due), fresh).values(observed_at=now).returning(*jobs.c)
        with write_transaction(self.engine) as conn:
            return [_job_from_row(row) for row in conn.execute(claim).mappings()]

    def record_delivery(self, provider: str, delivery_id: str, job_id: str) -> bool:
        """Remember a webhook delivery; False when that delivery id was seen before (a repeat)."""
        try:
            with write_transaction(self.engine) as conn:
                conn.execute(sa.insert(webhook_deliveries).values(
                    provider=provider, delivery_id=delivery_id[:200], job_id=job_id, received_at=self.clock()))
        except sa.exc.IntegrityError:
            return False
        return True

    def set_runtime(
        self,
        job_id: str,
        *,
        trainer_handle: Mapping[str, Any] | None | _Unset = UNSET,
        log_path: str | None | _Unset = UNSET,
        output_dir: str | None | _Unset = UNSET,
    ) -> bool:
        """Record where a job runs and writes: the trainer's handle of the run, its log, its output folder.

        Only the arguments given are changed; ``None`` clears a field.

        Returns:
            ``False`` when there is no such job.
        """
        values: dict[str, Any] = {
            k: (dict(v) if isinstance(v, Mapping) else v)
            for k, v in (("trainer_handle", trainer_handle), ("log_path", log_path), ("output_dir", output_dir))
            if v is not UNSET
        }
        return self._update(job_id, values)

    def merge_handle(self, job_id: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        """Change some keys of a job's trainer handle, atomically (the row is locked while it is merged), so
        concurrent writers (a pod's reports, the poller, the publish) never undo each other.

        Returns:
            The merged handle, or ``None`` when there is no such job.
        """
        with write_transaction(self.engine) as conn:
            row = conn.execute(sa.select(jobs.c.trainer_handle).where(jobs.c.id == job_id).with_for_update()).first()
            if row is None:
                return None
            handle = {**(row[0] or {}), **changes}
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(trainer_handle=handle))
        return handle

    def retarget(
        self, job_id: str, *, repo_id: str, repo_auto_named: bool, params: Mapping[str, Any] | None = None,
    ) -> bool:
        """Point a job that is not publishing at another repo (and update its parameters)."""
        values: dict[str, Any] = {"repo_id": repo_id, "repo_auto_named": repo_auto_named}
        if params is not None:
            values["params"] = dict(params)
        return self._update(job_id, values)

    def _update(self, job_id: str, values: dict[str, Any]) -> bool:
        values["updated_at"] = self.clock()
        with write_transaction(self.engine) as conn:
            result = conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(**values))
        return result.rowcount == 1

    # -- timeline ----------------------------------------------------------------------------

    def append_event(
        self,
        job_id: str,
        kind: EventKind,
        *,
        stage: str | None = None,
        message: str = "",
        context: Mapping[str, Any] | None = None,
    ) -> JobEvent:
        """Add an entry at the end of a job's timeline.

        Raises:
            ValidationError: no such job.
        """
        with write_transaction(self.engine) as conn:
            return append_event(conn, job_id, kind, at=self.clock(), stage=stage, message=message, context=context)

    def events(self, job_id: str, *, after_seq: int = 0, limit: int | None = None) -> list[JobEvent]:
        """A job's timeline in order, from the entry after ``after_seq`` (for incremental polling)."""
        query = (
            sa.select(job_events)
            .where(job_events.c.job_id == job_id, job_events.c.seq > after_seq)
            .order_by(job_events.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_event_from_row(row) for row in conn.execute(query).mappings()]


# -- shared with the publish store (they run inside its transactions) ------------------------


def apply_transition(
    conn: Connection,
    row: RowMapping,
    expected: JobState,
    new_state: JobState,
    *,
    now: datetime,
    error: ErrorInfo | None = None,
    output_dir: str | None = None,
    message: str = "",
) -> Job | None:
    """Compare-and-set a job (read as ``row`` in this transaction) from ``expected`` to ``new_state``."""
    job = _job_from_row(row)
    if job.state is not expected:
        return None
    updated = domain.transition(job, new_state, now=now, error=error, output_dir=output_dir)
    old_row = _job_to_row(job)
    changed = {k: v for k, v in _job_to_row(updated).items() if v != old_row[k]}
    changed["updated_at"] = now
    result = conn.execute(
        sa.update(jobs)
        .where(
            jobs.c.id == job.id,
            jobs.c.state == expected.value,
            jobs.c.state_version == row["state_version"],
        )
        .values(**changed, state_version=jobs.c.state_version + 1)
    )
    if result.rowcount != 1:
        return None
    append_event(
        conn,
        job.id,
        EventKind.STATE_CHANGED,
        at=now,
        message=message or f"{expected} → {new_state}",
        context={"from": expected.value, "to": new_state.value, **({"error": error.to_dict()} if error else {})},
    )
    if new_state is JobState.PUBLISHING:
        _open_publish(conn, job.id, now)
    elif new_state in (JobState.FAILED, JobState.CANCELLED):
        conn.execute(
            sa.update(publishes)
            .where(publishes.c.job_id == job.id, publishes.c.state.in_(_PUBLISH_LIVE))
            .values(state=new_state.value, lease_until=None, updated_at=now)
        )
    return updated


def append_event(
    conn: Connection,
    job_id: str,
    kind: EventKind,
    *,
    at: datetime,
    stage: str | None = None,
    message: str = "",
    context: Mapping[str, Any] | None = None,
) -> JobEvent:
    """Append to a job's timeline inside ``conn``'s transaction; the job's row lock orders the appends."""
    seq = conn.execute(
        sa.update(jobs)
        .where(jobs.c.id == job_id)
        .values(last_event_seq=jobs.c.last_event_seq + 1)
        .returning(jobs.c.last_event_seq)
    ).scalar_one_or_none()
    if seq is None:
        raise _unknown(job_id)
    event = JobEvent(job_id, seq, at, EventKind(kind), stage, message, dict(context or {}))
    conn.execute(
        sa.insert(job_events).values(
            job_id=job_id, seq=seq, at=at, kind=event.kind.value, stage=stage, message=message, context=event.context
        )
    )
    return event


def read_job_row(conn: Connection, job_id: str) -> RowMapping | None:
    """The raw row of a job (with its ``state_version``), read in ``conn``'s transaction."""
    return _read(conn, job_id)


def _open_publish(conn: Connection, job_id: str, now: datetime) -> None:
    """Make the job's publish claimable; a retry keeps the fence so old holders stay fenced off."""
    reopened = conn.execute(
        sa.update(publishes)
        .where(publishes.c.job_id == job_id)
        .values(state="pending", lease_owner=None, lease_until=None, error=None, updated_at=now)
    )
    if reopened.rowcount == 0:
        conn.execute(
            sa.insert(publishes).values(
                job_id=job_id, state="pending", fence=0, attempts=0, created_at=now, updated_at=now
            )
        )


def _read(conn: Connection, job_id: str) -> RowMapping | None:
    return conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()


def _unknown(job_id: str) -> ValidationError:
    return ValidationError(
        f"no job {job_id}", field="job_id", job_id=job_id,
        hint="see the job ids with `hubferry jobs list` (or GET /api/jobs)",
    )


def _job_to_row(job: Job) -> dict[str, Any]:
    progress = job.progress
    return {
        "id": job.id,
        "owner": job.owner,
        "name": job.name,
        "trainer": job.trainer,
        "params": dict(job.params),
        "dataset": job.dataset,
        "repo_id": job.repo_id,
        "repo_auto_named": job.repo_auto_named,
        "private": job.private,
        "state": job.state.value,
        "stage": progress.stage,
        "percent": progress.percent,
        "step": progress.step,
        "total_steps": progress.total_steps,
        "loss": progress.loss,
        "eta_seconds": progress.eta_seconds,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "error": job.error.to_dict() if job.error else None,
        "repo_url": job.repo_url,
        "commit_sha": job.commit_sha,
        "output_dir": job.output_dir,
        "log_path": job.log_path,
        "trainer_handle": dict(job.trainer_handle) if job.trainer_handle else None,
        "observed_at": job.observed_at,
        "log_cursor": job.log_cursor,
        "attempts": job.attempts,
    }


def _job_from_row(row: RowMapping) -> Job:
    return Job(
        id=row["id"],
        owner=row["owner"],
        name=row["name"],
        trainer=row["trainer"],
        params=row["params"],
        dataset=row["dataset"],
        repo_id=row["repo_id"],
        repo_auto_named=row["repo_auto_named"],
        private=row["private"],
        state=JobState(row["state"]),
        progress=StageProgress(
            stage=row["stage"],
            percent=row["percent"],
            step=row["step"],
            total_steps=row["total_steps"],
            loss=row["loss"],
            eta_seconds=row["eta_seconds"],
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=ErrorInfo.from_dict(row["error"]) if row["error"] else None,
        repo_url=row["repo_url"],
        commit_sha=row["commit_sha"],
        output_dir=row["output_dir"],
        log_path=row["log_path"],
        trainer_handle=row["trainer_handle"],
        observed_at=row["observed_at"],
        log_cursor=row["log_cursor"],
        attempts=row["attempts"],
    )


def _event_from_row(row: RowMapping) -> JobEvent:
    return JobEvent(
        job_id=row["job_id"],
        seq=row["seq"],
        at=row["at"],
        kind=EventKind(row["kind"]),
        stage=row["stage"],
        message=row["message"],
        context=row["context"],
    )
