"""``/api/v1/jobs`` as a user of ``hubferry serve`` meets it: real API tokens, jobs run by the same services as
the CLI (the fake trainer, the built-in registry as the Hub), errors in the API's one shape."""

from __future__ import annotations

import sys
import time
import uuid

import pytest
from huggingface_hub import HfApi

from fakes.api_v1 import api_context, local_job, stored_job, wait_for_state
from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app
from hubferry.domain.jobs import JobState


@pytest.fixture
def ctx(tmp_path, hf_env, registry):
    return api_context(tmp_path, endpoint=registry.endpoint)


@pytest.fixture
def app(ctx):
    return create_app(ctx, run_consumer=False)


@pytest.fixture
def users(ctx):
    return TestUsers(ctx.jobs.engine)


def test_an_admins_local_job_is_created_runs_publishes_and_can_be_read_every_way(
        app, ctx, users, tmp_path, registry, alice_token):
    ctx.credentials.set("root", registry.endpoint, alice_token)  # root's stored Hub token (as PUT /secrets/hub does)
    root = users.token_client(app, "root", admin=True)
    name = f"api lora {uuid.uuid4().hex[:6]}"  # the registry is shared by the whole session
    repo = "alice/" + name.replace(" ", "-")
    created = root.post("/api/v1/jobs", json=local_job(tmp_path / "out", steps=30, step_s=0.04, name=name))
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert created.json()["owner"] == "root" and created.json()["repo_id"] == repo

    job = wait_for_state(root, job_id, {"published", "failed"})
    assert job["state"] == "published", job["error"]
    assert job["repo_url"] == f"{registry.endpoint}/{repo}"
    assert HfApi(endpoint=registry.endpoint, token=alice_token).repo_info(repo).sha == job["commit_sha"]
    stages = [e["stage"] for e in job["timeline"] if e["kind"] == "stage_finished"]
    assert stages == ["training", "publishing", "verifying"]

    timeline = root.get(f"/api/v1/jobs/{job_id}/timeline", params={"after": 2, "limit": 3}).json()
    assert [e["seq"] for e in timeline["events"]] == [3, 4, 5] and timeline["next_after"] == 5

    points = root.get(f"/api/v1/jobs/{job_id}/progress").json()["points"]
    steps = [p["step"] for p in points if p["step"] is not None]
    assert len(points) >= 2 and steps == sorted(steps) and steps[-1] == 30
    assert [p["loss"] for p in points if p["loss"] is not None][-1] == pytest.approx(0.1)
    later = root.get(f"/api/v1/jobs/{job_id}/progress", params={"after": points[0]["id"]}).json()["points"]
    assert later == points[1:]

    tail = root.get(f"/api/v1/jobs/{job_id}/log", params={"tail": 1}).json()
    assert tail["text"].strip() == "step 30/30 loss 0.100" and tail["next_offset"] == tail["size"]
    head = root.get(f"/api/v1/jobs/{job_id}/log", params={"offset": 0, "length": 20}).json()
    assert head["text"] == "Loading checkpoint s" and head["next_offset"] == 20
    rest = root.get(f"/api/v1/jobs/{job_id}/log", params={"offset": 20, "length": 1_000_000}).json()
    assert head["text"] + rest["text"] == root.get(f"/api/v1/jobs/{job_id}/log",
                                                   params={"length": 1_000_000}).json()["text"]
    assert alice_token not in str(root.get(f"/api/v1/jobs/{job_id}").json())


def test_log_text_has_no_terminal_escapes_and_no_secrets(app, ctx, users, tmp_path):
    secret = "hf_" + "A1b2C3d4" * 5
    script = (f"import sys; print('\\x1b[31mred\\x1b[0m \\x1b]8;;https://evil.example\\x07link\\x1b]8;;\\x07 "
              f"{secret}'); print('caf\\u00e9 ' * 3)")
    root = users.token_client(app, "root", admin=True)
    out = tmp_path / "o"
    created = root.post("/api/v1/jobs", json={"trainer": "local", "preflight": False, "output_dir": str(out),
                                              "command": [sys.executable, "-c", script]})
    job_id = created.json()["id"]
    wait_for_state(root, job_id, {"failed"})  # it writes no weights
    text = root.get(f"/api/v1/jobs/{job_id}/log", params={"tail": 5}).json()["text"]
    assert "red" in text and "link" in text and "\x1b" not in text and "\x07" not in text
    assert secret not in text
    # a ranged read never splits a character: 'é' is two bytes
    size = root.get(f"/api/v1/jobs/{job_id}/log", params={"tail": 5}).json()["size"]
    chunks, offset = [], 0
    while offset < size:
        chunk = root.get(f"/api/v1/jobs/{job_id}/log", params={"offset": offset, "length": 7}).json()
        chunks.append(chunk["text"])
        offset = chunk["next_offset"]
    assert "café café café" in "".join(chunks) and "\ufffd" not in "".join(chunks)


