"""The job state machine, job construction, error info and lease rules (pure, no database)."""

from __future__ import annotations

import dataclasses
import pickle
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubferry.domain import leases
from hubferry.domain.jobs import (
    ACTIVE_STATES,
    FINAL_STATES,
    RESTING_STATES,
    ErrorInfo,
    Job,
    JobState,
    StageProgress,
    new_job,
    new_job_id,
    transition,
)
from hubferry.errors import IllegalTransition, PermanentError, TransientError, ValidationError

S = JobState
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BOOM = ErrorInfo("network", "the Hub timed out", "try again", retryable=True)

# Written out independently of TRANSITIONS, from the product description.
ALLOWED = {
    (S.QUEUED, S.PREPARING),
    (S.PREPARING, S.TRAINING),
    (S.TRAINING, S.PUBLISHING),
    (S.TRAINING, S.TRAINED),
    (S.TRAINED, S.PUBLISHING),
    (S.PUBLISHING, S.VERIFYING),
    (S.VERIFYING, S.PUBLISHED),
    (S.FAILED, S.PUBLISHING),
    (S.FAILED, S.QUEUED),
    *(
        (s, stop)
        for s in (S.QUEUED, S.PREPARING, S.TRAINING, S.PUBLISHING, S.VERIFYING)
        for stop in (S.FAILED, S.CANCELLED)
    ),
}


def make_job(**changes) -> Job:
    job = new_job(
        owner="alice",
        name="Corgi LoRA",
        trainer="local",
        params={"steps": 1000},
        dataset="file:///data/corgi.zip",
        repo_id="alice/corgi-lora",
        now=T0,
    )
    return dataclasses.replace(job, **changes)


def job_in(state: JobState) -> Job:
    """A plausible job resting in ``state`` (with output and error where that state implies them)."""
    return make_job(
        state=state,
        output_dir="/runs/out",
        error=BOOM if state is S.FAILED else None,
        started_at=T0,
    )


def move(job: Job, new: JobState, now: datetime = T0 + timedelta(minutes=1)) -> Job:
    return transition(job, new, now=now, error=BOOM if new is S.FAILED else None)


@pytest.mark.parametrize("current", list(S))
@pytest.mark.parametrize("new", list(S))
def test_every_pair_is_allowed_or_raises(current: JobState, new: JobState) -> None:
    job = job_in(current)
    if (current, new) in ALLOWED:
        assert move(job, new).state is new
    else:
        with pytest.raises(IllegalTransition) as info:
            move(job, new)
        assert info.value.to_state == new.value
        assert info.value.from_state == current.value


def test_final_states_are_never_left_and_resting_states_only_by_publish_or_retry() -> None:
    assert FINAL_STATES == {S.PUBLISHED, S.CANCELLED}
    assert RESTING_STATES == {S.TRAINED, S.FAILED}
    assert ACTIVE_STATES == {S.QUEUED, S.PREPARING, S.TRAINING, S.PUBLISHING, S.VERIFYING}
    assert {new for cur, new in ALLOWED if cur in RESTING_STATES} == {S.PUBLISHING, S.QUEUED}


def test_illegal_transition_is_a_permanent_error_that_survives_pickling() -> None:
    with pytest.raises(IllegalTransition) as info:
        move(job_in(S.PUBLISHED), S.QUEUED)
    err = pickle.loads(pickle.dumps(info.value))
    assert isinstance(err, PermanentError) and not err.retryable
    assert err.job_id == info.value.job_id and "published" in str(err)


def test_happy_path_sets_timestamps_and_clears_the_trainer_handle() -> None:
    job = make_job()
    assert job.state is S.QUEUED and job.started_at is None and job.attempts == 1
    t1, t2, t3, t4, t5 = (T0 + timedelta(minutes=i) for i in range(1, 6))
    job = transition(job, S.PREPARING, now=t1)
    job = dataclasses.replace(transition(job, S.TRAINING, now=t2), trainer_handle={"pid": 4242})
    job = transition(job, S.PUBLISHING, now=t3, output_dir="/runs/out")
    assert job.trainer_handle is None and job.output_dir == "/runs/out" and job.finished_at is None
    job = transition(transition(job, S.VERIFYING, now=t4), S.PUBLISHED, now=t5)
    assert (job.started_at, job.finished_at, job.updated_at) == (t1, t5, t5)
    assert job.error is None and job.attempts == 1


def test_publishing_or_keeping_weights_needs_training_output() -> None:
    training = make_job(state=S.TRAINING)
    for target in (S.PUBLISHING, S.TRAINED):
        with pytest.raises(IllegalTransition, match="without training output"):
            transition(training, target, now=T0)
    failed_without_output = make_job(state=S.FAILED, error=BOOM)
    with pytest.raises(IllegalTransition):
        transition(failed_without_output, S.PUBLISHING, now=T0)
    assert transition(training, S.TRAINED, now=T0, output_dir="/o").finished_at == T0


