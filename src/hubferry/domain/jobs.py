"""Jobs and their state machine: what a job is, which moves are legal, and what each move changes.

::

    queued ─► preparing ─► training ─► publishing ─► verifying ─► published
                              │            ▲
                              └► trained ──┘        (no token: weights kept, publish later)

    failed, cancelled  ◄── any of queued, preparing, training, publishing, verifying
    failed ─► publishing   retry a failed publish (training output exists)
    failed ─► queued       retry a failed training (when the trainer supports it)

``published`` and ``cancelled`` are final; ``trained`` and ``failed`` are resting states that
are left only by publishing or retrying. Everything here is pure: the store applies the
result of :func:`transition` with a compare-and-set on the state.
"""

from __future__ import annotations

import dataclasses
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from hubferry.domain.naming import validate_repo_id
from hubferry.errors import CATEGORIES, HubferryError, IllegalTransition, ValidationError

#: Length of the random part of a job id; 36**12 ≈ 4.7e18 ids, so collisions are not a concern.
JOB_ID_RANDOM_LENGTH = 12
JOB_ID_PREFIX = "job_"
_JOB_ID_ALPHABET = string.ascii_lowercase + string.digits


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    PREPARING = "preparing"
    TRAINING = "training"
    TRAINED = "trained"
    PUBLISHING = "publishing"
    VERIFYING = "verifying"
    PUBLISHED = "published"
    FAILED = "failed"
    CANCELLED = "cancelled"


_STOP = frozenset({JobState.FAILED, JobState.CANCELLED})

#: Every legal move; anything else is a bug and raises :class:`IllegalTransition`.
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = MappingProxyType(
    {
        JobState.QUEUED: frozenset({JobState.PREPARING}) | _STOP,
        JobState.PREPARING: frozenset({JobState.TRAINING}) | _STOP,
        JobState.TRAINING: frozenset({JobState.PUBLISHING, JobState.TRAINED}) | _STOP,
        JobState.TRAINED: frozenset({JobState.PUBLISHING}),
        JobState.PUBLISHING: frozenset({JobState.VERIFYING}) | _STOP,
        JobState.VERIFYING: frozenset({JobState.PUBLISHED}) | _STOP,
        JobState.PUBLISHED: frozenset(),
        JobState.FAILED: frozenset({JobState.PUBLISHING, JobState.QUEUED}),
        JobState.CANCELLED: frozenset(),
    }
)

#: States no transition leaves.
FINAL_STATES = frozenset({JobState.PUBLISHED, JobState.CANCELLED})
#: States where nothing runs until a user (or the reconciler) publishes or retries.
RESTING_STATES = frozenset({JobState.TRAINED, JobState.FAILED})
#: States in which some worker should be making progress.
ACTIVE_STATES = frozenset(JobState) - FINAL_STATES - RESTING_STATES
#: States in which the training output must exist.
_NEEDS_OUTPUT = frozenset({JobState.TRAINED, JobState.PUBLISHING})
#: A trainer handle holding this key names a run that outlives its training (a pod that publishes its own
#: weights): it is kept through publishing and after, until the training is retried on a new run.
HANDLE_OUTLIVES_TRAINING = "outlives_training"
#: States in which a local trainer process may be running.
_TRAINER_RUNNING = frozenset({JobState.PREPARING, JobState.TRAINING})


class EventKind(StrEnum):
    """What a timeline entry records."""

    STAGE_STARTED = "stage_started"
    STAGE_FINISHED = "stage_finished"
    STAGE_FAILED = "stage_failed"
    STATE_CHANGED = "state_changed"
    NOTICE = "notice"


