"""The job commands end to end, as a user runs them: subprocesses, one JSON line on stdout."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from huggingface_hub import HfApi

from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app
from hubferry.config import load_settings
from hubferry.services.context import open_context
from hubferry.services.identity import default_owner

ROOT = Path(__file__).parents[2]
FAKE = str(ROOT / "tests" / "fixtures" / "fake_trainer.py")


@pytest.fixture()
def env(tmp_path, registry, alice_token):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBFERRY_"))}
    env.update(HUBFERRY_HOME=str(tmp_path / "home"), HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=registry.endpoint,
               HF_TOKEN=alice_token, HUBFERRY_RETRY_BASE_DELAY="0.05")
    return env


def hubferry(*args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 180):
    return subprocess.run([sys.executable, "-m", "hubferry", *args], env=env, capture_output=True, text=True,
                          input=stdin, timeout=timeout, cwd=ROOT)


def one_json_line(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def test_train_wait_json_publishes_and_reports_the_job(env, tmp_path, registry, alice_token):
    out = tmp_path / "out"
    result = hubferry("train", "--local", "--name", "cli-lora", "--wait", "--json", "--total-steps", "30",
                      "--output", str(out), "--", sys.executable, FAKE, "--output", str(out), "--steps", "30",
                      env=env)
    assert result.returncode == 0, result.stderr
    job = one_json_line(result.stdout)
    assert job["state"] == "published" and job["repo_url"] == f"{registry.endpoint}/alice/cli-lora"
    assert len(job["commit_sha"]) == 40 and job["error"] is None
    assert {"percent", "step", "total_steps", "eta_seconds"} <= set(job["progress"])
    assert [e["stage"] for e in job["timeline"] if e["kind"] == "stage_finished"] == [
        "training", "publishing", "verifying"]
    assert HfApi(endpoint=registry.endpoint, token=alice_token).repo_info("alice/cli-lora").sha == job["commit_sha"]
    assert alice_token not in result.stdout + result.stderr

    shown = hubferry("jobs", "show", job["id"], "--json", env=env)
    assert shown.returncode == 0 and one_json_line(shown.stdout)["commit_sha"] == job["commit_sha"]
    listed = one_json_line(hubferry("jobs", "list", "--json", env=env).stdout)
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    human = hubferry("jobs", "show", job["id"], env=env)
    assert "stage_finished" in human.stderr and "published" in human.stderr
    watched = hubferry("watch", job["id"], env=env)
    assert watched.returncode == 0 and "published and verified" in watched.stderr
    assert hubferry("cancel", job["id"], env=env).returncode == 2  # a published job cannot be cancelled


def test_train_json_without_wait_prints_only_the_id(env, tmp_path):
    out = tmp_path / "o"
    result = hubferry("train", "--local", "--json", "--output", str(out), "--",
                      sys.executable, FAKE, "--output", str(out), "--steps", "3", env=env)
    assert result.returncode == 0, result.stderr
    assert set(one_json_line(result.stdout)) == {"id"}


def test_failing_command_exits_with_the_trainers_code_and_the_error_in_json(env, tmp_path):
    out = tmp_path / "o"
    result = hubferry("train", "--local", "--wait", "--json", "--name", "broken", "--output", str(out), "--",
                      sys.executable, FAKE, "--output", str(out), "--steps", "3", "--exit-code", "7", env=env)
    assert result.returncode == 7  # the trainer's own exit code
    job = one_json_line(result.stdout)
    assert job["state"] == "failed" and job["error"]["category"] == "training_error"
    assert "exit code 7" in job["error"]["message"] and "simulated failure" in job["error"]["message"]
    retried = hubferry("retry", job["id"], env=env)
    assert retried.returncode == 1 and "failed" in retried.stderr  # still broken: fails again, says so


def test_bad_input_is_refused_with_exit_2(env, tmp_path):
    result = hubferry("train", "--local", "--repo", "not a repo", "--", "true", env=env)
    assert result.returncode == 2 and "repo" in result.stderr.lower()
    assert hubferry("jobs", "show", "job_missing", env=env).returncode == 2
    unknown = hubferry("train", "--trainer", "nope", "--", "true", env=env)
    assert unknown.returncode == 2 and "unknown trainer" in unknown.stderr


def test_logs_parse_prints_one_snapshot_line(env):
    log = "Loading: 100%|██| 2/2 [00:00<00:00]\rtrain:  31%|███ | 310/1000 [02:10<04:51,  2.37it/s, loss=0.3215]\n"
    result = hubferry("logs", "parse", "-", "--total-steps", "1000", env=env, stdin=log)
    assert result.returncode == 0, result.stderr
    snap = one_json_line(result.stdout)
    assert set(snap) == {"stage", "percent", "step", "total_steps", "loss", "rate_per_s", "eta_seconds"}
    assert snap["step"] == 310 and snap["total_steps"] == 1000 and snap["loss"] == pytest.approx(0.3215)
    assert snap["percent"] == pytest.approx(31.0)


def test_queued_job_runs_on_a_worker_process(env, tmp_path, registry):
    env = {**env, "HUBFERRY_RECONCILE_INTERVAL_S": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "hubferry", "worker"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not list((tmp_path / "home" / "workers").glob("*.alive")):
            assert time.monotonic() < deadline and worker.poll() is None, "worker did not start"
            time.sleep(0.1)
        out = tmp_path / "w"
        result = hubferry("train", "--local", "--name", "queued-lora", "--wait", "--json", "--output", str(out),
                          "--", sys.executable, FAKE, "--output", str(out), "--steps", "5", env=env)
        assert result.returncode == 0, result.stderr
        assert "queued for the workers" in result.stderr
        job = one_json_line(result.stdout)
        assert job["state"] == "published"
        upload = next(e for e in job["timeline"] if e["message"] == "upload started")
        assert str(worker.pid) in upload["context"]["worker"]
    finally:
        os.killpg(worker.pid, signal.SIGINT)
        worker.wait(timeout=30)


def test_api_lists_and_shows_jobs(env, tmp_path, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "api"
    created = hubferry("train", "--local", "--json", "--name", "api-lora", "--output", str(out), "--",
                       sys.executable, FAKE, "--output", str(out), "--steps", "3", env=env)
    job_id = one_json_line(created.stdout)["id"]
    ctx = open_context(load_settings())
    app = create_app(ctx, run_consumer=False)
    users = TestUsers(ctx.jobs.engine)
    # The CLI's jobs belong to the OS account: its user of the same name sees them, another user does not.
    with users.token_client(app, default_owner()) as client, users.token_client(app, "stranger") as stranger:
        assert TestClient(app).get("/api/health").json() == {"status": "ok"}
        assert TestClient(app).get("/api/v1/jobs").status_code == 401
        assert [j["id"] for j in client.get("/api/v1/jobs").json()["jobs"]] == [job_id]
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        assert job["state"] == "published" and job["timeline"]
        missing = client.get("/api/v1/jobs/job_nope")
        assert missing.status_code == 404 and missing.json()["error"]["category"] == "validation"
        refused = client.post(f"/api/v1/jobs/{job_id}/retry")
        assert refused.status_code == 409 and "already published" in refused.json()["error"]["message"]
        assert "/api/v1/jobs/{job_id}" in client.get("/openapi.json").json()["paths"]
        assert env["HF_TOKEN"] not in json.dumps(client.get(f"/api/v1/jobs/{job_id}").json())
        assert stranger.get("/api/v1/jobs").json()["jobs"] == []
        assert stranger.get(f"/api/v1/jobs/{job_id}").status_code == 404


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="the train extra is not installed")
def test_the_example_lora_trains_and_publishes_through_the_cli(env, tmp_path, registry, alice_token):
    out = tmp_path / "lora"
    result = hubferry("train", "--local", "--name", "tiny-lora", "--wait", "--json", "--total-steps", "40",
                      "--output", str(out), "--", sys.executable, str(ROOT / "examples/tiny_lora/train.py"),
                      "--output", str(out), "--steps", "40", env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    job = one_json_line(result.stdout)
    assert job["state"] == "published"
    files = HfApi(endpoint=registry.endpoint, token=alice_token).list_repo_files(job["repo_id"])
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(files)


def test_serve_runs_the_api_and_an_in_process_worker(env, tmp_path):
    import urllib.error
    import urllib.request

    from hubferry.testing import free_port

    owner = default_owner()
    created = hubferry("users", "create", owner, "--token", "--json", env=env)
    assert created.returncode == 0, created.stderr
    auth = {"Authorization": f"Bearer {one_json_line(created.stdout)['token']}"}
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "hubferry", "serve", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline and server.poll() is None, "serve did not start"
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=1) as response:
                    if json.loads(response.read()) == {"status": "ok"}:
                        break
            except OSError:
                time.sleep(0.1)
        out = tmp_path / "served"
        result = hubferry("train", "--local", "--name", "served-lora", "--wait", "--json", "--output", str(out),
                          "--", sys.executable, FAKE, "--output", str(out), "--steps", "5", env=env)
        assert result.returncode == 0, result.stderr
        assert "queued for the workers" in result.stderr
        job_id = one_json_line(result.stdout)["id"]
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(f"{base}/api/v1/jobs/{job_id}", timeout=5)
        assert anonymous.value.code == 401
        request = urllib.request.Request(f"{base}/api/v1/jobs/{job_id}", headers=auth)
        with urllib.request.urlopen(request, timeout=5) as response:
            job = json.loads(response.read())
        assert job["state"] == "published" and job["commit_sha"]
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)
