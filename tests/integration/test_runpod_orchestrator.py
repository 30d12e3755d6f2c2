"""The orchestrator's side of RunPod jobs against the fake RunPod, without training anything: the client's
retries and error mapping, the agent's callbacks (authentication, bounds, repeated reports), liveness,
teardown and the reconciler's orphans. The whole flow with a real agent is tests/e2e/test_runpod_flow.py."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fakes.runpod_server import FakeRunPod
from hubferry import training_config
from hubferry.api.app import create_app
from hubferry.config import Settings
from hubferry.domain.jobs import JobState
from hubferry.errors import PermanentError, ValidationError
from hubferry.secrets.hub_credentials import job_owner
from hubferry.services import control, pod_agent, remote, runpod_jobs
from hubferry.services.context import Context, InlineDispatcher, open_context
from hubferry.services.reconcile import reconcile
from hubferry.services.training import PASSED_ENV, run_training
from hubferry.trainers.runpod_api import connect

GPU = "NVIDIA RTX A4000"
IDLE_IMAGE = "me/idle:1"
CONFIG = """method = "sft"
dataset = "trl-lib/Capybara"
[model]
base = "HuggingFaceTB/SmolLM2-135M"
[training]
max_steps = 5
"""


@pytest.fixture()
def ctx(tmp_path: Path, runpod_fake: FakeRunPod) -> Context:
    runpod_fake.images[IDLE_IMAGE] = [sys.executable, "-c", "import time; time.sleep(120)"]
    settings = Settings(home=tmp_path / "home", public_url="http://127.0.0.1:9", runpod_base_url=runpod_fake.url,
                        runpod_api_key=runpod_fake.api_key, endpoint="http://127.0.0.1:9", retry_base_delay=0.01,
                        runpod_heartbeat_grace_s=60, runpod_start_grace_s=120)
    context = open_context(settings)
    context.dispatcher = InlineDispatcher(context, sleep=lambda _s: None)
    return context


def submit(ctx: Context, **overrides: object) -> str:
    request = runpod_jobs.RunpodRequest(config=training_config.loads(CONFIG), base_dir=Path("."), gpu=GPU,
                                        image=IDLE_IMAGE, preflight=False, **overrides)  # type: ignore[arg-type]
    return runpod_jobs.submit(ctx, request).id


def launched(ctx: Context, runpod_fake: FakeRunPod) -> tuple[str, str, str]:
    """A job whose pod runs (an idle process: no agent), its pod id, and its callback token."""
    job_id = submit(ctx)
    run_training(ctx, job_id)
    job = ctx.jobs.require(job_id)
    assert job.state is JobState.TRAINING and job.trainer_handle is not None
    token = json.loads(ctx.credentials.vault.get(job_owner(job_id), PASSED_ENV) or "{}")["HUBFERRY_JOB_TOKEN"]
    return job_id, str(job.trainer_handle["pod_id"]), token


def test_non_json_answers_are_retried_and_errors_are_classified(ctx: Context, runpod_fake: FakeRunPod) -> None:
    api = connect(ctx.settings, runpod_fake.api_key)
    runpod_fake.fail_next(2)  # a proxy's HTML 502 pages: the client raises JSONDecodeError on them
    assert api.gpu(GPU)["securePrice"] == pytest.approx(0.32)
    with pytest.raises(ValidationError) as unknown:
        api.gpu("NVIDIA H9000")
    assert GPU in unknown.value.hint
    with pytest.raises(PermanentError) as refused:
        connect(ctx.settings, "rpa_" + "x" * 40).gpu(GPU)
    assert refused.value.category == "authentication" and "x" * 40 not in str(refused.value.to_dict())
    runpod_fake.set_capacity(GPU, "SECURE", False)
    with pytest.raises(PermanentError) as full:
        api.create_pod(name="hubferry-x", image=IDLE_IMAGE, gpu=GPU, cloud_type="SECURE", env={},
                       container_disk_gb=10, volume_gb=0)
    assert full.value.category == "capacity" and "--cloud-type" in full.value.hint
    with pytest.raises(ValidationError) as quoted:
        api.create_pod(name="hubferry-y", image=IDLE_IMAGE, gpu=GPU, cloud_type="COMMUNITY",
                       env={"A": 'x" } injected'}, container_disk_gb=10, volume_gb=0)
    assert "A" in quoted.value.message and "injected" not in quoted.value.message
    assert runpod_fake.calls("podFindAndDeployOnDemand") == 1  # the quoted value never left


def test_submit_checks_before_renting(ctx: Context, runpod_fake: FakeRunPod) -> None:
    runpod_fake.gpus[GPU].community_cloud = False
    with pytest.raises(ValidationError, match="not offered"):
        submit(ctx, cloud_type="COMMUNITY")
    no_key = open_context(ctx.settings.model_copy(update={"runpod_api_key": None}))
    with pytest.raises(ValidationError, match="no RunPod API key"):
        runpod_jobs.submit(no_key, runpod_jobs.RunpodRequest(config=training_config.loads(CONFIG),
                                                             base_dir=Path("."), preflight=False))
    assert runpod_fake.calls("podFindAndDeployOnDemand") == 0
    job = ctx.jobs.require(submit(ctx))
    assert job.params["price_per_hr"] == pytest.approx(0.32) and job.params["gpu"] == GPU
    assert "HUBFERRY_JOB_TOKEN" not in json.dumps(job.params) and job.params["job_token_sha256"]


def test_callbacks_need_the_jobs_own_token(ctx: Context, runpod_fake: FakeRunPod) -> None:
    job_id, _pod, token = launched(ctx, runpod_fake)
    other_id, _other_pod, other_token = launched(ctx, runpod_fake)
    client = TestClient(create_app(ctx, run_consumer=False))
    url = f"/api/v1/agent/jobs/{job_id}"
    assert client.get(f"{url}/spec", headers={"Authorization": f"Bearer {token}"}).json()["config"]["method"] == "sft"
    for headers in ({}, {"Authorization": f"Bearer {other_token}"}, {"Authorization": "Bearer hfj_nope"},
                    {"Authorization": token}):
        answer = client.get(f"{url}/spec", headers=headers)
        assert answer.status_code == 401 and token not in answer.text, headers
    assert client.get("/api/v1/agent/jobs/job_unknown/spec",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 401
    too_many = client.post(f"{url}/report", headers={"Authorization": f"Bearer {token}"},
                           json={"seq": 1, "phase": "training", "lines": ["x"] * 501})
    assert too_many.status_code == 422
    # an agent cannot be granted the Hub token before it has trained
    grant = client.post(f"{url}/publish-grant", headers={"Authorization": f"Bearer {token}"})
    assert grant.status_code == 409 and "publishing" in grant.json()["error"]["message"]
    assert ctx.jobs.require(other_id).state is JobState.TRAINING


def test_a_repeated_report_is_recorded_once(ctx: Context, runpod_fake: FakeRunPod) -> None:
    job_id, _pod, token = launched(ctx, runpod_fake)
    client = TestClient(create_app(ctx, run_consumer=False))
    body = {"seq": 1, "phase": "training", "lines": ["step 2/5 loss: 1.5", "\x1b[31mred\x1b[0m"]}
    for _ in range(2):  # the agent retried a report whose answer was lost
        answer = client.post(f"/api/v1/agent/jobs/{job_id}/report", json=body,
                             headers={"Authorization": f"Bearer {token}"})
        assert answer.json() == {"action": "continue"}
    job = ctx.jobs.require(job_id)
    log = Path(str(job.log_path)).read_text()
    assert log.count("step 2/5") == 1 and "\x1b" not in log
    assert job.progress.step == 2 and job.progress.total_steps == 5


def test_a_silent_agent_is_lost_and_its_pod_terminated(ctx: Context, runpod_fake: FakeRunPod) -> None:
    job_id, pod_id, token = launched(ctx, runpod_fake)
    pod_agent.report(ctx, ctx.jobs.require(job_id), pod_agent.Report(seq=1, phase="training"))
    remote.refresh(ctx, job_id, force=True)
    assert ctx.jobs.require(job_id).state is JobState.TRAINING  # heard from just now
    later = ctx.jobs.clock() + timedelta(seconds=61)
    ctx.jobs.clock = lambda: later  # type: ignore[method-assign]
    remote.refresh(ctx, job_id, force=True)
    job = ctx.jobs.require(job_id)
    assert job.state is JobState.FAILED and job.error is not None and "not reported for over 60 s" in job.error.message
    assert runpod_fake.pods[pod_id].desired_status == "TERMINATED"


def test_a_pod_that_stops_while_publishing_keeps_its_weights(ctx: Context, runpod_fake: FakeRunPod) -> None:
    job_id, pod_id, _token = launched(ctx, runpod_fake)
    ctx.credentials.set("root", "http://127.0.0.1:9", "hf_" + "a" * 34)
    job = ctx.jobs.require(job_id)
    assert pod_agent.report(ctx, job, pod_agent.Report(seq=1, phase="trained")) == "publish"
    runpod_fake.kill_process(pod_id)
    runpod_fake.wait_for(pod_id, "EXITED")
    remote.refresh(ctx, job_id, force=True)
    job = ctx.jobs.require(job_id)
    assert job.state is JobState.FAILED and "retry" in (job.error.hint if job.error else "")
    assert runpod_fake.pods[pod_id].desired_status == "EXITED"  # stopped, not terminated: the volume is kept
    queued: list[str] = []

    class Queue(InlineDispatcher):  # the retry's publish task waits in a queue...
        def publish(self, job_id: str, delay_s: float = 0.0) -> None:
            queued.append(job_id)

    ctx.dispatcher = Queue(ctx)
    control.retry(ctx, job_id)
    assert queued == [job_id] and runpod_fake.pods[pod_id].desired_status == "EXITED"
    remote.refresh(ctx, job_id, force=True)  # ...and a poll sees the stopped pod first: it resumes it, no failure
    assert runpod_fake.pods[pod_id].desired_status == "RUNNING" and runpod_fake.pods[pod_id].launches == 2
    assert ctx.jobs.require(job_id).state is JobState.PUBLISHING


def test_cancel_terminates_and_the_reconciler_ends_orphans(ctx: Context, runpod_fake: FakeRunPod) -> None:
    job_id, pod_id, _token = launched(ctx, runpod_fake)
    kept_id, kept_pod, _ = launched(ctx, runpod_fake)
    control.cancel(ctx, job_id)
    assert runpod_fake.pods[pod_id].desired_status == "TERMINATED"
    # a pod whose job ended while its release failed (a crash), and one no job knows: both terminated
    orphan = connect(ctx.settings, runpod_fake.api_key).create_pod(
        name="hubferry-job_gone", image=IDLE_IMAGE, gpu=GPU, cloud_type="SECURE", env={}, container_disk_gb=10,
        volume_gb=0)
    report = reconcile(ctx)
    assert report.terminated_pods == 1 and runpod_fake.pods[orphan["id"]].desired_status == "TERMINATED"
    assert runpod_fake.pods[kept_pod].desired_status == "RUNNING"  # its job still trains
    assert ctx.jobs.require(kept_id).state is JobState.TRAINING


def test_the_api_and_the_dashboard_form_create_runpod_jobs(ctx: Context, runpod_fake: FakeRunPod) -> None:
    from fakes.api_v1 import as_user, header_app
    from hubferry.api import v1_jobs
    from hubferry.web.forms import job_request

    client = TestClient(header_app(ctx, v1_jobs.jobs_router(ctx)))
    body = {"trainer": "runpod", "config": {"method": "dpo", "dataset": "prefs.jsonl", "model": {"base": "a/b"}},
            "gpu": GPU, "runpod_key": runpod_fake.api_key, "preflight": False}
    local_file = client.post("/api/v1/jobs", json=body, headers=as_user("carol"))
    assert local_file.status_code == 422 and local_file.json()["error"]["field"] == "dataset"
    misplaced = client.post("/api/v1/jobs", json={**body, "config": {**body["config"], "dataset": "o/d",
                                                                     "num_epochs": 1}}, headers=as_user("carol"))
    assert misplaced.status_code == 422 and "training" in misplaced.json()["error"]["message"]
    created = client.post("/api/v1/jobs", json={**body, "config": {**body["config"], "dataset": "o/d"}},
                          headers=as_user("carol"))
    assert created.status_code in (200, 201), created.text
    job = created.json()
    assert job["trainer"] == "runpod" and job["owner"] == "carol"
    assert runpod_fake.api_key not in created.text
    request, errors = job_request({"trainer": "runpod", "runpod_config": 'method = "sft"\ndataset = "o/d"\n'
                                   '[model]\nbase = "a/b"\n', "gpu": GPU, "cloud_type": "community"})
    assert not errors and request is not None and request.cloud_type == "COMMUNITY"
    _, bad = job_request({"trainer": "runpod", "runpod_config": 'method = "sft"\nnum_epochs = 2\n'})
    assert "num_epochs" in bad.fields["runpod_config"]


def test_an_uploaded_llm_dataset_is_checked_against_the_method(ctx: Context, runpod_fake: FakeRunPod) -> None:
    from fakes.api_v1 import as_user, header_app
    from hubferry.api import v1_datasets, v1_jobs

    client = TestClient(header_app(ctx, v1_jobs.jobs_router(ctx), v1_datasets.datasets_router(ctx)))

    def upload(name: str, rows: list[dict[str, str]]) -> str:
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        answer = client.post("/api/v1/datasets", files={"file": (name, body)}, headers=as_user("dana"))
        assert answer.status_code in (200, 201), answer.text
        assert answer.json()["kind"] == "rows"
        return str(answer.json()["id"])

    not_json = client.post("/api/v1/datasets", files={"file": ("x.jsonl", b"{oops\n")}, headers=as_user("dana"))
    assert not_json.status_code == 422 and not_json.json()["error"]["field"] == "file"
    job = {"trainer": "runpod", "config": {"method": "dpo", "dataset": "o/d", "model": {"base": "a/b"}},
           "gpu": GPU, "runpod_key": runpod_fake.api_key, "preflight": False}
    no_rejected = upload("prefs.jsonl", [{"prompt": "p", "chosen": "c"}])
    refused = client.post("/api/v1/jobs", json={**job, "dataset": {"upload_id": no_rejected}}, headers=as_user("dana"))
    assert refused.status_code == 422 and "rejected" in refused.json()["error"]["message"]
    good = upload("prefs.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    created = client.post("/api/v1/jobs", json={**job, "dataset": {"upload_id": good}}, headers=as_user("dana"))
    assert created.status_code in (200, 201), created.text
    assert ctx.jobs.require(created.json()["id"]).params["dataset_file"].endswith("dataset.jsonl")


def test_a_training_retried_on_a_new_pod_reads_its_log_from_the_start(ctx: Context, runpod_fake: FakeRunPod) -> None:
    job_id, first_pod, _token = launched(ctx, runpod_fake)
    pod_agent.report(ctx, ctx.jobs.require(job_id), pod_agent.Report(seq=40, phase="training", lines=["step 1/5"]))
    pod_agent.report(ctx, ctx.jobs.require(job_id), pod_agent.Report(
        seq=41, phase="failed", stage="training", exit_code=3, message="out of memory"))
    assert ctx.jobs.require(job_id).state is JobState.FAILED
    assert runpod_fake.pods[first_pod].desired_status == "TERMINATED"  # nothing worth keeping
    control.retry(ctx, job_id)  # the inline dispatcher trains again: a new pod, whose agent counts from 1
    job = ctx.jobs.require(job_id)
    assert job.state is JobState.TRAINING and job.trainer_handle and job.trainer_handle["pod_id"] != first_pod
    pod_agent.report(ctx, job, pod_agent.Report(seq=1, phase="training", lines=["step 2/5 loss: 0.5"]))
    assert ctx.jobs.require(job_id).progress.step == 2
