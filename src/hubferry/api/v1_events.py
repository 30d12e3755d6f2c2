"""``GET /api/v1/jobs/{id}/events``: a job's timeline and progress as Server-Sent Events, live, resumable.

One :class:`JobNotifier` per process feeds every stream. It reads the jobs being watched in one query
(``jobs.last_event_seq``, state, progress) every :data:`POLL_INTERVAL_S` - which catches what workers in
other processes write - and at once after any write of this process to the job database (the engine
tells it: a connection that committed is checked back into the pool). New timeline entries are read
once per job, not once per stream, and fanned out to each stream's bounded queue.

Event ids are the timeline's ``seq`` (``7``) and, for progress ticks, the seq they follow plus a counter
(``7.3``). A stream starts by replaying the timeline after ``Last-Event-ID`` (all of it without one)
from the database, so a reconnect misses no entry; progress is a level, so one current snapshot
replaces the ticks a client missed. A stream that falls behind (a full queue) or sees a gap in the
seqs re-reads from the database instead of losing entries. Idle streams get a heartbeat comment; a
stream of a published or cancelled job ends once it has sent everything (``event: end``), and a
reconnect after that end gets 204, which tells ``EventSource`` to stop.
"""


import asyncio
import contextlib
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Header, Response
from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event

from hubferry.api.errors import ApiError
from hubferry.api.schemas import ErrorBody
from hubferry.api.v1_jobs import visible_job
from hubferry.domain.jobs import FINAL_STATES, Job, JobEvent
from hubferry.logs import get_logger
from hubferry.services.context import Context
from hubferry.services.views import event_dict
from hubferry.store import JobStore, job_queries
from hubferry.store.job_queries import JobMark

log = get_logger(__name__)

#: How often watched jobs are re-read (changes made by other processes arrive within this).
POLL_INTERVAL_S = 0.5
#: Shortest gap between two reads, so a burst of local writes becomes one read.
MIN_POLL_GAP_S = 0.02
#: Messages a stream may have waiting before it counts as behind (it then re-reads the database).
CLIENT_QUEUE_SIZE = 64
#: Timeline entries read from the database at a time.
REPLAY_BATCH = 500
#: An idle stream gets a comment this often, so proxies keep it open and dead clients are noticed.
HEARTBEAT_S = 15.0
#: A finished job's stream ends this long after its last entry (a notice may follow the final state).
END_GRACE_S = 1.0
#: What ``EventSource`` waits before reconnecting (milliseconds).
RETRY_MS = 2000
class EventStream(StreamingResponse):
    """A ``text/event-stream`` answer streamed from our own generator (FastAPI's SSE mode wants the route
    itself to be the generator, and then could not answer 204)."""

    media_type = "text/event-stream"


#: Marks a pooled database connection that committed (read when it is checked back in).
_COMMITTED = "hubferry_committed"
_FINAL = frozenset(s.value for s in FINAL_STATES)
_LAST_ID = re.compile(r"^(\d{1,9})(?:\.\d{1,12})?$")


@dataclass(frozen=True)
class Change:
    """What the notifier learned about a job: its current mark and the timeline entries new since the last one."""

    mark: JobMark
    events: tuple[JobEvent, ...] = ()


@dataclass(eq=False)
class Subscription:
    job_id: str
    queue: asyncio.Queue[Change]
    #: The event loop the stream runs on (its queue may only be touched there).
    loop: asyncio.AbstractEventLoop
    #: Set when a message was dropped because the queue was full: the stream must re-read the database.
    behind: bool = False


@dataclass
class _Watch:
    subscribers: set[Subscription] = field(default_factory=set)
    mark: JobMark | None = None
    #: The newest timeline seq already fanned out.
    seq: int = 0


