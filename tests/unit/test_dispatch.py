"""The one dispatch policy (inline or queue) and the inline dispatcher's loop."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime

from hubferry.config import Settings
from hubferry.domain.jobs import JobState, new_job
from hubferry.errors import PermanentError, TransientError
from hubferry.hub import Publication
from hubferry.services import publishing
from hubferry.services.context import Context, InlineDispatcher, open_context
from hubferry.services.publishing import MAX_VERIFY_ATTEMPTS, begin_publish
from hubferry.worker.dispatch import dispatcher_for
from hubferry.worker.queue import TaskQueue
from hubferry.worker.run import LIVENESS_STALE_S


def _depth() -> int:
    frame, depth = sys._getframe(1), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1
    return depth


class _Ctx:
    """Just enough of a Context for the inline dispatcher: it hands itself to the steps it runs."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.inline = InlineDispatcher(self, sleep=self.sleeps.append)  # type: ignore[arg-type]

    def dispatch(self) -> InlineDispatcher:
        return self.inline


def test_a_publish_that_redispatches_itself_50_times_runs_in_a_loop(monkeypatch):
    ctx = _Ctx()
    depths: list[int] = []

    def run_publish(c, job_id):
        depths.append(_depth())
        if len(depths) < 50:
            c.dispatch().publish(job_id, delay_s=2.5)

    monkeypatch.setattr(publishing, "run_publish", run_publish)
    ctx.dispatch().publish("job_x")
    assert len(depths) == 50
    assert len(set(depths)) == 1, f"the stack grew from {depths[0]} to {max(depths)} frames"
    assert ctx.sleeps == [2.5] * 49  # the delay went through the injected sleep, not time.sleep


def test_a_publish_dispatched_by_a_training_runs_after_the_training_returns(monkeypatch):
    from hubferry.services import training

    ctx = _Ctx()
    order: list[str] = []

    def run_training(c, job_id):
        order.append("train started")
        c.dispatch().publish(job_id)
        order.append("train returned")

    monkeypatch.setattr(training, "run_training", run_training)
    monkeypatch.setattr(publishing, "run_publish", lambda c, job_id: order.append("publish"))
    ctx.dispatch().train("job_x")
    assert order == ["train started", "train returned", "publish"]
    ctx.dispatch().publish("job_y")  # the loop is reusable after it drained
    assert order[-1] == "publish" and len(order) == 4


def _bare_context(settings: Settings) -> Context:
    ctx = Context(settings=settings, jobs=None, publishes=None, credentials=None, publisher=None,  # type: ignore[arg-type]
                  trainer_for=None, worker_id="test")  # type: ignore[arg-type]
    return ctx


def test_no_worker_and_no_queue_url_runs_inline(tmp_path):
    dispatcher, queued = dispatcher_for(_bare_context(Settings(home=tmp_path)))
    assert queued is False and isinstance(dispatcher, InlineDispatcher)


def test_a_queue_url_sends_work_to_the_queue(tmp_path):
    dispatcher, queued = dispatcher_for(_bare_context(Settings(home=tmp_path, queue_url="redis://127.0.0.1:1/0")))
    assert queued is True and isinstance(dispatcher, TaskQueue)


def test_a_fresh_worker_liveness_file_sends_work_to_the_queue_and_a_stale_one_does_not(tmp_path):
    alive = tmp_path / "workers" / "host-123.alive"
    alive.parent.mkdir()
    alive.touch()
    dispatcher, queued = dispatcher_for(_bare_context(Settings(home=tmp_path)))
    assert queued is True and isinstance(dispatcher, TaskQueue)
    old = time.time() - LIVENESS_STALE_S - 5
    os.utime(alive, (old, old))
    dispatcher, queued = dispatcher_for(_bare_context(Settings(home=tmp_path)))
    assert queued is False and isinstance(dispatcher, InlineDispatcher)


class _FlakyReadBack:
    """A publisher whose pushes land but whose read-back always fails transiently."""

    def __init__(self) -> None:
        self.verifies = 0

    def publish(self, folder, repo_id, target, **_kwargs):
        return Publication(repo_id=repo_id, repo_url=f"{target.endpoint}/{repo_id}", revision="main",
                           commit_sha="c" * 40, files=[], bytes_uploaded=0, commits_created=1, elapsed_s=0.0)

    def verify(self, *_args, **_kwargs):
        self.verifies += 1
        if self.verifies > 3 * MAX_VERIFY_ATTEMPTS:  # never loop forever if the cap is gone
            raise PermanentError("verification was never given up", category="service_error")
        raise TransientError("503 from the Hub", category="service_error", status=503)


def test_verification_failing_transiently_every_time_fails_the_job_retryably(tmp_path):
    publisher = _FlakyReadBack()
    ctx = open_context(Settings(home=tmp_path / "home"), publisher=publisher)  # type: ignore[arg-type]
    ctx._inline = InlineDispatcher(ctx, sleep=lambda s: None)
    output = tmp_path / "out"
    output.mkdir()
    (output / "model.safetensors").write_bytes(b"weights")
    endpoint = "http://hub.invalid"
    job = ctx.jobs.create(new_job(owner="alice", name="m", trainer="local", dataset=str(output),
                                  repo_id="alice/m", now=datetime.now(UTC),
                                  params={"hub_endpoint": endpoint, "output_dir": str(output)}))
    ctx.credentials.set("alice", endpoint, "hf_" + "a" * 34)
    ctx.jobs.set_runtime(job.id, output_dir=str(output))
    ctx.jobs.transition(job.id, JobState.QUEUED, JobState.PREPARING)
    ctx.jobs.transition(job.id, JobState.PREPARING, JobState.TRAINING)
    started = time.monotonic()
    assert begin_publish(ctx, ctx.jobs.require(job.id), JobState.TRAINING)
    assert time.monotonic() - started < 30  # the re-dispatch delays went through the no-op sleep
    job = ctx.jobs.require(job.id)
    assert publisher.verifies == MAX_VERIFY_ATTEMPTS
    assert job.state is JobState.FAILED
    assert job.error.retryable and f"{MAX_VERIFY_ATTEMPTS} times" in job.error.message
    assert "hubferry retry" in job.error.hint
    assert job.commit_sha == "c" * 40  # the commit is kept, so a retry reads it back instead of pushing again
