"""The fake RunPod, driven by the official ``runpod`` 1.12.0 client as hubferry's RunPod trainer drives the real one."""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import requests
import runpod
from runpod.error import AuthenticationError, QueryError

from fakes.runpod_server import FakeRunPod, running_fake_runpod

A100, A4000 = "NVIDIA A100 80GB PCIe", "NVIDIA RTX A4000"
IMAGE = "ghcr.io/acme/pod-script:1"
#: RunPod's answer when no machine matches (the text users report), written out rather than imported.
NO_INSTANCES = ("There are no longer any instances available with the requested specifications. "
                "Please refresh and try again.")

#: A stand-in for the pod agent: records its environment and launch number in HUBFERRY_AGENT_DIR, then
#: exits with $EXIT_CODE, or with MODE=sleep starts a child in its own session and waits (MODE=stubborn:
#: and ignores SIGTERM), or with MODE=selfstop stops its own pod through the API with the pod's key.
AGENT = textwrap.dedent("""
    import json, os, pathlib, signal, subprocess, sys, time
    volume = pathlib.Path(os.environ["HUBFERRY_AGENT_DIR"])
    run = len(list(volume.glob("run-*.json"))) + 1
    (volume / f"run-{run}.json").write_text(json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}))
    print(f"agent run {run}", flush=True)
    mode = os.environ.get("MODE", "exit")
    if mode == "exit":
        sys.exit(int(os.environ.get("EXIT_CODE", "0")))
    if mode == "selfstop":  # what `runpodctl pod stop $RUNPOD_POD_ID` does at the end of a training
        import urllib.request
        query = 'mutation { podStop(input: {podId: "%s"}) { id } }' % os.environ["RUNPOD_POD_ID"]
        urllib.request.urlopen(urllib.request.Request(
            os.environ["RUNPOD_API_BASE_URL"] + "/graphql", data=json.dumps({"query": query}).encode(),
            headers={"Authorization": "Bearer " + os.environ["RUNPOD_API_KEY"], "Content-Type": "application/json"}))
        time.sleep(60)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    (volume / f"child-{run}.pid").write_text(str(child.pid))
    time.sleep(60)
""")