def test_failing_needs_an_error_and_only_failing_takes_one() -> None:
    with pytest.raises(IllegalTransition, match="without an error"):
        transition(make_job(), S.FAILED, now=T0)
    with pytest.raises(IllegalTransition, match="error was given"):
        transition(make_job(), S.PREPARING, now=T0, error=BOOM)
    failed = transition(make_job(), S.FAILED, now=T0, error=BOOM)
    assert failed.error == BOOM and failed.finished_at == T0


def test_retrying_a_publish_keeps_output_and_counts_the_attempt() -> None:
    retried = move(job_in(S.FAILED), S.PUBLISHING)
    assert retried.attempts == 2 and retried.error is None and retried.finished_at is None
    assert retried.output_dir == "/runs/out"


def test_retrying_training_starts_afresh() -> None:
    failed = dataclasses.replace(job_in(S.FAILED), progress=StageProgress("training", 40.0, 400, 1000))
    retried = move(failed, S.QUEUED)
    assert retried.attempts == 2
    assert (retried.output_dir, retried.started_at, retried.finished_at, retried.error) == (None, None, None, None)
    assert retried.progress == StageProgress()
    assert move(retried, S.PREPARING, T0 + timedelta(hours=1)).started_at == T0 + timedelta(hours=1)


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        transition(make_job(), S.PREPARING, now=datetime(2026, 1, 1))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(S)), max_size=25))
def test_random_sequences_keep_the_invariants(targets: list[JobState]) -> None:
    job = make_job()
    now = T0
    retries = 0
    for target in targets:
        now += timedelta(seconds=1)
        before = job
        output = "/o" if before.state is S.TRAINING else None  # only training produces weights
        try:
            job = transition(job, target, now=now, error=BOOM if target is S.FAILED else None, output_dir=output)
        except IllegalTransition:
            no_output = target is S.PUBLISHING and before.output_dir is None
            assert (before.state, target) not in ALLOWED or no_output
            continue
        assert (before.state, target) in ALLOWED
        assert before.state not in FINAL_STATES
        retries += before.state is S.FAILED
        assert job.state is target and job.updated_at == now and job.created_at == T0
        assert (job.error is not None) == (job.state is S.FAILED)
        assert (job.finished_at is not None) == (job.state in FINAL_STATES | RESTING_STATES)
        if job.state in {S.PREPARING, S.TRAINING, S.TRAINED, S.PUBLISHING, S.VERIFYING, S.PUBLISHED}:
            assert job.started_at is not None
        if job.state in {S.TRAINED, S.PUBLISHING, S.VERIFYING, S.PUBLISHED}:
            assert job.output_dir == "/o"
        assert job.attempts == 1 + retries


def test_new_job_validates_its_inputs() -> None:
    job = make_job()
    assert re.fullmatch(r"job_[a-z0-9]{12}", job.id)
    assert job.private is True and job.updated_at == job.created_at == T0
    with pytest.raises(ValidationError) as info:
        new_job(owner="a", name=" ", trainer="local", params={}, dataset="d", repo_id="a/b", now=T0)
    assert info.value.field == "name"
    with pytest.raises(ValidationError) as info:
        new_job(owner="a", name="n", trainer="local", params={}, dataset="d", repo_id="a/--b", now=T0)
    assert info.value.field == "repo_id"


def test_job_ids_are_unique_and_url_safe() -> None:
    ids = {new_job_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(re.fullmatch(r"job_[a-z0-9]{12}", i) for i in ids)


def test_error_info_from_exceptions_and_round_trip() -> None:
    info = ErrorInfo.from_exception(TransientError("429 from the Hub", category="rate_limit", hint="wait"))
    assert info == ErrorInfo("rate_limit", "429 from the Hub", "wait", True)
    assert ErrorInfo.from_dict(info.to_dict()) == info
    assert ErrorInfo.from_exception(KeyError("x")) == ErrorInfo("internal", "KeyError: 'x'")
    with pytest.raises(ValueError):
        ErrorInfo("bogus", "m")


def test_lease_rules() -> None:
    assert leases.heartbeat_interval(leases.PUBLISH_LEASE_TTL) * 2 < leases.PUBLISH_LEASE_TTL
    until = leases.lease_deadline(T0, timedelta(seconds=90))
    assert until == T0 + timedelta(seconds=90)
    with pytest.raises(ValueError):
        leases.lease_deadline(T0, timedelta(0))

