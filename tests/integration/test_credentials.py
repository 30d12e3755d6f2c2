"""Which Hub token a job publishes with: one precedence (``--token`` > the shell's HF_TOKEN > the stored
token for the job's endpoint > none), for submit, publish and retry, against the built-in registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from hubferry.config import load_settings
from hubferry.domain.jobs import JobState
from hubferry.domain.naming import slugify
from hubferry.services import control, launch
from hubferry.services.context import open_context
from hubferry.testing import running_registry

ROOT = Path(__file__).parents[2]
FAKE = str(ROOT / "tests" / "fixtures" / "fake_trainer.py")


@pytest.fixture()
def env(monkeypatch, tmp_path, hf_env):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUBFERRY_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HUBFERRY_ENDPOINT", raising=False)
    monkeypatch.setenv("HUBFERRY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HUBFERRY_RETRY_BASE_DELAY", "0.05")
    return tmp_path


def context():
    """A context as a command started now would open it (the shell's HF_TOKEN read now)."""
    return open_context(load_settings())


@pytest.fixture()
def carol_token(registry):
    return registry.create_token("carol")


def submit(ctx, endpoint, tmp_path, *, name, token=None, repo=None, steps=2, step_s=0.01, preflight=True):
    out = tmp_path / f"out-{name}"
    request = launch.LocalRequest(
        command=[sys.executable, FAKE, "--output", str(out), "--steps", str(steps), "--step-s", str(step_s)],
        output_dir=out, name=name, repo_id=repo, endpoint=endpoint, token=token, env=dict(os.environ),
        cwd=tmp_path, preflight=preflight,
    )
    return launch.submit(ctx, "local", request)


def run(ctx, job):
    ctx.dispatch().train(job.id)
    return ctx.jobs.require(job.id)


def owner_of(endpoint, token, repo_id):
    """The repo's namespace as the Hub reports it, read with ``token`` (None if it does not exist)."""
    api = HfApi(endpoint=endpoint, token=token)
    return api.repo_info(repo_id).id.split("/")[0] if api.repo_exists(repo_id) else None


def test_flag_beats_shell_beats_stored_beats_none(env, monkeypatch, registry, alice_token, bob_token, carol_token):
    ctx = context()
    owner = launch.default_owner()
    ctx.credentials.set(owner, registry.endpoint, alice_token)
    monkeypatch.setenv("HF_TOKEN", bob_token)
    ctx = context()

    flagged = run(ctx, submit(ctx, registry.endpoint, env, name="by-flag", token=carol_token))
    shell = run(ctx, submit(ctx, registry.endpoint, env, name="by-shell"))
    monkeypatch.delenv("HF_TOKEN")
    ctx = context()
    stored = run(ctx, submit(ctx, registry.endpoint, env, name="by-stored"))
    ctx.credentials.delete(owner, registry.endpoint)
    nothing = run(ctx, submit(ctx, registry.endpoint, env, name="by-none"))

    assert (flagged.state, flagged.repo_id) == (JobState.PUBLISHED, "carol/by-flag"), flagged.error
    assert (shell.state, shell.repo_id) == (JobState.PUBLISHED, "bob/by-shell"), shell.error
    assert (stored.state, stored.repo_id) == (JobState.PUBLISHED, "alice/by-stored"), stored.error
    assert nothing.state is JobState.TRAINED and nothing.repo_id == f"{slugify(owner)}/by-none"
    assert [j.params["credential"]["source"] for j in (flagged, shell, stored, nothing)] == [
        "flag", "shell", "stored", "none"]
    # Each repo really was written with that token: its user owns it.
    assert owner_of(registry.endpoint, carol_token, "carol/by-flag") == "carol"
    assert owner_of(registry.endpoint, bob_token, "bob/by-shell") == "bob"
    assert owner_of(registry.endpoint, alice_token, "alice/by-stored") == "alice"


def test_train_with_a_token_does_not_overwrite_the_stored_one(env, monkeypatch, registry, alice_token, bob_token):
    ctx = context()
    owner = launch.default_owner()
    ctx.credentials.set(owner, registry.endpoint, alice_token, "alice")
    flagged = run(ctx, submit(ctx, registry.endpoint, env, name="bobs-model", token=bob_token))
    monkeypatch.setenv("HF_TOKEN", bob_token)
    ctx = context()
    shell = run(ctx, submit(ctx, registry.endpoint, env, name="bobs-other"))
    assert flagged.state is JobState.PUBLISHED and flagged.repo_id == "bob/bobs-model"
    assert shell.state is JobState.PUBLISHED and shell.repo_id == "bob/bobs-other"
    stored = ctx.credentials.get(owner, registry.endpoint)
    assert stored.token == alice_token
    assert stored.username == "alice"  # `secrets list` still says whose token it is

    monkeypatch.delenv("HF_TOKEN")
    ctx = context()
    later = run(ctx, submit(ctx, registry.endpoint, env, name="alices"))  # the stored token is still used
    assert later.state is JobState.PUBLISHED and later.repo_id == "alice/alices"


def test_a_token_stored_while_a_tokenless_job_trains_is_used_when_it_publishes(env, registry, alice_token):
    import threading
    import time

    ctx = context()
    job = submit(ctx, registry.endpoint, env, name="late-token", repo="alice/late-token", steps=40, step_s=0.05)
    assert job.params["credential"]["source"] == "none"
    runner = threading.Thread(target=ctx.dispatch().train, args=(job.id,))
    runner.start()
    deadline = time.monotonic() + 30
    while ctx.jobs.require(job.id).state is not JobState.TRAINING:
        assert time.monotonic() < deadline and runner.is_alive()
        time.sleep(0.02)
    ctx.credentials.set(launch.default_owner(), registry.endpoint, alice_token)
    assert ctx.jobs.require(job.id).state is JobState.TRAINING  # stored while it was still training
    runner.join(timeout=60)
    job = ctx.jobs.require(job.id)
    assert job.state is JobState.PUBLISHED, job.error
    assert HfApi(endpoint=registry.endpoint, token=alice_token).repo_info("alice/late-token").sha == job.commit_sha


def test_retry_with_a_token_flag_publishes_with_it_and_keeps_it_to_the_job(env, registry, alice_token):
    ctx = context()
    job = run(ctx, submit(ctx, registry.endpoint, env, name="flag-retry", repo="alice/flag-retry"))
    assert job.state is JobState.TRAINED
    job = control.retry(ctx, job.id, token=alice_token)
    assert job.state is JobState.PUBLISHED, job.error
    assert HfApi(endpoint=registry.endpoint, token=alice_token).repo_info("alice/flag-retry").sha == job.commit_sha
    assert ctx.credentials.get(launch.default_owner(), registry.endpoint) is None  # not stored as the user's


def test_retry_honours_hf_token_of_the_retrying_shell(env, registry, alice_token):
    ctx = context()
    job = run(ctx, submit(ctx, registry.endpoint, env, name="shell-retry", repo="alice/shell-retry"))
    assert job.state is JobState.TRAINED
    shell = {**os.environ, "HF_TOKEN": alice_token}
    result = subprocess.run([sys.executable, "-m", "hubferry", "retry", job.id], env=shell, cwd=ROOT,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    job = ctx.jobs.require(job.id)
    assert job.state is JobState.PUBLISHED and job.params["credential"]["source"] == "shell"
    assert HfApi(endpoint=registry.endpoint, token=alice_token).repo_info("alice/shell-retry").sha == job.commit_sha
    assert alice_token not in result.stdout + result.stderr


def test_retry_repo_publishes_to_the_other_repo(env, registry, alice_token):
    ctx = context()
    job = run(ctx, submit(ctx, registry.endpoint, env, name="first-name", repo="alice/first-name"))
    job = control.retry(ctx, job.id, token=alice_token, repo_id="alice/second-name")
    assert job.state is JobState.PUBLISHED and job.repo_id == "alice/second-name", job.error
    api = HfApi(endpoint=registry.endpoint, token=alice_token)
    assert api.repo_info("alice/second-name").sha == job.commit_sha
    assert not api.repo_exists("alice/first-name")


def test_each_endpoint_uses_its_own_stored_token(env, registry, alice_token, tmp_path):
    with running_registry(tmp_path / "second-hub") as other:
        dave_token = other.create_token("dave")
        ctx = context()
        owner = launch.default_owner()
        ctx.credentials.set(owner, registry.endpoint, alice_token)
        ctx.credentials.set(owner, other.endpoint + "/", dave_token)  # spelt with a trailing slash
        here = run(ctx, submit(ctx, registry.endpoint, env, name="two-hubs"))
        there = run(ctx, submit(ctx, other.endpoint, env, name="two-hubs"))
        assert here.state is JobState.PUBLISHED and here.repo_id == "alice/two-hubs", here.error
        assert there.state is JobState.PUBLISHED and there.repo_id == "dave/two-hubs", there.error
        assert HfApi(endpoint=other.endpoint, token=dave_token).repo_info("dave/two-hubs").sha == there.commit_sha
        assert not HfApi(endpoint=registry.endpoint, token=alice_token).repo_exists("dave/two-hubs")
        assert ctx.credentials.get(owner, registry.endpoint).token == alice_token
        assert ctx.credentials.get(owner, other.endpoint).token == dave_token


def test_an_auto_named_repo_follows_the_token_user_when_it_publishes(env, registry, alice_token):
    ctx = context()
    owner = launch.default_owner()
    job = submit(ctx, registry.endpoint, env, name="nameless")  # no token anywhere
    assert job.repo_id == f"{slugify(owner)}/nameless" and job.repo_auto_named
    job = run(ctx, job)
    assert job.state is JobState.TRAINED
    ctx.credentials.set(owner, registry.endpoint, alice_token)
    job = control.retry(ctx, job.id)
    assert job.state is JobState.PUBLISHED, job.error
    assert job.repo_id == "alice/nameless" and job.repo_url == f"{registry.endpoint}/alice/nameless"
    assert HfApi(endpoint=registry.endpoint, token=alice_token).repo_info("alice/nameless").sha == job.commit_sha
