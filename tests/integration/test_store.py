"""The job store on SQLite and PostgreSQL: CRUD, compare-and-set races, fenced leases, timeline, migrations.

PostgreSQL is taken from ``HUBFERRY_TEST_POSTGRES_URL`` (default: local ``test`` database). Each
test gets its own schema, dropped afterwards. Without a server the PostgreSQL cases skip, except
with ``CI=true``, where they fail.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from hubferry.domain.jobs import ErrorInfo, EventKind, Job, JobState, StageProgress, new_job
from hubferry.errors import ConfigError, IllegalTransition, ValidationError
from hubferry.store import JobStore, PublishState, PublishStore, make_engine, sqlite_url, upgrade
from hubferry.store.migrations import current_revision, head_revision
from hubferry.store.tables import metadata

S = JobState
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
TTL = timedelta(seconds=60)
HUB_DOWN = ErrorInfo("service_error", "the Hub answered 500 three times", "Retry the publish later.", True)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The store on SQLite, then on a fresh PostgreSQL schema (``pg_url`` from conftest)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "jobs.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def jobs(engine: sa.Engine, clock: FakeClock) -> JobStore:
    return JobStore(engine, clock=clock)


@pytest.fixture
def publishes(engine: sa.Engine, clock: FakeClock) -> PublishStore:
    return PublishStore(engine, clock=clock)


def make(jobs: JobStore, owner: str = "alice", name: str = "corgi", at: datetime = T0) -> Job:
    return jobs.create(
        new_job(
            owner=owner,
            name=name,
            trainer="local",
            params={"steps": 1000, "lr": 1e-4, "tags": ["dog"]},
            dataset="file:///data/corgi.zip",
            repo_id=f"{owner}/{name}",
            now=at,
        )
    )


def walk(jobs: JobStore, job_id: str, *states: JobState) -> Job:
    job = jobs.require(job_id)
    for state in states:
        output = "/runs/out" if job.state is S.TRAINING else None
        moved = jobs.transition(job_id, job.state, state, output_dir=output)
        assert moved is not None, (job.state, state)
        job = moved
    return job


def publishing_job(jobs: JobStore) -> Job:
    return walk(jobs, make(jobs).id, S.PREPARING, S.TRAINING, S.PUBLISHING)


def race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(0..n-1)`` on ``n`` threads released together."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


# -- jobs -------------------------------------------------------------------------------------


def test_create_get_and_list(jobs: JobStore) -> None:
    a1 = make(jobs, "alice", "one", T0)
    b1 = make(jobs, "bob", "two", T0 + timedelta(seconds=1))
    a2 = make(jobs, "alice", "three", T0 + timedelta(seconds=2))
    assert jobs.get(a1.id) == a1
    assert jobs.get(a1.id).created_at.tzinfo is not None
    assert jobs.get("job_nonexistent0") is None
    with pytest.raises(ValidationError):
        jobs.require("job_nonexistent0")
    with pytest.raises(ValidationError, match="exists already"):
        jobs.create(a1)
    assert [j.id for j in jobs.list_jobs()] == [a2.id, b1.id, a1.id]
    assert [j.id for j in jobs.list_jobs(owner="alice")] == [a2.id, a1.id]
    assert [j.id for j in jobs.list_jobs(limit=1, offset=1)] == [b1.id]
    walk(jobs, b1.id, S.PREPARING)
    assert [j.id for j in jobs.list_jobs(states=[S.PREPARING])] == [b1.id]
    assert jobs.list_jobs(owner="carol") == []


def test_transition_records_changes_and_an_event(jobs: JobStore, clock: FakeClock) -> None:
    job = make(jobs)
    clock.advance(5)
    moved = jobs.transition(job.id, S.QUEUED, S.PREPARING)
    assert moved is not None and jobs.get(job.id) == moved
    assert moved.started_at == clock.now and moved.updated_at == clock.now
    assert jobs.transition(job.id, S.QUEUED, S.PREPARING) is None  # already moved
    with pytest.raises(IllegalTransition):
        jobs.transition(job.id, S.PREPARING, S.PUBLISHED)
    with pytest.raises(ValidationError):
        jobs.transition("job_nonexistent0", S.QUEUED, S.PREPARING)
    failed = jobs.transition(job.id, S.PREPARING, S.FAILED, error=HUB_DOWN)
    assert jobs.get(job.id).error == HUB_DOWN == failed.error
    events = jobs.events(job.id)
    assert [(e.kind, e.context["from"], e.context["to"]) for e in events] == [
        (EventKind.STATE_CHANGED, "queued", "preparing"),
        (EventKind.STATE_CHANGED, "preparing", "failed"),
    ]
    assert events[1].context["error"]["message"] == HUB_DOWN.message


def test_fifty_threads_race_one_transition_and_exactly_one_wins(jobs: JobStore) -> None:
    job = make(jobs)
    targets = [S.PREPARING if i % 2 else S.CANCELLED for i in range(50)]
    results = race(50, lambda i: jobs.transition(job.id, S.QUEUED, targets[i]))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert jobs.get(job.id).state is winners[0].state
    assert len(jobs.events(job.id)) == 1


_RACER = """
import sys
from hubferry.domain.jobs import JobState
from hubferry.store import JobStore, make_engine
url, ids = sys.argv[1], sys.argv[2].split(",")
store = JobStore(make_engine(url))
store.get(ids[0])  # warm the connection before the start signal
print("ready", flush=True)
sys.stdin.readline()
won = [i for i in ids if store.transition(i, JobState.QUEUED, JobState.PREPARING) is not None]
print(",".join(won), flush=True)
"""


def test_two_processes_race_and_each_transition_has_one_winner(jobs: JobStore, db_url: str) -> None:
    ids = [make(jobs, name=f"job-{i}").id for i in range(30)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, db_url, ",".join(ids)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    won = [set(filter(None, out.split(","))) for out in outputs]
    assert won[0].isdisjoint(won[1]) and won[0] | won[1] == set(ids)
    assert all(jobs.get(i).state is S.PREPARING and len(jobs.events(i)) == 1 for i in ids)


def test_progress_and_runtime_updates(jobs: JobStore, clock: FakeClock) -> None:
    job = walk(jobs, make(jobs).id, S.PREPARING, S.TRAINING)
    progress = StageProgress("training", 42.5, 425, 1000, 0.0831, 611.0)
    clock.advance(30)
    assert jobs.update_progress(job.id, progress)
    assert jobs.set_runtime(job.id, trainer_handle={"pid": 4242}, log_path="/runs/log.txt")
    got = jobs.require(job.id)
    assert (got.progress, got.trainer_handle, got.log_path, got.updated_at) == (
        progress, {"pid": 4242}, "/runs/log.txt", clock.now)
    assert jobs.set_runtime(job.id, trainer_handle=None) and jobs.require(job.id).log_path == "/runs/log.txt"
    walk(jobs, job.id, S.CANCELLED)
    assert not jobs.update_progress(job.id, StageProgress("training", 50.0))  # late report dropped
    assert jobs.require(job.id).progress == progress
    assert not jobs.set_runtime("job_nonexistent0", trainer_handle={"pid": 1})



def test_remote_observations_are_claimed_once_per_interval(jobs: JobStore, clock: FakeClock) -> None:
    def remote(name: str) -> Job:
        job = jobs.create(new_job(owner="alice", name=name, trainer="replicate", params={}, dataset="replicate",
                                  repo_id=f"alice/{name}", now=T0))
        return walk(jobs, job.id, S.PREPARING, S.TRAINING)

    a, b, c = remote("a"), remote("b"), remote("c")
    walk(jobs, make(jobs, name="local").id, S.PREPARING, S.TRAINING)  # not a remote kind
    walk(jobs, c.id, S.CANCELLED)  # not training
    interval = timedelta(seconds=5)
    assert jobs.update_progress(a.id, StageProgress("training", 20.0, 2, 10), log_cursor="120")

    # fifty status reads race for one job: one reads the provider, with the cursor the last read left
    claims = race(50, lambda _: jobs.claim_observation(a.id, stale_after=interval))
    winners = [j for j in claims if j is not None]
    assert len(winners) == 1 and winners[0].log_cursor == "120" and winners[0].observed_at == clock.now
    # two poll cycles race: each due job is claimed by one of them, and only remote trainings are due
    cycles = race(2, lambda _: jobs.claim_due(["replicate"], stale_after=interval))
    assert sorted(j.id for cycle in cycles for j in cycle) == [b.id]
    clock.advance(4.9)
    assert jobs.claim_due(["replicate"], stale_after=interval) == []
    assert jobs.claim_observation(b.id, stale_after=interval) is None
    assert jobs.claim_observation(b.id, stale_after=timedelta(0)) is not None  # a webhook's forced read
    clock.advance(0.1)
    assert [j.id for j in jobs.claim_due(["replicate"], stale_after=interval, limit=5)] == [a.id]


# -- timeline -------------------------------------------------------------------------------


def test_event_timeline_is_append_only_and_ordered(jobs: JobStore, clock: FakeClock) -> None:
    job = make(jobs)
    first = jobs.append_event(job.id, EventKind.STAGE_STARTED, stage="dataset", context={"files": 12})
    clock.advance(1)
    jobs.append_event(job.id, EventKind.STAGE_FINISHED, stage="dataset", message="12 images")
    race(20, lambda i: jobs.append_event(job.id, EventKind.NOTICE, message=f"n{i}", context={"i": i}))
    clock.advance(1)
    jobs.append_event(job.id, EventKind.STAGE_FAILED, stage="training", context={"nested": {"a": [1, 2]}})
    events = jobs.events(job.id)
    assert [e.seq for e in events] == list(range(1, 24))
    assert events[0] == first and first.at == T0 and first.context == {"files": 12}
    assert sorted(e.context["i"] for e in events[2:22]) == list(range(20))
    assert events[-1].kind is EventKind.STAGE_FAILED and events[-1].context == {"nested": {"a": [1, 2]}}
    assert [e.seq for e in jobs.events(job.id, after_seq=21)] == [22, 23]
    with pytest.raises(ValidationError):
        jobs.append_event("job_nonexistent0", EventKind.NOTICE)


# -- publish leases ----------------------------------------------------------------------------


def test_lease_claim_heartbeat_expiry_takeover_and_zombie(
    jobs: JobStore, publishes: PublishStore, clock: FakeClock
) -> None:
    job = publishing_job(jobs)
    assert publishes.get(job.id).state is PublishState.PENDING
    f1 = publishes.claim_publish(job.id, "worker-a", TTL)
    assert f1 == 1
    assert publishes.claim_publish(job.id, "worker-b", TTL) is None  # live lease
    clock.advance(50)
    assert publishes.heartbeat(job.id, f1, TTL)  # extends to T0+110
    clock.advance(50)
    assert publishes.expired_leases() == []
    assert publishes.claim_publish(job.id, "worker-b", TTL) is None
    clock.advance(11)  # worker-a went silent
    [lease] = publishes.expired_leases()
    assert (lease.job_id, lease.owner, lease.fence) == (job.id, "worker-a", 1)
    f2 = publishes.claim_publish(job.id, "worker-b", TTL)
    assert f2 == 2
    # worker-a wakes up: every write with its old fence is refused
    assert not publishes.heartbeat(job.id, f1, TTL)
    assert not publishes.finish_publish(job.id, f1, "https://hf.co/alice/corgi", "zombie")
    assert not publishes.fail_publish(job.id, f1, HUB_DOWN)
    record = publishes.get(job.id)
    assert (record.lease_owner, record.fence, record.attempts, record.commit_sha) == ("worker-b", 2, 2, None)
    assert jobs.require(job.id).state is S.PUBLISHING
    assert publishes.finish_publish(job.id, f2, "https://hf.co/alice/corgi", "c0ffee")
    done = jobs.require(job.id)
    assert (done.state, done.repo_url, done.commit_sha) == (S.VERIFYING, "https://hf.co/alice/corgi", "c0ffee")
    assert publishes.get(job.id).state is PublishState.COMMITTED
    assert publishes.claim_publish(job.id, "worker-c", TTL) is None
    assert not publishes.finish_publish(job.id, f2, "https://hf.co/alice/corgi", "again")


def test_fifty_threads_claim_and_one_gets_the_lease(jobs: JobStore, publishes: PublishStore) -> None:
    job = publishing_job(jobs)
    fences = race(50, lambda i: publishes.claim_publish(job.id, f"w{i}", TTL))
    assert [f for f in fences if f is not None] == [1]
    assert publishes.get(job.id).attempts == 1


def test_failed_publish_fails_the_job_and_a_retry_keeps_fencing(
    jobs: JobStore, publishes: PublishStore, clock: FakeClock
) -> None:
    job = publishing_job(jobs)
    f1 = publishes.claim_publish(job.id, "w", TTL)
    assert publishes.fail_publish(job.id, f1, HUB_DOWN)
    failed = jobs.require(job.id)
    assert failed.state is S.FAILED and failed.error == HUB_DOWN
    assert publishes.get(job.id).state is PublishState.FAILED
    assert publishes.claim_publish(job.id, "w", TTL) is None
    retried = jobs.transition(job.id, S.FAILED, S.PUBLISHING)
    assert retried.attempts == 2 and retried.error is None
    f2 = publishes.claim_publish(job.id, "w2", TTL)
    assert f2 == f1 + 1
    assert not publishes.heartbeat(job.id, f1, TTL)
    assert publishes.release_publish(job.id, f2, HUB_DOWN)  # transient trouble: hand it back
    assert publishes.get(job.id).state is PublishState.PENDING
    assert publishes.claim_publish(job.id, "w3", TTL) == f2 + 1


def test_cancelling_a_publishing_job_stops_its_lease_holder(jobs: JobStore, publishes: PublishStore) -> None:
    job = publishing_job(jobs)
    fence = publishes.claim_publish(job.id, "w", TTL)
    jobs.transition(job.id, S.PUBLISHING, S.CANCELLED)
    assert publishes.get(job.id).state is PublishState.CANCELLED
    assert not publishes.heartbeat(job.id, fence, TTL)
    assert not publishes.finish_publish(job.id, fence, "https://hf.co/x/y", "sha")
    assert jobs.require(job.id).state is S.CANCELLED


def test_reconciler_queries(jobs: JobStore, publishes: PublishStore, clock: FakeClock) -> None:
    waiting = walk(jobs, make(jobs, name="kept").id, S.PREPARING, S.TRAINING, S.TRAINED)
    pending = publishing_job(jobs)
    claimed = publishing_job(jobs)
    walk(jobs, make(jobs, name="still-training").id, S.PREPARING, S.TRAINING)
    publishes.claim_publish(claimed.id, "w", TTL)
    trained = (S.TRAINED, S.PUBLISHING, S.VERIFYING)
    assert {j.id for j in jobs.list_jobs(states=trained)} == {waiting.id, pending.id, claimed.id}
    assert publishes.pending_publishes(idle_for=timedelta(minutes=2)) == []
    clock.advance(121)
    assert [p.job_id for p in publishes.pending_publishes(idle_for=timedelta(minutes=2))] == [pending.id]
    assert [lease.job_id for lease in publishes.expired_leases()] == [claimed.id]
    assert publishes.expired_leases(now=T0) == []
    assert {j.id for j in jobs.list_jobs(updated_before=T0 + timedelta(seconds=1))} >= {waiting.id}


# -- schema -------------------------------------------------------------------------------------


def test_upgrade_twice_is_a_no_op_and_matches_the_tables(db_url: str, engine: sa.Engine) -> None:
    store = JobStore(engine, clock=FakeClock())
    job = make(store)
    upgrade(db_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert store.get(job.id) == job
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_sqlite_engine_is_tuned_for_concurrent_writers(tmp_path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "jobs.db"), busy_timeout_s=7)
    with engine.connect() as conn:
        pragma = {
            p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "foreign_keys", "busy_timeout")
        }
    engine.dispose()
    assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 7000}


def test_unsupported_database_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        make_engine("mysql://root@localhost/jobs")