@pytest.fixture
def fake(runpod_fake: FakeRunPod, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeRunPod:
    """The fake with the client pointed at it (default account) and ``IMAGE`` mapped to :data:`AGENT`."""
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    runpod_fake.images[IMAGE] = [sys.executable, str(script)]
    monkeypatch.setenv("RUNPOD_API_BASE_URL", runpod_fake.url)
    monkeypatch.setattr(runpod, "api_key", runpod_fake.api_key)
    return runpod_fake


def create(env: dict[str, str] | None = None, *, image: str = IMAGE, gpu: str = A4000, cloud: str = "SECURE"):
    """``create_pod`` with the arguments hubferry's RunPod trainer passes."""
    return runpod.create_pod(
        name="hubferry-job-1", image_name=image, gpu_type_id=gpu, cloud_type=cloud,
        env={"HUBFERRY_JOB_ID": "job-1", **(env or {})}, container_disk_in_gb=20, volume_in_gb=10,
        docker_args="", ports=None,
    )  # fmt: skip


def record(fake: FakeRunPod, pod_id: str, run: int = 1) -> dict:
    return json.loads((fake.pods[pod_id].volume / f"run-{run}.json").read_text())


def wait_file(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- the pod lifecycle ---------------------------------------------------------------------------


def test_create_runs_the_image_command_with_the_pod_environment(fake, monkeypatch):
    monkeypatch.setenv("WORKER_ONLY_SECRET", "must-not-reach-the-pod")
    fake.base_env["HUBFERRY_HOME"] = "/tmp/pod-home"
    created = create({"HUBFERRY_CALLBACK_URL": "http://127.0.0.1:1/api/v1/agent/jobs/job-1"})

    pod_id = created["id"]
    assert re.fullmatch(r"[a-z0-9]{14}", pod_id)
    assert created["imageName"] == IMAGE and created["machine"]["podHostId"].startswith(f"{pod_id}-")
    assert created["env"] == ["HUBFERRY_JOB_ID=job-1", "HUBFERRY_CALLBACK_URL=http://127.0.0.1:1/api/v1/agent/jobs/job-1"]

    pod = fake.wait_for(pod_id, "EXITED", runtime=False)
    assert (pod.launches, pod.exit_code) == (1, 0)
    env = record(fake, pod_id)["env"]
    assert env["HUBFERRY_CALLBACK_URL"] == "http://127.0.0.1:1/api/v1/agent/jobs/job-1"
    assert env["HUBFERRY_AGENT_DIR"] == str(pod.volume) and env["HUBFERRY_HOME"] == "/tmp/pod-home"
    assert (env["RUNPOD_POD_ID"], env["RUNPOD_GPU_COUNT"], env["RUNPOD_DC_ID"]) == (pod_id, "1", "EU-RO-1")
    assert env["RUNPOD_API_KEY"].startswith("rpa_") and env["RUNPOD_API_KEY"] != fake.api_key
    assert "WORKER_ONLY_SECRET" not in env and env["PATH"] == os.environ["PATH"]
    assert "agent run 1" in pod.log_path.read_text()

    seen = runpod.get_pod(pod_id)
    assert (seen["desiredStatus"], seen["runtime"], seen["costPerHr"]) == ("EXITED", None, 0.32)
    assert (seen["gpuCount"], seen["containerDiskInGb"], seen["volumeInGb"]) == (1, 20, 10)
    assert seen["machine"] == {"gpuDisplayName": "RTX A4000"} and seen["lastStatusChange"].startswith("Exited")
    assert [p["id"] for p in runpod.get_pods()] == [pod_id]


def test_runtime_is_null_until_the_process_starts_then_stop_resume_terminate(fake):
    fake.launch_delay_s = 0.4
    pod_id = create({"MODE": "sleep"}, gpu=A100, cloud="COMMUNITY")["id"]

    early = runpod.get_pod(pod_id)
    assert (early["desiredStatus"], early["runtime"], early["uptimeSeconds"]) == ("RUNNING", None, 0)
    assert early["costPerHr"] == 1.19
    fake.wait_for(pod_id, "RUNNING", runtime=True)
    assert runpod.get_pod(pod_id)["runtime"] == {"ports": []}
    first_child = int(wait_file(fake.pods[pod_id].volume / "child-1.pid"))

    assert runpod.stop_pod(pod_id) == {"id": pod_id, "desiredStatus": "EXITED"}
    pod = fake.pods[pod_id]
    assert pod.exit_code == -15 and gone(first_child)  # SIGTERM, and the container's other processes too
    assert runpod.get_pod(pod_id)["runtime"] is None
    assert runpod.stop_pod(pod_id)["desiredStatus"] == "EXITED"  # stopping a stopped pod changes nothing

    resumed = runpod.resume_pod(pod_id, 1)
    assert (resumed["desiredStatus"], resumed["env"]) == ("RUNNING", ["HUBFERRY_JOB_ID=job-1", "MODE=sleep"])
    fake.wait_for(pod_id, "RUNNING", runtime=True)
    wait_file(pod.volume / "run-2.json")
    assert pod.launches == 2 and (pod.volume / "run-1.json").exists()  # the volume survived the stop
    assert record(fake, pod_id, 2)["env"]["RUNPOD_POD_ID"] == pod_id

    process = pod.process
    assert process is not None
    assert runpod.terminate_pod(pod_id) is None
    assert runpod.get_pod(pod_id) is None and runpod.get_pods() == []
    assert process.poll() is not None and not pod.volume.exists()
    assert "agent run 2" in pod.log_text()  # the log outlives the pod, for failing tests to print
    with pytest.raises(QueryError, match=f"Pod not found: {pod_id}"):
        runpod.resume_pod(pod_id, 1)


def test_a_pod_whose_command_exits_is_exited_not_terminated_and_resumes_with_its_volume(fake):
    pod_id = create({"EXIT_CODE": "3"})["id"]
    pod = fake.wait_for(pod_id, "EXITED")
    assert pod.exit_code == 3 and runpod.get_pod(pod_id)["desiredStatus"] == "EXITED"
    (pod.container_dir / "scratch").write_text("container disk")

    runpod.resume_pod(pod_id, 1)
    fake.wait_for(pod_id, "EXITED")
    assert pod.launches == 2 and sorted(p.name for p in pod.volume.glob("run-*.json")) == ["run-1.json", "run-2.json"]
    assert not (pod.container_dir / "scratch").exists()  # the container disk does not survive a stop


def test_stop_kills_a_process_that_ignores_sigterm_after_the_grace(fake):
    fake.stop_grace_s = 0.3
    pod_id = create({"MODE": "stubborn"})["id"]
    child = int(wait_file(fake.pods[pod_id].volume / "child-1.pid"))
    started = time.monotonic()
    runpod.stop_pod(pod_id)
    assert 0.3 <= time.monotonic() - started < 5
    assert fake.pods[pod_id].exit_code == -9 and gone(child)


def test_a_crashed_agent_leaves_an_exited_pod(fake):
    pod_id = create({"MODE": "sleep"})["id"]
    child = int(wait_file(fake.pods[pod_id].volume / "child-1.pid"))
    fake.kill_process(pod_id)
    seen = runpod.get_pod(pod_id)
    assert (seen["desiredStatus"], seen["runtime"], fake.pods[pod_id].exit_code) == ("EXITED", None, -9)
    assert gone(child)


def test_a_pod_can_stop_itself_with_its_own_key(fake):
    pod_id = create({"MODE": "selfstop"})["id"]
    pod = fake.wait_for(pod_id, "EXITED")
    assert pod.exit_code == -15 and runpod.get_pod(pod_id)["lastStatusChange"].startswith("Stopped by User")
    pod_key = record(fake, pod_id)["env"]["RUNPOD_API_KEY"]
    assert [(c.fields, c.key) for c in fake.requests if c.key != fake.api_key] == [(("podStop",), pod_key)]


def test_hubferry_images_run_the_pod_agent_by_default(fake):
    pod_id = create(image="ghcr.io/acme/hubferry-pod:0.1")["id"]
    assert fake.pods[pod_id].events[0] == f"launched: {[sys.executable, '-m', 'hubferry', 'agent']}"
    assert fake.pods[pod_id].launch_env["HUBFERRY_HOME"].startswith(str(fake.root))  # not the engineer's own
    assert fake.pods[pod_id].launch_env["RUNPOD_API_BASE_URL"] == fake.url


def test_an_unknown_image_never_gets_a_runtime(fake):
    pod_id = create(image="docker.io/someone/unknown:latest")["id"]
    time.sleep(0.2)
    seen = runpod.get_pod(pod_id)
    assert (seen["desiredStatus"], seen["runtime"]) == ("RUNNING", None)
    assert fake.pods[pod_id].launches == 0
    assert any("image pull failed" in event for event in fake.pods[pod_id].events)


def test_cpu_pods_run_too(fake):
    created = runpod.create_pod("cpu-job", IMAGE, env={"X": "1"})
    pod = fake.wait_for(created["id"], "EXITED")
    assert record(fake, pod.id)["env"]["RUNPOD_GPU_COUNT"] == "0"
    assert runpod.get_pod(pod.id)["machine"] == {"gpuDisplayName": None}
    assert fake.calls("deployCpuPod") == 1 and fake.calls("gpuTypes") == 0


def test_leaving_the_fake_kills_every_pod_process(tmp_path, monkeypatch):
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    with running_fake_runpod(tmp_path / "rp") as inner:
        inner.images[IMAGE] = [sys.executable, str(script)]
        monkeypatch.setenv("RUNPOD_API_BASE_URL", inner.url)
        monkeypatch.setattr(runpod, "api_key", inner.api_key)
        pod_id = create({"MODE": "stubborn"})["id"]
        child = int(wait_file(inner.pods[pod_id].volume / "child-1.pid"))
        process = inner.pods[pod_id].process
    assert process is not None and process.poll() == -9 and gone(child)


# -- the GPU catalog and capacity ----------------------------------------------------------------


def test_gpu_catalog_prices_and_unknown_ids(fake):
    a100 = runpod.get_gpu(A100)
    assert (a100["securePrice"], a100["communityPrice"], a100["memoryInGb"]) == (1.64, 1.19, 80)
    assert a100["lowestPrice"]["uninterruptablePrice"] == 1.19
    assert {A100, A4000, "NVIDIA GeForce RTX 4090"} <= {g["id"] for g in runpod.get_gpus()}
    with pytest.raises(ValueError, match="No GPU found with the specified ID"):
        runpod.get_gpu("unknown")

    fake.gpus[A100].community_price = 0.99
    fake.set_capacity(A100, "COMMUNITY", False)
    assert runpod.get_gpu(A100)["lowestPrice"]["uninterruptablePrice"] == 1.64
    assert runpod.get_gpu(A100)["communityPrice"] == 0.99
    assert runpod.get_gpu(A100, gpu_quantity=16)["lowestPrice"]["uninterruptablePrice"] is None


def test_capacity_errors_carry_runpods_own_words(fake):
    fake.set_capacity(A100, "SECURE", False)
    with pytest.raises(QueryError) as caught:
        create(gpu=A100, cloud="SECURE")
    assert str(caught.value) == NO_INSTANCES and fake.pods == {}

    pod = create(gpu=A100, cloud="ALL")  # ALL falls back to the community cloud
    assert runpod.get_pod(pod["id"])["costPerHr"] == 1.19
    fake.set_capacity(A100, "COMMUNITY", False)
    with pytest.raises(QueryError, match="no longer any instances"):
        create(gpu=A100, cloud="ALL")

    fake.wait_for(pod["id"], "EXITED")
    with pytest.raises(QueryError, match="not enough free GPUs"):
        runpod.resume_pod(pod["id"], 1)


def test_unknown_gpu_is_refused_by_the_client_before_any_deploy(fake):
    with pytest.raises(ValueError, match="No GPU found"):
        create(gpu="NVIDIA B9000")
    assert fake.calls("gpuTypes") == 1 and fake.calls("podFindAndDeployOnDemand") == 0


# -- keys, accounts, errors and faults -----------------------------------------------------------


def test_bad_or_missing_keys_are_401(fake, monkeypatch):
    monkeypatch.setattr(runpod, "api_key", "rpa_NOT0A0KEY0OF0THE0FAKE")
    with pytest.raises(AuthenticationError, match="Unauthorized request"):
        runpod.get_pods()
    assert (fake.requests[-1].status, fake.requests[-1].key, fake.requests[-1].fields) == (
        401, "rpa_NOT0A0KEY0OF0THE0FAKE", ("myself",))
    answer = requests.post(f"{fake.url}/graphql", json={"query": "{ myself { id } }"}, timeout=10)
    assert answer.status_code == 401 and "rpa_" not in answer.text
    assert fake.pods == {}


def test_accounts_see_only_their_own_pods(fake):
    pod_id = create({"MODE": "sleep"})["id"]
    bob = fake.add_account()
    assert runpod.get_pod(pod_id, api_key=bob.key) is None
    assert runpod.get_pods(api_key=bob.key) == []
    assert runpod.get_user(api_key=bob.key)["id"] == bob.id != fake.default_account.id
    runpod.api_key = bob.key
    for action in (runpod.stop_pod, runpod.terminate_pod):
        with pytest.raises(QueryError, match="Pod not found"):
            action(pod_id)
    assert fake.pods[pod_id].running

    wait_file(fake.pods[pod_id].volume / "run-1.json")
    pod_key = record(fake, pod_id)["env"]["RUNPOD_API_KEY"]
    assert [p["id"] for p in runpod.get_pods(api_key=pod_key)] == [pod_id]  # the pod's key is its owner's


def test_an_env_value_with_a_quote_is_a_graphql_syntax_error(fake):
    with pytest.raises(QueryError, match="^Syntax Error: Unterminated string.$") as caught:
        create({"HF_TOKEN": 'hf_"quoted'})
    assert 'hf_"quoted' in caught.value.query  # the client keeps the whole text, env values included
    with pytest.raises(QueryError, match="^Syntax Error: Expected "):
        create({"NOTE": 'say "hi"'})
    deploys = [c.status for c in fake.requests if c.fields != ("gpuTypes",)]
    assert fake.pods == {} and deploys == [400, 400]


def test_schema_rejects_fields_it_does_not_have(fake):
    answer = requests.post(f"{fake.url}/graphql", json={"query": "{ myself { id balance } }"},
                           headers={"Authorization": f"Bearer {fake.api_key}"}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["message"] == "Cannot query field 'balance' on type 'User'."


def test_injected_faults_answer_non_json_then_the_api_recovers(fake):
    fake.fail_next(1)
    with pytest.raises(requests.exceptions.JSONDecodeError):
        runpod.get_pods()
    assert runpod.get_pods() == []
    assert [(c.operation, c.status, c.injected) for c in fake.requests] == [("myPods", 502, True),
                                                                            ("myPods", 200, False)]

    fake.fail_next(2, status=503, body="upstream timeout", content_type="text/plain")
    for _ in range(2):
        with pytest.raises(requests.exceptions.JSONDecodeError):
            runpod.get_gpu(A4000)
    assert runpod.get_gpu(A4000)["id"] == A4000


def test_the_request_log_names_each_operation_and_key(fake):
    pod_id = create()["id"]
    runpod.get_pod(pod_id)
    assert [(c.operation, c.fields) for c in fake.requests] == [
        ("GpuTypes", ("gpuTypes",)), (None, ("podFindAndDeployOnDemand",)), ("pod", ("pod",))]
    assert {c.key for c in fake.requests} == {fake.api_key}


def test_an_env_name_no_process_can_have_is_refused_by_name(fake):
    with pytest.raises(QueryError, match="'A=B' cannot be an environment variable"):
        create({"A=B": "1"})
    assert fake.pods == {}