def test_jobs_are_listed_newest_first_filtered_and_paged_with_a_cursor(app, ctx, users):
    mine = []
    for i in range(5):
        mine.append(stored_job(ctx, "ann", name=f"j{i}", trainer="replicate" if i % 2 else "local"))
        time.sleep(0.002)  # distinct creation times
    stored_job(ctx, "ben", name="other")
    ctx.jobs.transition(mine[1].id, JobState.QUEUED, JobState.CANCELLED)
    ann = users.token_client(app, "ann")
    listed = ann.get("/api/v1/jobs").json()
    expected = [j.id for j in sorted(mine, key=lambda j: (j.created_at, j.id), reverse=True)]
    assert [j["id"] for j in listed["jobs"]] == expected and listed["next_cursor"] is None

    paged, cursor = [], None
    while True:
        page = ann.get("/api/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        paged += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == expected

    replicate = ann.get("/api/v1/jobs", params={"trainer": "replicate"}).json()["jobs"]
    assert {j["id"] for j in replicate} == {mine[1].id, mine[3].id}
    cancelled = ann.get("/api/v1/jobs", params=[("state", "cancelled"), ("state", "failed")]).json()["jobs"]
    assert [j["id"] for j in cancelled] == [mine[1].id]
    assert ann.get("/api/v1/jobs", params={"owner": "ben"}).json()["jobs"] == []

    for bad in ({"limit": -1}, {"limit": 0}, {"limit": 201}, {"state": "sleeping"}, {"cursor": "garbage!"}):
        refused = ann.get("/api/v1/jobs", params=bad)
        assert refused.status_code == 422, bad
        assert refused.json()["error"]["field"].split(".")[0] == next(iter(bad)), refused.json()


@pytest.mark.parametrize(("body", "field"), [
    ({"trainer": "local", "command": ["true"], "repo_id": "not a repo"}, "local.repo_id"),
    ({"trainer": "local", "command": []}, "local.command"),
    ({"trainer": "local"}, "local.command"),
    ({"trainer": "local", "command": ["x"], "total_steps": -3}, "local.total_steps"),
    ({"trainer": "local", "command": ["x"], "env": {"BAD NAME": "1"}}, "local.env.BAD NAME.[key]"),
    ({"trainer": "local", "command": ["x"], "notify_url": "ftp://hooks.example"}, "local.notify_url"),
    ({"trainer": "replicate"}, "replicate.dataset"),
    ({"trainer": "replicate", "dataset": {"upload_id": "ds_0123456789abcdef", "path": "/x"}}, "replicate.dataset"),
    ({"trainer": "replicate", "dataset": {"upload_id": "ds_0"}}, "replicate.dataset.upload_id"),
    ({"trainer": "replicate", "dataset": {"upload_id": "ds_0123456789abcdef"}, "learning_rate": 0},
     "replicate.learning_rate"),
    ({"command": ["x"]}, "body"),
    ({"trainer": "local", "command": ["x"], "pass_env": ["SECRET_TOKEN"]}, "pass_env"),
])
def test_bad_input_is_a_422_naming_the_field_and_records_nothing(app, ctx, users, body, field):
    response = users.token_client(app, "root", admin=True).post("/api/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and error["category"] == "validation" and error["message"]
    assert ctx.jobs.list_jobs() == []


def test_commands_and_server_paths_are_for_administrators(app, ctx, users):
    ben = users.token_client(app, "ben")
    command = ben.post("/api/v1/jobs", json={"trainer": "local", "command": ["id"], "preflight": False})
    assert command.status_code == 403 and command.json()["error"]["field"] == "trainer"
    path = ben.post("/api/v1/jobs", json={"trainer": "replicate", "dataset": {"path": "/etc"}, "preflight": False})
    assert path.status_code == 403 and path.json()["error"]["field"] == "dataset.path"
    assert ctx.jobs.list_jobs() == []


def test_cancel_and_retry_answer_409_for_a_job_in_the_wrong_state(app, ctx, users, tmp_path):
    root = users.token_client(app, "root", admin=True)
    slow = root.post("/api/v1/jobs", json=local_job(tmp_path / "slow", steps=400, step_s=0.05, preflight=False))
    job_id = slow.json()["id"]
    wait_for_state(root, job_id, {"training"})
    cancelled = root.post(f"/api/v1/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    again = root.post(f"/api/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["error"]["message"]
    retried = root.post(f"/api/v1/jobs/{job_id}/retry")
    assert retried.status_code == 409 and "submit a new job" in retried.json()["error"]["message"]


def test_retry_publishes_a_trained_job_with_the_token_and_repo_given_like_hubferry_retry(
        app, ctx, users, tmp_path, registry, alice_token):
    root = users.token_client(app, "root", admin=True)
    created = root.post("/api/v1/jobs", json=local_job(tmp_path / "w", steps=3, preflight=False, name="later"))
    job_id = created.json()["id"]
    assert wait_for_state(root, job_id, {"trained", "failed"})["state"] == "trained"  # no Hub token anywhere
    bad = root.post(f"/api/v1/jobs/{job_id}/retry", json={"repo_id": "no good"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "repo_id"
    retried = root.post(f"/api/v1/jobs/{job_id}/retry", json={"token": alice_token, "repo_id": "alice/retried-lora",
                                                               "endpoint": registry.endpoint})
    assert retried.status_code == 200, retried.text
    job = wait_for_state(root, job_id, {"published", "failed"})
    assert job["state"] == "published" and job["repo_id"] == "alice/retried-lora", job["error"]
    assert alice_token not in retried.text + str(job)


def test_a_failed_training_is_retried(app, ctx, users, tmp_path):
    root = users.token_client(app, "root", admin=True)
    marker = tmp_path / "fixed"
    body = local_job(tmp_path / "f", steps=2, preflight=False)
    body["command"] += ["--fail-unless", str(marker)]
    job_id = root.post("/api/v1/jobs", json=body).json()["id"]
    assert wait_for_state(root, job_id, {"failed", "trained"})["state"] == "failed"
    marker.write_text("ok")
    assert root.post(f"/api/v1/jobs/{job_id}/retry").status_code == 200
    assert wait_for_state(root, job_id, {"trained", "failed"}, timeout=60)["state"] == "trained"


def test_naming_preview_is_the_name_a_job_would_get(app, ctx, users, registry, alice_token, bob_token, tmp_path):
    ctx.credentials.set("ann", registry.endpoint, alice_token)
    ann = users.token_client(app, "ann")
    preview = ann.get("/api/v1/naming/preview", params={"name": "My LoRA!"})
    assert preview.json() == {"repo_id": "alice/my-lora", "endpoint": registry.endpoint, "token_source": "stored"}
    HfApi(endpoint=registry.endpoint, token=alice_token).create_repo("alice/my-lora", exist_ok=True)
    assert ann.get("/api/v1/naming/preview", params={"name": "My LoRA!"}).json()["repo_id"] == "alice/my-lora-2"
    assert ann.get("/api/v1/naming/preview", params={"name": ""}).status_code == 422
    assert ann.get("/api/v1/naming/preview", params={"name": "x", "endpoint": "file:///etc"}).status_code == 422

    # the server's own HF_TOKEN is nobody's token through the API
    other = api_context(tmp_path / "other", endpoint=registry.endpoint, token=bob_token)
    ben = TestUsers(other.jobs.engine).token_client(create_app(other, run_consumer=False), "ben")
    assert ben.get("/api/v1/naming/preview", params={"name": "x"}).json() == {
        "repo_id": "ben/x", "endpoint": registry.endpoint, "token_source": "none"}


def test_the_openapi_document_describes_every_v1_route_with_its_models(app):
    from fastapi.testclient import TestClient

    spec = TestClient(app).get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/cancel", "/api/v1/jobs/{job_id}/retry",
                 "/api/v1/jobs/{job_id}/timeline", "/api/v1/jobs/{job_id}/log", "/api/v1/jobs/{job_id}/progress",
                 "/api/v1/jobs/{job_id}/events", "/api/v1/jobs/{job_id}/deliveries", "/api/v1/naming/preview",
                 "/api/v1/notifications/webhook", "/api/v1/datasets", "/api/v1/datasets/{upload_id}",
                 "/api/v1/datasets/{upload_id}/check", "/api/v1/datasets/{upload_id}/thumbnails/{name}"):
        assert path in paths, path
    assert "/api/jobs" not in paths
    create = paths["/api/v1/jobs"]["post"]
    assert create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobOut")
    assert create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "text/event-stream" in paths["/api/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert "multipart/form-data" in paths["/api/v1/datasets"]["post"]["requestBody"]["content"]
