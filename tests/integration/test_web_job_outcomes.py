"""What the job page, the jobs list, the job API and ``hubferry jobs show`` say once a job has ended:
published (each file the read-back checked, with its size and "verified" mark) or trained and then refused
by the Hub (the training shown done with its steps, the publish failure with category, hint and Retry)."""

from __future__ import annotations

import hashlib
import html
import re

import pytest
from typer.testing import CliRunner

from fakes.api_v1 import api_context, local_job, wait_for_state
from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app
from hubferry.cli import app as cli

STEPS = 6


@pytest.fixture
def ctx(tmp_path, hf_env, registry, alice_token, monkeypatch):
    monkeypatch.setenv("HUBFERRY_HOME", str(tmp_path / "home"))  # `hubferry jobs show` reads the same store
    monkeypatch.delenv("HUBFERRY_DATABASE_URL", raising=False)
    monkeypatch.delenv("HUBFERRY_URL", raising=False)
    monkeypatch.delenv("HUBFERRY_API_TOKEN", raising=False)
    context = api_context(tmp_path, endpoint=registry.endpoint)
    context.credentials.set("root", registry.endpoint, alice_token)
    return context


@pytest.fixture
def app(ctx):
    return create_app(ctx, run_consumer=False)


def _run(app, tmp_path, name: str, repo: str) -> tuple[object, dict]:
    users = TestUsers.of(app)
    root = users.browser(app, "root", admin=True)
    created = root.client.post("/api/v1/jobs", headers=root.csrf_headers, json={
        **local_job(tmp_path / name, steps=STEPS, step_s=0.05), "name": name, "repo_id": repo, "preflight": False})
    assert created.status_code == 201, created.text
    return root, wait_for_state(root.client, created.json()["id"], {"published", "failed", "trained"})


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def test_a_published_job_lists_each_verified_file_with_its_size(app, ctx, tmp_path):
    root, job = _run(app, tmp_path, "files-run", "alice/files-run")
    assert job["state"] == "published", job
    files = {f["path"]: f for f in job["files"]}
    weights = tmp_path / "files-run" / "adapter_model.safetensors"
    assert files["adapter_model.safetensors"] == {
        "path": "adapter_model.safetensors", "size": weights.stat().st_size,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(), "verified": True}
    assert "README.md" in files and all(f["verified"] for f in files.values())  # the card hubferry wrote too
    assert root.client.get("/api/v1/jobs").json()["jobs"][0].get("files") is None  # lists stay small

    page = root.client.get(f"/jobs/{job['id']}").text
    rows = {(_text(r)) for r in re.findall(r'<tr class="file-row">(.*?)</tr>', page, re.S)}
    size = weights.stat().st_size
    shown = f"{size / 1000:.0f} KB" if size >= 100_000 else f"{size / 1000:.1f} KB"
    assert any("adapter_model.safetensors" in r and shown in r and "verified" in r for r in rows), rows
    assert any("README.md" in r and "verified" in r for r in rows), rows


def test_a_publish_refused_after_training_shows_the_training_done_and_the_failure(app, ctx, tmp_path):
    root, job = _run(app, tmp_path, "refused-run", "bob/not-alices")
    assert job["state"] == "failed" and job["error"]["category"] == "authentication", job
    assert job["progress"]["step"] == STEPS and job["progress"]["total_steps"] == STEPS  # kept through publishing
    points = root.client.get(f"/api/v1/jobs/{job['id']}/progress").json()["points"]
    after = [p["loss"] for p in points if p["stage"] in ("publishing", "verifying")]
    assert after and set(after) == {None}  # the loss curve holds the trainer's reports only

    page = _text(root.client.get(f"/jobs/{job['id']}").text)
    assert f"Training done: 100 % · step {STEPS} / {STEPS}" in page
    assert "Publishing failed (authentication)" in page
    assert job["error"]["message"] in page and job["error"]["hint"] in page
    assert "Retry" in page and "Starting" not in page and "0.0%" not in page
    status = root.client.get(f"/jobs/{job['id']}/parts/progress").text
    assert 'class="stat-stage">publishing failed<' in status and f">{STEPS} / {STEPS}<" in status

    row = _text(root.client.get("/jobs/parts/list").text)
    assert f"training done (step {STEPS}/{STEPS}), publishing failed: authentication" in row
    assert "trained" in row and " 0%" not in row

    shown = CliRunner().invoke(cli, ["jobs", "show", job["id"]])
    assert shown.exit_code == 0, shown.output
    out = re.sub(r"\s+", " ", shown.output)
    assert f"progress: training done (100%, step {STEPS}/{STEPS}" in out and "(publishing failed)" in out
    assert "(authentication)" in out and job["error"]["hint"][:40] in out
    assert f"retry: hubferry retry {job['id']}" in out
