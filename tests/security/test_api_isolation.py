"""One user's jobs and datasets are invisible to another: every ``/api/v1`` route naming a job or a dataset
of ann's answers ben exactly as for one that does not exist (404), changes nothing, and lists leave them out.
The routes are taken from ``/openapi.json``, so a route added later is covered without editing this test."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from PIL import Image

from fakes.api_v1 import api_context, stored_job
from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app
from hubferry.domain.jobs import EventKind, StageProgress
from hubferry.store.database import utcnow
from hubferry.store.outbox import Outbox

MISSING_JOB = "job_000000000000"
MISSING_DATASET = "ds_0000000000000000"


@pytest.fixture
def world(tmp_path):
    ctx = api_context(tmp_path)
    app = create_app(ctx, run_consumer=False)
    users = TestUsers(ctx.jobs.engine)
    ann, ben = users.token_client(app, "ann"), users.token_client(app, "ben")
    job = stored_job(ctx, "ann", name="secret-project")
    ctx.jobs.append_event(job.id, EventKind.NOTICE, message="ann's notice")
    ctx.jobs.update_progress(job.id, StageProgress("training", 50.0, 5, 10, 0.25))
    log = ctx.settings.home / "logs" / f"{job.id}.log"
    log.parent.mkdir(parents=True)
    log.write_text("ann's log line\n")
    ctx.jobs.set_runtime(job.id, log_path=str(log))
    Outbox(ctx.jobs.engine).set_target("ann", "https://hooks.example/ann", now=utcnow(), job_id=job.id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(2):
            picture = io.BytesIO()
            Image.new("RGB", (300, 300), (n * 90, 10, 10)).save(picture, "JPEG")
            archive.writestr(f"p{n}.jpg", picture.getvalue())
    dataset = ann.post("/api/v1/datasets", files={"file": ("ann.zip", buffer.getvalue())}).json()
    report = ann.post(f"/api/v1/datasets/{dataset['id']}/check").json()["report"]
    image = report["images"][0]["name"]
    assert ann.get(f"/api/v1/datasets/{dataset['id']}/thumbnails/{image}").status_code == 200
    return {"ctx": ctx, "app": app, "users": users, "ann": ann, "ben": ben, "job": job, "dataset": dataset["id"],
            "image": image}


def _routes(app) -> list[tuple[str, str]]:
    """The user routes naming a job or dataset. A pod agent's callbacks (``/api/v1/agent/``) take no user
    credentials at all, only the job's own callback token, and answer 401 to anything else whether the job
    exists or not (tests/integration/test_runpod_orchestrator.py)."""
    spec = app.openapi()
    return [(method.upper(), path) for path, methods in spec["paths"].items()
            if path.startswith("/api/v1/") and not path.startswith("/api/v1/agent/")
            and ("{job_id}" in path or "{upload_id}" in path)
            for method in methods]


def test_a_users_credentials_open_no_pod_callbacks(world):
    ben, job_id = world["ben"], world["job"].id
    for url in (f"/api/v1/agent/jobs/{job_id}/spec", f"/api/v1/agent/jobs/{MISSING_JOB}/spec"):
        answer = ben.get(url)
        assert answer.status_code == 401 and "secret-project" not in answer.text


def _fill(path: str, job_id: str, dataset_id: str, image: str) -> str:
    return path.replace("{job_id}", job_id).replace("{upload_id}", dataset_id).replace("{name}", image)


def _call(client, method: str, url: str):
    return client.request(method, url, json={} if method in ("POST", "PUT", "PATCH") else None)


def _without_ids(body: dict, *ids: str) -> str:
    text = str(body)
    for value in ids:
        text = text.replace(value, "ID")
    return text


def test_every_route_naming_anns_job_or_dataset_answers_ben_as_if_it_did_not_exist(world):
    ann, ben, job_id, dataset_id = world["ann"], world["ben"], world["job"].id, world["dataset"]
    routes = _routes(world["app"])
    assert len(routes) >= 12, routes
    before = ann.get(f"/api/v1/jobs/{job_id}").json()
    for method, path in routes:
        theirs = _call(ben, method, _fill(path, job_id, dataset_id, world["image"]))
        missing = _call(ben, method, _fill(path, MISSING_JOB, MISSING_DATASET, world["image"]))
        assert theirs.status_code == 404, (method, path, theirs.status_code, theirs.text)
        assert _without_ids(theirs.json(), job_id, dataset_id) == _without_ids(missing.json(), MISSING_JOB,
                                                                               MISSING_DATASET), (method, path)
        for secret in ("secret-project", "ann's", "hooks.example", "ann.zip"):
            assert secret not in theirs.text, (method, path)
    after = ann.get(f"/api/v1/jobs/{job_id}").json()
    assert after["state"] == before["state"] == "queued" and after["timeline"] == before["timeline"]
    assert ann.get(f"/api/v1/datasets/{dataset_id}").status_code == 200  # ben's DELETE did nothing


def test_lists_leave_other_users_things_out(world):
    ben = world["ben"]
    assert ben.get("/api/v1/jobs").json() == {"jobs": [], "next_cursor": None}
    assert ben.get("/api/v1/jobs", params={"owner": "ann"}).json()["jobs"] == []
    assert ben.get("/api/v1/datasets").json() == {"datasets": []}
    assert ben.get("/api/v1/notifications/webhook").json()["url"] is None


def test_anns_upload_cannot_be_used_in_bens_job(world):
    refused = world["ben"].post("/api/v1/jobs", json={
        "trainer": "replicate", "dataset": {"upload_id": world["dataset"]}, "preflight": False,
        "replicate_token": "r8_" + "x" * 37})
    assert refused.status_code == 404 and world["dataset"] in refused.json()["error"]["message"]
    assert [j.owner for j in world["ctx"].jobs.list_jobs()] == ["ann"]


def test_an_administrator_sees_every_users_jobs_and_datasets(world):
    carol = world["users"].token_client(world["app"], "carol", admin=True)
    job_id, dataset_id = world["job"].id, world["dataset"]
    assert carol.get(f"/api/v1/jobs/{job_id}").json()["owner"] == "ann"
    assert [j["id"] for j in carol.get("/api/v1/jobs", params={"owner": "ann"}).json()["jobs"]] == [job_id]
    assert carol.get(f"/api/v1/jobs/{job_id}/log", params={"tail": 1}).json()["text"] == "ann's log line\n"
    assert carol.get(f"/api/v1/datasets/{dataset_id}").status_code == 200


def test_unauthenticated_requests_get_401_on_every_v1_route(world):
    from fastapi.testclient import TestClient

    anonymous = TestClient(world["app"])
    spec = world["app"].openapi()
    for path, methods in spec["paths"].items():
        if not path.startswith(("/api/v1/jobs", "/api/v1/datasets", "/api/v1/naming", "/api/v1/notifications")):
            continue
        for method in methods:
            url = _fill(path, world["job"].id, world["dataset"], world["image"])
            url = re.sub(r"\{[^}]+\}", "x", url)
            response = _call(anonymous, method.upper(), url + ("?name=x" if "naming" in path else ""))
            assert response.status_code == 401, (method, path, response.status_code)
            assert "ann" not in response.text
