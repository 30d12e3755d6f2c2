"""LLM fine-tunes on RunPod end to end, as a user runs them: ``hubferry train --trainer runpod -f job.toml``
in a subprocess, ``hubferry serve`` receiving the pod's callbacks, the fake RunPod starting each pod as a
real ``hubferry agent`` process that trains a tiny model on the CPU through trl, publishes from the "pod" to
the test registry, and the orchestrator verifying the commit before it terminates the pod."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import HfApi

from fakes.runpod_server import FakeRunPod
from fixtures.tiny_llm import make_tiny_llm, push_tiny_llm
from hubferry.domain.jobs import JobState
from hubferry.store import JobStore, make_engine
from hubferry.testing import free_port

ROOT = Path(__file__).parents[2]
GPU = "NVIDIA RTX A4000"
BASE_MODEL = "alice/tiny-llama-pod"
ROWS = [
    {"messages": [{"role": "user", "content": "what is the sky"}, {"role": "assistant", "content": "the sky is blue"}]},
    {"messages": [{"role": "user", "content": "what is the sea"}, {"role": "assistant", "content": "the sea is big"}]},
]
DPO_ROWS = [{"prompt": "the sun is", "chosen": "hot", "rejected": "cold"}] * 4


@pytest.fixture(scope="module")
def base_model(registry, alice_token: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    push_tiny_llm(make_tiny_llm(tmp_path_factory.mktemp("tiny")), BASE_MODEL, endpoint=registry.endpoint,
                  token=alice_token)
    return BASE_MODEL


@pytest.fixture()
def env(tmp_path: Path, registry, runpod_fake: FakeRunPod) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBFERRY_", "RUNPOD_"))}
    env.update(HUBFERRY_HOME=str(tmp_path / "home"), HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=registry.endpoint,
               HF_HUB_DISABLE_XET="1", HUBFERRY_RUNPOD_BASE_URL=runpod_fake.url,
               RUNPOD_API_KEY=runpod_fake.api_key, HUBFERRY_POLL_INTERVAL_S="0.5", HUBFERRY_RETRY_BASE_DELAY="0.05",
               HUBFERRY_RECONCILE_INTERVAL_S="1", HUBFERRY_STAGING="local")
    runpod_fake.base_env.update(HUBFERRY_AGENT_REPORT_INTERVAL_S="0.3", HF_HUB_DISABLE_XET="1",
                                HF_HOME=str(tmp_path / "pod-hf"))
    return env


def job_file(tmp_path: Path, repo: str, *, method: str = "sft", rows: list[dict[str, Any]] = ROWS,
             extra: str = "") -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "job.toml"
    path.write_text(f'''method = "{method}"
dataset = "data.jsonl"
{extra}
[model]
base = "{BASE_MODEL}"

[training]
max_steps = 3
learning_rate = 1e-3
per_device_batch_size = 2
gradient_accumulation = 1
max_seq_len = 64

[lora]
r = 4
alpha = 8
dropout = 0.0
target_modules = ["q_proj", "v_proj"]

[output]
repo = "{repo}"
private = false
''')
    return path


def hubferry(*args: str, env: dict[str, str], timeout: float = 240, input: str | None = None,
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hubferry", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, input=input)


@contextmanager
def served(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``hubferry serve`` (API, agent callbacks and an embedded worker) reachable by the pods."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**env, "HUBFERRY_PUBLIC_URL": base}
    server = subprocess.Popen([sys.executable, "-m", "hubferry", "serve", "--port", str(port)], env=env, cwd=ROOT,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "serve did not start"
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        while not list((Path(env["HUBFERRY_HOME"]) / "workers").glob("*.alive")):
            assert time.monotonic() < deadline, "serve's worker did not start"
            time.sleep(0.1)
        yield env
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)
        try:
            _, stderr = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            _, stderr = server.communicate()
        print("hubferry serve's log (its end):\n" + (stderr or "")[-6000:])  # shown by pytest when a test fails


def store(env: dict[str, str]) -> JobStore:
    return JobStore(make_engine(f"sqlite:///{Path(env['HUBFERRY_HOME']) / 'hubferry.db'}"))


def wait_for(check: Callable[[], Any], what: str, timeout: float = 180, fake: FakeRunPod | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    logs = "\n".join(p.log_text()[-3000:] for p in fake.pods.values()) if fake else ""
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def only_pod(fake: FakeRunPod):  # type: ignore[no-untyped-def]
    assert len(fake.pods) == 1, fake.pods
    return next(iter(fake.pods.values()))


def submit(env: dict[str, str], config: Path, *extra: str) -> str:
    result = hubferry("train", "--trainer", "runpod", "-f", str(config), "--gpu", GPU, "--json", *extra, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])["id"]


def test_train_publish_verify_terminate(env, tmp_path: Path, registry, alice_token: str, runpod_fake: FakeRunPod,
                                        base_model: str) -> None:
    repo = "alice/pod-sft"
    with served(env) as served_env:
        result = hubferry("train", "--trainer", "runpod", "-f", str(job_file(tmp_path, repo)), "--gpu", GPU,
                          "--token", alice_token, "--wait", env=served_env)
        pod = only_pod(runpod_fake)
        assert result.returncode == 0, result.stderr + pod.log_text()[-4000:]
    assert "$0.32 per hour" in result.stderr + result.stdout
    jobs = store(env).list_jobs()
    job = jobs[0]
    assert job.state is JobState.PUBLISHED and job.repo_id == repo
    files = set(HfApi(endpoint=registry.endpoint, token=alice_token).list_repo_files(repo, revision=job.commit_sha))
    assert "adapter_model.safetensors" in files and "README.md" in files
    # the pod is gone once the commit was read back, and it never held a Hub token
    wait_for(lambda: pod.desired_status == "TERMINATED", "pod terminated", fake=runpod_fake)
    wait_for(lambda: (store(env).require(job.id).trainer_handle or {}).get("released") == "terminated",
             "the job to record its pod's end", timeout=30)
    assert "HF_TOKEN" not in pod.env_dict and alice_token not in json.dumps(pod.env_dict)
    assert set(pod.env_dict) >= {"HUBFERRY_CALLBACK_URL", "HUBFERRY_JOB_TOKEN", "HUBFERRY_JOB_ID", "HF_ENDPOINT"}
    events = store(env).events(job.id)
    stages = [(e.kind.value, e.stage) for e in events]
    assert ("stage_finished", "training") in stages and ("stage_finished", "verifying") in stages
    log = (Path(env["HUBFERRY_HOME"]) / "logs" / f"{job.id}.log").read_text()
    assert "step" in log and pod.env_dict["HUBFERRY_JOB_TOKEN"] not in log
    shown = hubferry("jobs", "show", job.id, env=env)
    text = shown.stdout + shown.stderr
    assert shown.returncode == 0 and "cost so far $0.00" in text and GPU in text and "terminated" in text, text


def test_token_fixed_while_training(env, tmp_path: Path, registry, alice_token: str, runpod_fake: FakeRunPod,
                                    base_model: str) -> None:
    """The stored token is wrong at launch and fixed while the pod trains: the publish uses the fixed one."""
    bad = "hf_" + "x" * 34
    assert hubferry("secrets", "set", "hf_token", "--value-stdin", env=env, input=bad).returncode == 0
    with served(env) as served_env:
        job_id = submit(served_env, job_file(tmp_path, "alice/pod-fixed"), "--skip-preflight")
        wait_for(lambda: store(env).require(job_id).state is JobState.TRAINING, "training", fake=runpod_fake)
        fixed = hubferry("secrets", "set", "hf_token", "--value-stdin", env=env, input=alice_token)
        assert fixed.returncode == 0, fixed.stderr
        job = wait_for(lambda: (j := store(env).require(job_id)).state in (JobState.PUBLISHED, JobState.FAILED)
                       and j, "the job to end", fake=runpod_fake)
    assert job.state is JobState.PUBLISHED, job.error


def test_publish_refused_in_the_pod_then_retry(env, tmp_path: Path, registry, alice_token: str,
                                               runpod_fake: FakeRunPod, base_model: str) -> None:
    """The Hub refuses the pod's publish: the job does not say published, the pod is stopped (its volume keeps
    the weights), not terminated; after the token is fixed, a retry resumes the pod, which publishes
    without training again."""
    bad = "hf_" + "y" * 34
    assert hubferry("secrets", "set", "hf_token", "--value-stdin", env=env, input=bad).returncode == 0
    with served(env) as served_env:
        job_id = submit(served_env, job_file(tmp_path, "alice/pod-refused"), "--skip-preflight")
        job = wait_for(lambda: (j := store(env).require(job_id)).state is JobState.FAILED and j, "failed",
                       fake=runpod_fake)
        pod = only_pod(runpod_fake)
        assert job.commit_sha is None and job.error is not None and "publish" in job.error.message
        wait_for(lambda: not pod.running and pod.desired_status == "EXITED", "the pod stopped, not terminated",
                 timeout=30, fake=runpod_fake)
        assert hubferry("secrets", "set", "hf_token", "--value-stdin", env=env, input=alice_token).returncode == 0
        retried = hubferry("retry", job_id, env=served_env)
        assert retried.returncode == 0, retried.stderr
        job = wait_for(lambda: (j := store(env).require(job_id)).state in (JobState.PUBLISHED, JobState.FAILED)
                       and j.state is not JobState.FAILED and j, "the retried publish", fake=runpod_fake)
    assert job.state is JobState.PUBLISHED, job.error
    assert pod.launches == 2
    assert sum("stage_started" == e.kind.value and e.stage == "training" for e in store(env).events(job_id)) == 1


def test_capacity_error(env, tmp_path: Path, runpod_fake: FakeRunPod, alice_token: str) -> None:
    runpod_fake.set_capacity(GPU, "SECURE", False)
    with served(env) as served_env:
        job_id = submit(served_env, job_file(tmp_path, "alice/pod-capacity"), "--token", alice_token)
        job = wait_for(lambda: (j := store(env).require(job_id)).state is JobState.FAILED and j, "failed")
    assert job.error is not None and "capacity" in job.error.message.lower()
    assert "--gpu" in job.error.hint and "--cloud-type" in job.error.hint
    assert not runpod_fake.pods


def test_bad_configs_fail_before_any_pod(env, tmp_path: Path, runpod_fake: FakeRunPod, alice_token: str) -> None:
    config = job_file(tmp_path, "alice/pod-bad")
    config.write_text(config.read_text().replace("max_steps = 3", "max_steps = 3\n").replace(
        "[lora]", "[lora]\nnum_epochs = 1"))
    misplaced = hubferry("train", "--trainer", "runpod", "-f", str(config), "--token", alice_token,
                         env={**env, "HUBFERRY_PUBLIC_URL": "http://127.0.0.1:9"})
    assert misplaced.returncode == 2 and "num_epochs" in misplaced.stderr and "training" in misplaced.stderr
    dpo = job_file(tmp_path, "alice/pod-dpo", method="dpo", rows=[{"prompt": "a", "chosen": "b"}])
    no_rejected = hubferry("train", "--trainer", "runpod", "-f", str(dpo), "--token", alice_token,
                           env={**env, "HUBFERRY_PUBLIC_URL": "http://127.0.0.1:9"})
    assert no_rejected.returncode == 2 and "rejected" in no_rejected.stderr
    unknown_gpu = hubferry("train", "--trainer", "runpod", "-f", str(job_file(tmp_path, "alice/pod-gpu")),
                           "--gpu", "NVIDIA H9000", "--token", alice_token,
                           env={**env, "HUBFERRY_PUBLIC_URL": "http://127.0.0.1:9"})
    assert unknown_gpu.returncode == 2 and "H9000" in unknown_gpu.stderr and GPU in unknown_gpu.stderr
    assert not runpod_fake.pods and runpod_fake.calls("podFindAndDeployOnDemand") == 0


def test_cancel_mid_training_terminates_the_pod(env, tmp_path: Path, runpod_fake: FakeRunPod, alice_token: str,
                                                base_model: str) -> None:
    config = job_file(tmp_path, "alice/pod-cancel")
    config.write_text(config.read_text().replace("max_steps = 3", "max_steps = 100000"))
    with served(env) as served_env:
        job_id = submit(served_env, config, "--token", alice_token)
        wait_for(lambda: "step" in (Path(env["HUBFERRY_HOME"]) / "logs" / f"{job_id}.log").read_text()
                 if (Path(env["HUBFERRY_HOME"]) / "logs" / f"{job_id}.log").exists() else False,
                 "training steps", fake=runpod_fake)
        cancelled = hubferry("cancel", job_id, env=served_env)
        assert cancelled.returncode == 0, cancelled.stderr
        pod = only_pod(runpod_fake)
        wait_for(lambda: pod.desired_status == "TERMINATED", "pod terminated", timeout=30, fake=runpod_fake)
    assert store(env).require(job_id).state is JobState.CANCELLED


OWN_IMAGE_SCRIPT = """
import os
from huggingface_hub import HfApi
api = HfApi()  # HF_ENDPOINT and HF_TOKEN come from the pod's environment
api.create_repo(os.environ["HF_REPO_NAME"], exist_ok=True)
api.upload_file(path_or_fileobj=b"weights" * 100, path_in_repo="model.safetensors", repo_id=os.environ["HF_REPO_NAME"])
"""


def test_token_in_env_runs_an_image_of_ones_own(env, tmp_path: Path, registry, alice_token: str,
                                                runpod_fake: FakeRunPod) -> None:
    """The plain contract (HF_TOKEN, HF_REPO_NAME in the pod): no agent reports, the image publishes by itself
    and exits; hubferry finds the new commit, reads it back, and only then says published and terminates."""
    runpod_fake.images["me/own-trainer:1"] = [sys.executable, "-c", OWN_IMAGE_SCRIPT]
    with served(env) as served_env:
        job_id = submit(served_env, job_file(tmp_path, "alice/pod-own"), "--token", alice_token, "--image",
                        "me/own-trainer:1", "--token-in-env")
        job = wait_for(lambda: (j := store(env).require(job_id)).state in (JobState.PUBLISHED, JobState.FAILED)
                       and j, "the job to end", fake=runpod_fake)
        pod = only_pod(runpod_fake)
        assert job.state is JobState.PUBLISHED, (job.error, pod.log_text())
        wait_for(lambda: pod.desired_status == "TERMINATED", "pod terminated", timeout=30, fake=runpod_fake)
    assert pod.env_dict["HF_TOKEN"] == alice_token and pod.env_dict["HF_REPO_NAME"] == "alice/pod-own"
    files = HfApi(endpoint=registry.endpoint, token=alice_token).list_repo_files("alice/pod-own",
                                                                                 revision=job.commit_sha)
    assert "model.safetensors" in files
    events = " ".join(e.message for e in store(env).events(job_id))
    assert "--token-in-env" in events and alice_token not in events


def test_a_hub_dataset_is_checked_before_any_pod(env, tmp_path: Path, registry, alice_token: str,
                                                 runpod_fake: FakeRunPod) -> None:
    api = HfApi(endpoint=registry.endpoint, token=alice_token)
    api.create_repo("alice/prefs-no-rejected", repo_type="dataset", exist_ok=True)
    api.upload_file(path_or_fileobj=b"".join(json.dumps({"prompt": "a", "chosen": "b"}).encode() + b"\n"
                                             for _ in range(3)), path_in_repo="data/train.jsonl",
                    repo_id="alice/prefs-no-rejected", repo_type="dataset")
    config = job_file(tmp_path, "alice/pod-hub-dpo", method="dpo")
    config.write_text(config.read_text().replace('dataset = "data.jsonl"', 'dataset = "alice/prefs-no-rejected"'))
    result = hubferry("train", "--trainer", "runpod", "-f", str(config), "--token", alice_token,
                      env={**env, "HUBFERRY_PUBLIC_URL": "http://127.0.0.1:9"})
    assert result.returncode == 2 and "rejected" in result.stderr and "data/train.jsonl" in result.stderr, result.stderr
    assert runpod_fake.calls("podFindAndDeployOnDemand") == 0