@dataclass(frozen=True)
class ErrorInfo:
    """Why a job failed, as stored on the job and shown to the user."""

    category: str
    message: str
    hint: str = ""
    retryable: bool = False

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown error category {self.category!r}")

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """Describe any exception; hubferry errors keep their category, hint and retryability."""
        if isinstance(exc, HubferryError):
            return cls(exc.category, exc.message, exc.hint, exc.retryable)
        return cls("internal", f"{type(exc).__name__}: {exc}", "", False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorInfo:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        return cls(
            category=data["category"],
            message=data["message"],
            hint=data.get("hint", ""),
            retryable=bool(data.get("retryable", False)),
        )


@dataclass(frozen=True)
class StageProgress:
    """The last progress report of the stage a job is in; every field may be unknown."""

    stage: str | None = None
    percent: float | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    eta_seconds: float | None = None


@dataclass(frozen=True)
class Job:
    """A training job and, once trained, its publication to the Hub."""

    id: str
    owner: str
    name: str
    trainer: str
    params: Mapping[str, Any]
    dataset: str
    repo_id: str
    private: bool
    created_at: datetime
    updated_at: datetime
    state: JobState = JobState.QUEUED
    repo_auto_named: bool = False
    progress: StageProgress = field(default_factory=StageProgress)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorInfo | None = None
    repo_url: str | None = None
    commit_sha: str | None = None
    output_dir: str | None = None
    log_path: str | None = None
    #: The trainer's record of the run (see ``trainers.base.Handle``) while it may be running.
    trainer_handle: Mapping[str, Any] | None = None
    #: When a remote run was last read from its provider, and how much of its log was consumed.
    observed_at: datetime | None = None
    log_cursor: str | None = None
    attempts: int = 1


@dataclass(frozen=True)
class JobEvent:
    """One entry of a job's append-only timeline; ``seq`` counts from 1 per job."""

    job_id: str
    seq: int
    at: datetime
    kind: EventKind
    stage: str | None = None
    message: str = ""
    context: Mapping[str, Any] = field(default_factory=dict)


def new_job_id() -> str:
    """A short, URL-safe, random job id such as ``job_3k9x0q2m7abc``."""
    return JOB_ID_PREFIX + "".join(secrets.choice(_JOB_ID_ALPHABET) for _ in range(JOB_ID_RANDOM_LENGTH))


def new_job(
    *,
    owner: str,
    name: str,
    trainer: str,
    params: Mapping[str, Any],
    dataset: str,
    repo_id: str,
    now: datetime,
    private: bool = True,
    repo_auto_named: bool = False,
    job_id: str | None = None,
) -> Job:
    """A queued job, with its inputs checked.

    Args:
        params: the trainer's parameters, already validated by the trainer adapter.
        repo_id: the target ``namespace/name``, explicit or from :func:`~hubferry.domain.naming.auto_repo_id`.
        now: a timezone-aware creation time.

    Raises:
        ValidationError: an empty field or an invalid ``repo_id``.
    """
    _require_aware(now)
    for field_name, value in (("owner", owner), ("name", name), ("trainer", trainer), ("dataset", dataset)):
        if not value or not value.strip():
            raise ValidationError(f"{field_name} must not be empty", field=field_name)
    validate_repo_id(repo_id)
    return Job(
        id=job_id or new_job_id(),
        owner=owner,
        name=name,
        trainer=trainer,
        params=dict(params),
        dataset=dataset,
        repo_id=repo_id,
        private=private,
        repo_auto_named=repo_auto_named,
        created_at=now,
        updated_at=now,
    )


def can_transition(current: JobState, new: JobState) -> bool:
    """Whether the table allows ``current → new`` (conditions on the job aside)."""
    return new in TRANSITIONS[current]


def check_transition(current: JobState, new: JobState, *, job_id: str | None = None) -> None:
    """Raise :class:`IllegalTransition` unless the table allows ``current → new``."""
    if not can_transition(current, new):
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing"
        raise IllegalTransition(
            f"a job cannot go from {current} to {new}",
            hint=f"From {current} a job may go to: {allowed}.",
            job_id=job_id,
            from_state=str(current),
            to_state=str(new),
        )


def transition(
    job: Job,
    new_state: JobState,
    *,
    now: datetime,
    error: ErrorInfo | None = None,
    output_dir: str | None = None,
) -> Job:
    """The job after moving to ``new_state``.

    Besides the state, a move sets ``updated_at``; ``started_at`` on the first start;
    ``finished_at`` on reaching a final or resting state (cleared on leaving one); the error
    on failing (cleared on retry); ``attempts`` +1 on each retry; and drops ``trainer_handle`` once no
    trainer can be running (unless it says :data:`HANDLE_OUTLIVES_TRAINING`). A retry of training starts
    afresh (no output, no progress).

    Args:
        error: required when ``new_state`` is ``failed``.
        output_dir: where the trained weights are; recorded when given.

    Raises:
        IllegalTransition: the table forbids the move, ``failed`` comes without an error,
            or a move that needs the training output has none.
    """
    _require_aware(now)
    check_transition(job.state, new_state, job_id=job.id)
    if error is not None and new_state is not JobState.FAILED:
        raise IllegalTransition(f"an error was given for a move to {new_state}", job_id=job.id)
    if new_state is JobState.FAILED and error is None:
        raise IllegalTransition("a job cannot fail without an error", job_id=job.id)
    changes: dict[str, Any] = {"state": new_state, "updated_at": now, "error": error}
    if output_dir is not None:
        changes["output_dir"] = output_dir
    if new_state in _NEEDS_OUTPUT and not changes.get("output_dir", job.output_dir):
        raise IllegalTransition(
            f"a job cannot go to {new_state} without training output", job_id=job.id, to_state=str(new_state)
        )
    retry = job.state is JobState.FAILED
    if retry:
        changes["attempts"] = job.attempts + 1
    if retry and new_state is JobState.QUEUED:
        changes.update(started_at=None, output_dir=None, progress=StageProgress())
    if new_state is JobState.PREPARING and job.started_at is None:
        changes["started_at"] = now
    if new_state in FINAL_STATES or new_state in RESTING_STATES:
        changes["finished_at"] = now
    elif job.state in RESTING_STATES:
        changes["finished_at"] = None
    held = bool((job.trainer_handle or {}).get(HANDLE_OUTLIVES_TRAINING)) and new_state is not JobState.QUEUED
    if new_state not in _TRAINER_RUNNING and not held:
        changes["trainer_handle"] = None
    return dataclasses.replace(job, **changes)


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