class JobNotifier:
    """The one source of job changes for every stream of this process.

    Args:
        jobs: the job store; its engine is watched for local commits.
        poll_interval_s: how often watched jobs are re-read regardless.
        queue_size: each subscriber's queue bound.
    """

    def __init__(self, jobs: JobStore, *, poll_interval_s: float = POLL_INTERVAL_S,
                 queue_size: int = CLIENT_QUEUE_SIZE) -> None:
        self._jobs = jobs
        self._poll_interval_s = poll_interval_s
        self._queue_size = queue_size
        self._watches: dict[str, _Watch] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._listening = False
        #: Reads of watched jobs so far (the benchmark and tests look at it).
        self.polls = 0

    @property
    def streams(self) -> int:
        return sum(len(w.subscribers) for w in self._watches.values())

    def subscribe(self, job_id: str) -> Subscription:
        """Start receiving ``job_id``'s changes (call from the event loop)."""
        self._ensure_running()
        watch = self._watches.setdefault(job_id, _Watch())
        sub = Subscription(job_id, asyncio.Queue(self._queue_size), asyncio.get_running_loop())
        watch.subscribers.add(sub)
        self.poke()  # a new watch gets its first mark now
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        watch = self._watches.get(sub.job_id)
        if watch is not None:
            watch.subscribers.discard(sub)
            if not watch.subscribers:
                del self._watches[sub.job_id]

    def poke(self) -> None:
        """Re-read the watched jobs soon; safe from any thread."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or not self._watches:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening any more
            loop.call_soon_threadsafe(wake.set)

    async def stop(self) -> None:
        if self._listening:
            sa.event.remove(self._jobs.engine, "commit", self._on_commit)
            sa.event.remove(self._jobs.engine, "checkin", self._on_checkin)
            self._listening = False
        task, self._task = self._task, None
        if task is None:
            return
        if task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        else:  # started by another event loop (test clients each run their own)
            with contextlib.suppress(RuntimeError):
                task.get_loop().call_soon_threadsafe(task.cancel)

    # -- inside ------------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._task is not None and not self._task.done() and not self._task.get_loop().is_closed():
            return
        loop = asyncio.get_running_loop()
        self._loop, self._wake = loop, asyncio.Event()
        self._task = loop.create_task(self._run(), name="hubferry-job-notifier")
        if not self._listening:
            sa.event.listen(self._jobs.engine, "commit", self._on_commit)
            sa.event.listen(self._jobs.engine, "checkin", self._on_checkin)
            self._listening = True

    def _on_commit(self, conn: Any) -> None:  # a bound method: each notifier's listener is its own
        conn.info[_COMMITTED] = True

    def _on_checkin(self, _dbapi_conn: Any, record: Any) -> None:
        # Checked in after the commit finished, so a read started now sees it.
        if record is not None and record.info.pop(_COMMITTED, False):
            self.poke()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
            self._wake.clear()
            if not self._watches:
                continue
            try:
                await self._poll()
            except Exception:  # noqa: BLE001 - e.g. the database briefly locked: the next read catches up
                log.exception("reading watched jobs failed")
            await asyncio.sleep(MIN_POLL_GAP_S)

    async def _poll(self) -> None:
        self.polls += 1
        marks = await asyncio.to_thread(job_queries.marks, self._jobs.engine, list(self._watches))
        for job_id, mark in marks.items():
            watch = self._watches.get(job_id)
            if watch is None:
                continue
            if watch.mark is None:  # first sight: streams compare it with what they replayed
                watch.mark, watch.seq = mark, mark.seq
                self._fan_out(watch, Change(mark))
                continue
            events: list[JobEvent] = []
            if mark.seq > watch.seq:
                events = await asyncio.to_thread(self._jobs.events, job_id, after_seq=watch.seq, limit=REPLAY_BATCH)
            if events or mark.state != watch.mark.state or mark.progress != watch.mark.progress:
                watch.mark = mark
                watch.seq = max(watch.seq, mark.seq if not events else events[-1].seq)
                self._fan_out(watch, Change(mark, tuple(events)))

    @staticmethod
    def _fan_out(watch: _Watch, change: Change) -> None:
        here = asyncio.get_running_loop()
        for sub in list(watch.subscribers):
            if sub.loop is here:
                _offer(sub, change)
            else:
                with contextlib.suppress(RuntimeError):  # that stream's loop has closed
                    sub.loop.call_soon_threadsafe(_offer, sub, change)


def _offer(sub: Subscription, change: Change) -> None:
    try:
        sub.queue.put_nowait(change)
    except asyncio.QueueFull:
        sub.behind = True


# -- one stream --------------------------------------------------------------------------------


def _sse(event: str, event_id: str | None, data: Any) -> bytes:
    return format_sse_event(event=event, id=event_id, data_str=json.dumps(data, separators=(",", ":")))


#: Sent to an idle stream every ``heartbeat_s``.
HEARTBEAT = format_sse_event(comment="heartbeat")


def _progress_data(mark: JobMark) -> dict[str, Any]:
    p = mark.progress
    return {"state": mark.state, "stage": p.stage, "percent": _finite(p.percent), "step": p.step,
            "total_steps": p.total_steps, "loss": _finite(p.loss), "eta_seconds": _finite(p.eta_seconds),
            "updated_at": mark.updated_at.isoformat()}


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity (a diverged loss is reported as NaN): those become null."""
    return value if value is not None and math.isfinite(value) else None


