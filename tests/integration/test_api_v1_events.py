"""``GET /api/v1/jobs/{id}/events`` on a real socket: the timeline replayed then followed live, resumed with
``Last-Event-ID`` without a gap or a repeat, changes from other processes fanned out from one shared read,
heartbeats, clean disconnects, and a slow stream catching up from the database."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
import pytest

from fakes.api_v1 import api_context, as_user, header_app, local_job, serving, sse_events, stored_job
from hubferry.api.v1_events import JobNotifier, _Stream, events_router
from hubferry.api.v1_jobs import jobs_router
from hubferry.domain.jobs import EventKind, JobState, StageProgress
from hubferry.store import JobStore, make_engine


@pytest.fixture
def ctx(tmp_path, hf_env, registry):
    return api_context(tmp_path, endpoint=registry.endpoint)


@pytest.fixture
def notifier(ctx):
    return JobNotifier(ctx.jobs, poll_interval_s=0.2)


@pytest.fixture
def served(ctx, notifier):
    with serving(header_app(ctx, jobs_router(ctx), events_router(ctx, notifier=notifier, heartbeat_s=0.3))) as app:
        yield app


@pytest.fixture
def elsewhere(ctx) -> Iterator[JobStore]:
    """The same job database through another engine: writes this process's notifier is not told about,
    as a worker in another process makes them."""
    engine = make_engine(ctx.settings.resolved_database_url())
    yield JobStore(engine)
    engine.dispose()


@contextmanager
def _stream(url: str, job_id: str, user: str = "ann", **headers: str) -> Iterator[httpx2.Response]:
    with httpx2.Client(timeout=httpx2.Timeout(10.0)) as client, client.stream(
            "GET", f"{url}/api/v1/jobs/{job_id}/events", headers={**as_user(user), **headers}) as response:
        yield response


def test_a_stream_replays_the_timeline_then_follows_the_job_live_to_its_end(served, ctx, tmp_path, registry,
                                                                           alice_token):
    ctx.credentials.set("root", registry.endpoint, alice_token)
    admin = as_user("root", admin=True)
    created = httpx2.post(f"{served.url}/api/v1/jobs", headers=admin,
                          json=local_job(tmp_path / "o", steps=25, step_s=0.06, name="streamed"))
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    with _stream(served.url, job_id, "root", **{"X-Admin": "1"}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response.iter_lines()))
    timeline = [e for e in events if e.event == "timeline"]
    progress = [e for e in events if e.event == "progress"]
    assert events[-1].event == "end" and events[-1].data == {"state": "published"}
    stored = httpx2.get(f"{served.url}/api/v1/jobs/{job_id}/timeline", headers=admin).json()["events"]
    assert [e.data for e in timeline] == stored  # every entry, once, in order
    assert [e.id for e in timeline] == [str(n) for n in range(1, len(stored) + 1)]
    assert "published" in [e.data["context"].get("to") for e in timeline]
    steps = [p.data["step"] for p in progress if p.data["stage"] == "training" and p.data["step"]]
    assert len(steps) >= 3 and steps == sorted(steps) and steps[-1] == 25
    assert all(p.id and "." in p.id for p in progress)


def test_a_reconnect_with_last_event_id_gets_exactly_what_followed(served, ctx, elsewhere):
    job = stored_job(ctx, "ann")
    for n in range(3):
        ctx.jobs.append_event(job.id, EventKind.NOTICE, message=f"before {n}")
    with _stream(served.url, job.id) as response:
        lines = response.iter_lines()
        seen = []
        for event in sse_events(lines):
            if event.event == "timeline":
                seen.append(event)
            if len(seen) == 2:
                break
    last_id = seen[-1].id
    assert last_id == "2"
    for n in range(3):  # written while the client was away, by another process
        elsewhere.append_event(job.id, EventKind.NOTICE, message=f"away {n}")
    with _stream(served.url, job.id, **{"Last-Event-ID": last_id + ".4"}) as response:
        got = []
        for event in sse_events(response.iter_lines()):
            if event.event == "timeline":
                got.append(event.data["seq"])
            if len(got) == 4:
                elsewhere.transition(job.id, JobState.QUEUED, JobState.CANCELLED)
            if event.event == "end":
                break
    assert got == [3, 4, 5, 6, 7]  # the missed entries, then the cancellation; nothing twice
    finished = httpx2.get(f"{served.url}/api/v1/jobs/{job.id}/events", headers={**as_user("ann"),
                                                                                  "Last-Event-ID": "7"})
    assert finished.status_code == 204  # EventSource stops reconnecting
    bad = httpx2.get(f"{served.url}/api/v1/jobs/{job.id}/events", headers={**as_user("ann"), "Last-Event-ID": "x"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "Last-Event-ID"


def test_another_processes_change_reaches_every_stream_quickly_from_one_shared_read(served, ctx, notifier,
                                                                                   elsewhere):
    job = stored_job(ctx, "ann")
    streams, ready, arrived = 30, threading.Barrier(31), {}
    stop = threading.Event()

    def watch(n: int) -> None:
        with _stream(served.url, job.id) as response:
            events = sse_events(response.iter_lines())
            next(events)  # the opening comment
            ready.wait()
            for event in events:
                if event.event == "progress" and event.data["step"] == 42:
                    arrived[n] = time.monotonic()
                    return
                if stop.is_set():
                    return

    threads = [threading.Thread(target=watch, args=(n,), daemon=True) for n in range(streams)]
    for thread in threads:
        thread.start()
    ready.wait(timeout=20)
    deadline = time.monotonic() + 5
    while notifier.streams < streams and time.monotonic() < deadline:
        time.sleep(0.02)
    polls_before = notifier.polls
    time.sleep(1.0)  # idle: the watched job is read every poll interval, not once per stream
    assert notifier.polls - polls_before <= 1.0 / 0.2 + 2
    elsewhere.transition(job.id, JobState.QUEUED, JobState.PREPARING)
    elsewhere.transition(job.id, JobState.PREPARING, JobState.TRAINING)
    written = time.monotonic()
    elsewhere.update_progress(job.id, StageProgress("training", 50.0, 42, 84, 0.5))
    for thread in threads:
        thread.join(timeout=10)
    stop.set()
    assert len(arrived) == streams
    assert max(arrived.values()) - written < 1.0


def test_idle_streams_get_heartbeats_and_a_closed_client_is_forgotten(served, ctx, notifier):
    job = stored_job(ctx, "ann")
    with _stream(served.url, job.id) as response:
        comments = []
        events = sse_events(response.iter_lines())  # kept: dropping it would close the response now
        for event in events:
            if event.comment:
                comments.append(event.comment)
            if comments.count("heartbeat") == 2:
                break
        assert notifier.streams == 1
    deadline = time.monotonic() + 5
    while notifier.streams and time.monotonic() < deadline:
        time.sleep(0.02)
    assert notifier.streams == 0


def test_someone_elses_or_a_missing_job_is_a_404_and_no_caller_a_401(served, ctx):
    job = stored_job(ctx, "ann")
    for user, job_id in (("ben", job.id), ("ann", "job_missing0000")):
        response = httpx2.get(f"{served.url}/api/v1/jobs/{job_id}/events", headers=as_user(user))
        assert response.status_code == 404 and response.json()["error"]["message"] == f"job {job_id} not found"
    assert httpx2.get(f"{served.url}/api/v1/jobs/{job.id}/events").status_code == 401


def test_a_stream_that_falls_behind_catches_up_from_the_database(ctx, elsewhere):
    job = stored_job(ctx, "ann")

    async def scenario() -> list[int]:
        notifier = JobNotifier(ctx.jobs, poll_interval_s=0.02, queue_size=1)
        sub = notifier.subscribe(job.id)
        try:
            for n in range(6):  # several reads fan out while the stream does not consume
                elsewhere.append_event(job.id, EventKind.NOTICE, message=f"n{n}")
                await asyncio.sleep(0.08)
            assert sub.behind and sub.queue.full()
            stream = _Stream(ctx.jobs, job.id, after=0)
            return [int(raw.split(b"id: ")[1].split(b"\n")[0].split(b".")[0]) async for raw in stream.catch_up()
                    if raw.startswith(b"event: timeline")]
        finally:
            notifier.unsubscribe(sub)
            await notifier.stop()

    assert asyncio.run(scenario()) == [1, 2, 3, 4, 5, 6]


def test_a_write_of_this_process_reaches_streams_at_once_without_waiting_for_a_poll(ctx):
    job = stored_job(ctx, "ann")

    async def scenario() -> tuple[float, list[int]]:
        notifier = JobNotifier(ctx.jobs, poll_interval_s=60)  # only the store's commits can wake it in time
        other = JobNotifier(ctx.jobs, poll_interval_s=60)  # a second app on the same engine, stopped first
        sub, _ = notifier.subscribe(job.id), other.subscribe(job.id)
        try:
            await asyncio.wait_for(sub.queue.get(), 5)  # the first mark
            await other.stop()
            started = time.monotonic()
            await asyncio.to_thread(ctx.jobs.append_event, job.id, EventKind.NOTICE, message="local")
            change = await asyncio.wait_for(sub.queue.get(), 5)
            return time.monotonic() - started, [e.seq for e in change.events]
        finally:
            notifier.unsubscribe(sub)
            await notifier.stop()

    elapsed, seqs = asyncio.run(scenario())
    assert seqs == [1] and elapsed < 0.5
