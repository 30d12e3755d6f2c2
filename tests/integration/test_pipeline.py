"""The local job pipeline in one process (the embedded default): train, track, publish, verify."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from hubferry.config import load_settings
from hubferry.domain.jobs import EventKind, JobState
from hubferry.errors import ValidationError
from hubferry.services import control, launch
from hubferry.services.context import open_context
from hubferry.trainers.local import group_alive

FAKE = str(Path(__file__).parents[1] / "fixtures" / "fake_trainer.py")


@pytest.fixture()
def env(monkeypatch, tmp_path, registry):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setenv("HUBFERRY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HUBFERRY_RETRY_BASE_DELAY", "0.05")
    monkeypatch.setenv("HUBFERRY_CANCEL_GRACE_S", "2")
    return tmp_path


@pytest.fixture()
def ctx(env):
    return open_context(load_settings())


def _submit(ctx, registry, tmp_path, *args, token=None, name="fake-lora", repo=None, **kwargs):
    command = [sys.executable, FAKE, "--output", str(tmp_path / "out"), *args]
    request = launch.LocalRequest(command=command, output_dir=tmp_path / "out", name=name, repo_id=repo,
                                  endpoint=registry.endpoint, token=token, env=dict(os.environ), **kwargs)
    return launch.submit(ctx, "local", request)


def test_success_publishes_once_verified_with_a_timeline(ctx, registry, alice_token, env):
    job = _submit(ctx, registry, env, "--steps", "40", "--step-s", "0.03", token=alice_token, total_steps=40)
    assert job.state is JobState.QUEUED and job.repo_id == "alice/fake-lora" and job.repo_auto_named
    seen: list[tuple[str, float | None, int | None]] = []
    runner = threading.Thread(target=ctx.dispatch().train, args=(job.id,))
    runner.start()
    while runner.is_alive():
        current = ctx.jobs.require(job.id)
        seen.append((current.state.value, current.progress.percent, current.progress.step))
        time.sleep(0.05)
    runner.join()
    job = ctx.jobs.require(job.id)
    assert job.state is JobState.PUBLISHED, job.error
    training = [(p, s) for state, p, s in seen if state == "training" and s is not None]
    assert training, "progress was stored while training ran"
    assert any(5 < p < 95 for p, _ in training) and all(s <= 40 for _, s in training)
    percents = [p for _, p, _ in seen if p is not None]
    assert percents == sorted(percents), "overall progress never goes backwards"
    api = HfApi(endpoint=registry.endpoint, token=alice_token)
    assert api.repo_info(job.repo_id).sha == job.commit_sha
    assert job.repo_url == f"{registry.endpoint}/alice/fake-lora"
    titles = [c.title for c in api.list_repo_commits(job.repo_id)]
    assert sum(job.id in t for t in titles) == 1
    stages = [(e.kind, e.stage) for e in ctx.jobs.events(job.id)]
    for expected in [(EventKind.STAGE_FINISHED, "training"), (EventKind.STAGE_STARTED, "publishing"),
                     (EventKind.STAGE_FINISHED, "publishing"), (EventKind.STAGE_FINISHED, "verifying")]:
        assert expected in stages
    events = ctx.jobs.events(job.id)
    done = next(e for e in events if e.kind is EventKind.STAGE_FINISHED and e.stage == "training").at
    upload = next(e for e in events if e.message == "upload started").at
    print(f"training success -> publish start: {(upload - done).total_seconds() * 1000:.1f} ms")
    # A second job with the same name gets the next free repo name.
    second = _submit(ctx, registry, env, token=alice_token)
    assert second.repo_id == "alice/fake-lora-2"


def test_failed_training_keeps_the_log_tail_and_retry_reruns_it(ctx, registry, alice_token, env):
    marker = env / "fixed"
    job = _submit(ctx, registry, env, "--fail-unless", str(marker), token=alice_token, name="flaky")
    ctx.dispatch().train(job.id)
    job = ctx.jobs.require(job.id)
    assert job.state is JobState.FAILED and job.error.category == "training_error" and job.error.retryable
    assert "exited with code 3" in job.error.message and "CUDA out of memory" in job.error.message
    assert "hubferry retry" in job.error.hint
    with pytest.raises(ValidationError, match="can be cancelled"):
        control.cancel(ctx, job.id)
    marker.write_text("ok")
    job = control.retry(ctx, job.id)
    assert job.state is JobState.PUBLISHED and job.attempts == 2


def test_no_token_stops_at_trained_then_publishes_later(ctx, registry, alice_token, env):
    job = _submit(ctx, registry, env, name="offline", repo="alice/offline")
    ctx.dispatch().train(job.id)
    job = ctx.jobs.require(job.id)
    assert job.state is JobState.TRAINED and Path(job.output_dir, "adapter_model.safetensors").exists()
    assert any("weights kept" in e.message for e in ctx.jobs.events(job.id))
    ctx.credentials.set(job.owner, registry.endpoint, alice_token)
    job = control.retry(ctx, job.id)
    assert job.state is JobState.PUBLISHED and job.commit_sha


def test_failed_publish_is_retried_without_retraining(ctx, registry, alice_token, env):
    job = _submit(ctx, registry, env, token="hf_" + "x" * 34, name="badtoken", repo="alice/badtoken",
                  preflight=False)
    ctx.dispatch().train(job.id)
    job = ctx.jobs.require(job.id)
    assert job.state is JobState.FAILED and job.error.category == "authentication"
    trainings = sum(1 for e in ctx.jobs.events(job.id) if e.kind is EventKind.STAGE_STARTED and e.stage == "training")
    ctx.credentials.set(job.owner, registry.endpoint, alice_token)
    job = control.retry(ctx, job.id)
    assert job.state is JobState.PUBLISHED
    assert trainings == sum(
        1 for e in ctx.jobs.events(job.id) if e.kind is EventKind.STAGE_STARTED and e.stage == "training"
    )
    with pytest.raises(ValidationError, match="already published"):
        control.retry(ctx, job.id)


def test_cancel_terminates_the_whole_process_group(ctx, registry, alice_token, env):
    pid_file = env / "grandchild.pid"
    job = _submit(ctx, registry, env, "--steps", "100000", "--step-s", "0.05", "--spawn-child", str(pid_file),
                  token=alice_token, name="endless")
    runner = threading.Thread(target=ctx.dispatch().train, args=(job.id,))
    runner.start()
    deadline = time.monotonic() + 20
    while not pid_file.exists() or ctx.jobs.require(job.id).state is not JobState.TRAINING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    trainer_pid = ctx.jobs.require(job.id).trainer_handle["pid"]
    control.cancel(ctx, job.id)
    runner.join(timeout=30)
    assert not runner.is_alive()
    assert ctx.jobs.require(job.id).state is JobState.CANCELLED
    assert not group_alive(trainer_pid)
    grandchild = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(grandchild, 0)


def test_unknown_job_is_a_clear_error(ctx):
    with pytest.raises(ValidationError, match="no job job_nope"):
        control.retry(ctx, "job_nope")


def test_reconciler_fails_a_training_whose_runner_and_trainer_died(ctx, registry, alice_token, env, monkeypatch):
    import signal
    import subprocess

    from hubferry.services import reconcile

    out = env / "orphan-out"
    runner = subprocess.Popen(
        [sys.executable, "-m", "hubferry", "train", "--local", "--name", "orphan", "--output", str(out), "--",
         sys.executable, FAKE, "--output", str(out), "--steps", "100000", "--step-s", "0.05"],
        env={**os.environ, "HF_ENDPOINT": registry.endpoint, "HF_TOKEN": alice_token},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (jobs := ctx.jobs.list_jobs(states=[JobState.TRAINING])) or jobs[0].trainer_handle is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job = jobs[0]
    pid = job.trainer_handle["pid"]
    runner.kill()  # the runner dies; the trainer (its own process group) keeps going ...
    runner.wait()
    assert group_alive(pid)
    monkeypatch.setattr(reconcile, "ORPHAN_GRACE", reconcile.timedelta(0))
    assert reconcile.reconcile(ctx).orphaned_trainings == 0  # ... and is left alone while it lives
    os.killpg(pid, signal.SIGKILL)
    while group_alive(pid):
        time.sleep(0.02)
    assert reconcile.reconcile(ctx).orphaned_trainings == 1
    failed = ctx.jobs.require(job.id)
    assert failed.state is JobState.FAILED and failed.error.retryable and "retry" in failed.error.hint


def test_a_crash_inside_publish_fails_the_job_visibly(ctx, registry, alice_token, env, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    real = ctx.publisher.publish
    monkeypatch.setattr(ctx.publisher, "publish", broken)
    job = _submit(ctx, registry, env, token=alice_token, name="crashy", repo="alice/crashy")
    ctx.dispatch().train(job.id)
    job = ctx.jobs.require(job.id)
    assert job.state is JobState.FAILED and job.error.category == "internal"
    assert "disk on fire" in job.error.message and "hubferry retry" in job.error.hint
    assert ctx.publishes.get(job.id).state.value == "failed"
    monkeypatch.setattr(ctx.publisher, "publish", real)
    assert control.retry(ctx, job.id).state is JobState.PUBLISHED