class _Stream:
    """What one client has been sent, and how to send it what it lacks."""

    def __init__(self, jobs: JobStore, job_id: str, after: int) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self.seq = after
        self.ticks = 0
        self.progress: tuple[Any, ...] | None = None
        self.mark: JobMark | None = None

    def _timeline(self, event: JobEvent) -> bytes:
        self.seq = event.seq
        return _sse("timeline", str(event.seq), event_dict(event))

    def _progress(self, mark: JobMark) -> bytes | None:
        key = (mark.state, mark.progress)
        if key == self.progress:
            return None
        self.progress = key
        self.ticks += 1
        return _sse("progress", f"{self.seq}.{self.ticks}", _progress_data(mark))

    async def catch_up(self) -> AsyncIterator[bytes]:
        """Everything after ``self.seq`` from the database, then the current progress."""
        while True:
            events = await asyncio.to_thread(self.jobs.events, self.job_id, after_seq=self.seq, limit=REPLAY_BATCH)
            for event in events:
                yield self._timeline(event)
            if len(events) < REPLAY_BATCH:
                break
        marks = await asyncio.to_thread(job_queries.marks, self.jobs.engine, [self.job_id])
        if self.job_id in marks:
            self.mark = marks[self.job_id]
            if (tick := self._progress(self.mark)) is not None:
                yield tick

    async def apply(self, change: Change) -> AsyncIterator[bytes]:
        """A change from the notifier: its new entries when they follow on, else a database catch-up."""
        for event in change.events:
            if event.seq == self.seq + 1:
                yield self._timeline(event)
        if change.mark.seq > self.seq:  # a gap (entries this stream never got): read them
            async for sse in self.catch_up():
                yield sse
            return
        self.mark = change.mark
        if (tick := self._progress(change.mark)) is not None:
            yield tick

    def ended(self) -> bool:
        return self.mark is not None and self.mark.state in _FINAL and self.seq >= self.mark.seq


def events_router(ctx: Context, *, notifier: JobNotifier | None = None, heartbeat_s: float = HEARTBEAT_S) -> APIRouter:
    """The events route, with the process's notifier (stopped with the app)."""
    hub = notifier or JobNotifier(ctx.jobs)
    visible = Annotated[Job, Depends(visible_job(ctx))]

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await hub.stop()

    router = APIRouter(prefix="/api/v1", tags=["jobs"], lifespan=lifespan)
    router.notifier = hub  # type: ignore[attr-defined]  # tests and the benchmark look at it

    async def stream(job_id: str, after: int) -> AsyncIterator[bytes]:
        state = _Stream(ctx.jobs, job_id, after)
        sub = hub.subscribe(job_id)
        try:
            yield format_sse_event(comment=f"job {job_id}", retry=RETRY_MS)
            async for sse in state.catch_up():
                yield sse
            clock = asyncio.get_running_loop().time
            ended_at: float | None = None
            while True:
                wait = heartbeat_s
                if state.ended():  # entries written just after the final state still come (a notice)
                    ended_at = ended_at or clock()
                    wait = END_GRACE_S - (clock() - ended_at)
                    if wait <= 0:
                        break
                else:
                    ended_at = None
                try:
                    change = await asyncio.wait_for(sub.queue.get(), min(wait, heartbeat_s))
                except TimeoutError:
                    if ended_at is None:
                        yield HEARTBEAT
                    continue
                if sub.behind:  # messages were dropped: start again from the database
                    sub.behind = False
                    while not sub.queue.empty():
                        sub.queue.get_nowait()
                    updates = state.catch_up()
                else:
                    updates = state.apply(change)
                async for sse in updates:
                    yield sse
            yield _sse("end", None, {"state": state.mark.state if state.mark else None})
        finally:
            hub.unsubscribe(sub)

    @router.get(
        "/jobs/{job_id}/events", response_class=EventStream,
        summary="Live timeline and progress (Server-Sent Events)",
        responses={
            200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                  "description": "``event: timeline`` (id = seq, data = a timeline entry), ``event: progress`` "
                  "(id = seq.n, data = state and progress), ``event: end``, and heartbeat comments."},
            204: {"description": "The job has ended and Last-Event-ID is its last entry: nothing more will come."},
            404: {"model": ErrorBody, "description": "No such job of yours."},
        },
    )
    async def job_events(
        job: visible,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32,
                                                    description="Resume after this event id.")] = None,
    ) -> Response:
        """A job's timeline (all of it, or what follows ``Last-Event-ID``) and then its changes as they happen.
        Reconnecting with ``Last-Event-ID`` misses no timeline entry; progress resumes from its current value."""
        after = _parse_last_id(last_event_id)
        if last_event_id and job.state in FINAL_STATES:
            marks = await asyncio.to_thread(job_queries.marks, ctx.jobs.engine, [job.id])
            if job.id in marks and after >= marks[job.id].seq:
                return Response(status_code=204)
        return EventStream(stream(job.id, after), headers={"Cache-Control": "no-cache",
                                                                    "X-Accel-Buffering": "no"})

    return router


def _parse_last_id(value: str | None) -> int:
    if not value:
        return 0
    match = _LAST_ID.match(value.strip())
    if match is None:
        raise ApiError(422, "Last-Event-ID must be an id this stream sent (like 7 or 7.3)", field="Last-Event-ID")
    return int(match.group(1))
