"""Pre-flight at submit: a job whose publish cannot work is refused in seconds, before any compute."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from hubferry.config import load_settings
from hubferry.domain.jobs import EventKind, JobState
from hubferry.errors import HubferryError
from hubferry.services import launch
from hubferry.services.context import open_context
from hubferry.testing import free_port

FAKE = str(Path(__file__).parents[1] / "fixtures" / "fake_trainer.py")
#: A refused submit must answer well within this (no training, no long retry loop).
FAST_S = 10.0


@pytest.fixture()
def ctx(monkeypatch, tmp_path, hf_env):
    for name in ("HF_TOKEN", "HUBFERRY_TOKEN", "HF_ENDPOINT", "HUBFERRY_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HUBFERRY_HOME", str(tmp_path / "home"))
    return open_context(load_settings())


def request(tmp_path, *, endpoint, token=None, name="pf", repo=None, preflight=True):
    out = tmp_path / f"out-{name}"
    return launch.LocalRequest(
        command=[sys.executable, FAKE, "--output", str(out), "--steps", "2"], output_dir=out, name=name,
        repo_id=repo, endpoint=endpoint, token=token, env=dict(os.environ), cwd=tmp_path, preflight=preflight,
    )


def refused(ctx, req) -> tuple[HubferryError, float]:
    started = time.monotonic()
    with pytest.raises(HubferryError) as caught:
        launch.submit(ctx, "local", req)
    elapsed = time.monotonic() - started
    assert ctx.jobs.list_jobs() == [], "a refused job must not be recorded, let alone trained"
    assert not (req.output_dir).exists()
    return caught.value, elapsed


def test_a_read_only_token_is_refused_at_submit_in_seconds(ctx, registry, tmp_path):
    token = registry.create_token("alice", read_only=True)
    error, elapsed = refused(ctx, request(tmp_path, endpoint=registry.endpoint, token=token, name="ro"))
    assert elapsed < FAST_S
    assert error.category == "authentication" and "read-only" in error.message
    assert "write" in error.hint


def test_an_invalid_token_is_refused_at_submit(ctx, registry, tmp_path):
    error, elapsed = refused(ctx, request(tmp_path, endpoint=registry.endpoint, token="hf_" + "z" * 34,
                                          name="invalid"))
    assert elapsed < FAST_S
    assert error.category == "authentication" and not error.retryable
    assert "z" * 34 not in str(error.to_dict())  # the token is not echoed back


def test_a_repo_owned_by_someone_else_is_refused_naming_it(ctx, registry, tmp_path, alice_token, bob_token):
    HfApi(endpoint=registry.endpoint, token=bob_token).create_repo("bob/owned-by-bob", exist_ok=True)
    error, elapsed = refused(ctx, request(tmp_path, endpoint=registry.endpoint, token=alice_token,
                                          repo="bob/owned-by-bob", name="steal"))
    assert elapsed < FAST_S
    assert "bob/owned-by-bob" in error.message and error.category == "authentication"


def test_an_unreachable_endpoint_fails_fast_with_a_network_error(ctx, tmp_path, alice_token):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    error, elapsed = refused(ctx, request(tmp_path, endpoint=endpoint, token=alice_token, name="nowhere"))
    assert elapsed < FAST_S / 2  # a refused connection is instant: a few quick tries, not a backoff ladder
    assert error.category == "network"
    assert endpoint in str(error.to_dict())


def test_without_any_token_the_job_is_created_with_a_warning(ctx, registry, tmp_path):
    job = launch.submit(ctx, "local", request(tmp_path, endpoint=registry.endpoint, name="tokenless"))
    assert job.state is JobState.QUEUED
    warnings = [e.message for e in ctx.jobs.events(job.id)
                if e.kind is EventKind.NOTICE and e.message.startswith("warning:")]
    assert len(warnings) == 1 and "publishing will be skipped" in warnings[0]
    assert f"hubferry retry {job.id} --token" in warnings[0]


def test_skip_preflight_creates_the_job_even_when_the_hub_is_unreachable(ctx, tmp_path, alice_token):
    endpoint = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    job = launch.submit(ctx, "local", request(tmp_path, endpoint=endpoint, token=alice_token, name="offline",
                                              repo="alice/offline-work", preflight=False))
    assert time.monotonic() - started < FAST_S
    assert job.state is JobState.QUEUED and job.repo_id == "alice/offline-work"
    assert job.params["hub_endpoint"] == endpoint
    submitted = next(e for e in ctx.jobs.events(job.id) if e.message.startswith("submitted"))
    assert submitted.context["preflight"] is False
