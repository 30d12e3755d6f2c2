"""The FLUX LoRA on Replicate flow end to end, as a user runs it: ``hubferry train --trainer replicate`` in a
subprocess against the fake Replicate and the test registry, from a folder of photos to a published,
verified LoRA; with webhooks (``hubferry serve``) and without (polling); failures, cancel, a killed
worker, adoption, a cut download, bad inputs, job files and how fast a finished training is published."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download

from fakes.replicate_server import FakeReplicate
from fakes.replicate_webhooks import new_secret, sign
from hubferry.dataset.testing import photos
from hubferry.domain.jobs import EventKind, Job, JobEvent, JobState
from hubferry.store import JobStore, make_engine
from hubferry.testing import free_port

ROOT = Path(__file__).parents[2]
TRIGGER = "hbfyperson"
STEPS = 20
LORA_MEMBER = "output/flux_train_replicate/lora.safetensors"
POLL_S = 0.2


# -- helpers --------------------------------------------------------------------------------------------


@pytest.fixture()
def fake(fake_replicate: FakeReplicate) -> FakeReplicate:
    """The fake Replicate with short trainings (20 steps at 50 steps/s: under a second from boot to success);
    tests that watch progress slow them down (:func:`watchable`)."""
    fake_replicate.knobs.steps_per_second = 50.0
    fake_replicate.knobs.boot_s = 0.2
    fake_replicate.knobs.setup_s = 0.2
    return fake_replicate


def watchable(fake: FakeReplicate, steps_per_second: float = 10.0) -> FakeReplicate:
    """Trainings slow enough to be seen moving (20 steps at 10 steps/s: about 2.5 s)."""
    fake.knobs.steps_per_second = steps_per_second
    return fake


@pytest.fixture()
def env(tmp_path: Path, registry, alice_token: str, fake: FakeReplicate) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUBFERRY_", "REPLICATE_"))}
    env.update(HUBFERRY_HOME=str(tmp_path / "home"), HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=registry.endpoint,
               HF_TOKEN=alice_token, HF_HUB_DISABLE_XET="1", HUBFERRY_REPLICATE_BASE_URL=fake.base_url,
               REPLICATE_API_TOKEN=fake.token, HUBFERRY_POLL_INTERVAL_S=str(POLL_S),
               HUBFERRY_RETRY_BASE_DELAY="0.05", HUBFERRY_RECONCILE_INTERVAL_S="1")
    return env


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    photos(folder, 4, size=(512, 512))
    return folder


def hubferry(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hubferry", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def spawn(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hubferry", *args], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def stop(process: subprocess.Popen[str], sig: int = signal.SIGINT) -> str:
    """Stop a spawned process group; returns its stderr."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
    return stderr or ""


def train_args(images: Path, repo: str, *extra: str) -> list[str]:
    return ["train", "--trainer", "replicate", "--images", str(images), "--trigger-word", TRIGGER,
            "--steps", str(STEPS), "--repo", repo, *extra]


def last_json(stdout: str) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    assert lines, "nothing on stdout"
    return json.loads(lines[-1])


class Store:
    """The job database of a ``HUBFERRY_HOME``, read from the test (the subprocesses write it)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.path = Path(env["HUBFERRY_HOME"]) / "hubferry.db"
        self._jobs: JobStore | None = None

    @property
    def jobs(self) -> JobStore:
        if self._jobs is None:
            self._jobs = JobStore(make_engine(f"sqlite:///{self.path}"))
        return self._jobs

    def only_job(self) -> Job | None:
        if not self.path.exists():
            return None
        try:
            found = self.jobs.list_jobs(limit=2)
        except Exception:  # noqa: BLE001 - the schema is being created by the subprocess
            return None
        assert len(found) <= 1, found
        return found[0] if found else None

    def wait(self, until: Callable[[Job], bool], what: str, timeout: float = 30.0,
             job_id: str | None = None) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = self.jobs.get(job_id) if job_id else self.only_job()
            if job is not None and until(job):
                return job
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {job}"
            time.sleep(0.05)


def weights_tar(fake: FakeReplicate, training_id: str) -> tarfile.TarFile:
    url = fake.training(training_id)["output"]["weights"]
    data = fake.delivery(url.rstrip("/").split("/")[-2])
    assert data is not None
    return tarfile.open(fileobj=io.BytesIO(data))


def member_sha256(tar: tarfile.TarFile, name: str) -> str:
    extracted = tar.extractfile(name)
    assert extracted is not None
    return hashlib.sha256(extracted.read()).hexdigest()


@dataclass(frozen=True)
class Outcome:
    """What a finished job says about itself (from ``--json`` or the job store)."""

    id: str
    state: str
    repo_id: str
    commit_sha: str | None
    training_id: str
    dataset_sha256: str | None

    @classmethod
    def from_json(cls, job: dict[str, Any]) -> Outcome:
        started = next(e for e in job["timeline"] if e["kind"] == "stage_started" and e["stage"] == "training")
        return cls(job["id"], job["state"], job["repo_id"], job["commit_sha"], started["context"]["training_id"],
                   (job["dataset_report"] or {}).get("sha256"))

    @classmethod
    def from_store(cls, store: Store, job_id: str) -> Outcome:
        job = store.jobs.require(job_id)
        started = next(e for e in store.jobs.events(job_id)
                       if e.kind is EventKind.STAGE_STARTED and e.stage == "training")
        return cls(job.id, job.state.value, job.repo_id, job.commit_sha, started.context["training_id"],
                   (job.params.get("dataset_report") or {}).get("sha256"))


def assert_published_lora(registry, token: str, fake: FakeReplicate, job: Outcome, tmp_path: Path, *,
                          steps: int = STEPS, trigger: str | None = TRIGGER) -> str:
    """The repo holds the LoRA of the job's training (same bytes), its config and a FLUX card, in exactly
    one hubferry commit, the job's; returns the card."""
    assert job.state == "published", job
    api = HfApi(endpoint=registry.endpoint, token=token)
    assert set(api.list_repo_files(job.repo_id)) - {".gitattributes"} == {
        "lora.safetensors", "config.yaml", "README.md"}
    tar = weights_tar(fake, job.training_id)
    cache = tmp_path / f"download-{job.repo_id.replace('/', '-')}"

    def download(name: str) -> Path:
        return Path(hf_hub_download(job.repo_id, name, endpoint=registry.endpoint, token=token, cache_dir=cache))

    assert hashlib.sha256(download("lora.safetensors").read_bytes()).hexdigest() == member_sha256(tar, LORA_MEMBER)
    assert hashlib.sha256(download("config.yaml").read_bytes()).hexdigest() == member_sha256(
        tar, "output/flux_train_replicate/config.yaml")
    card = download("README.md").read_text()
    assert "black-forest-labs/FLUX.1-dev" in card
    assert "load_lora_weights" in card
    assert f"| steps | {steps} |" in card, card
    if trigger:
        assert trigger in card
    if job.dataset_sha256:
        assert job.dataset_sha256 in card
    commits = api.list_repo_commits(job.repo_id)
    ours = [c for c in commits if "hubferry job" in c.title]
    assert len(ours) == 1 and f"(hubferry job {job.id})" in ours[0].title, [c.title for c in commits]
    assert commits[0].commit_id == job.commit_sha
    return card


@contextmanager
def served(env: dict[str, str], *, public: bool) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[str]]]:
    """``hubferry serve`` (API + embedded worker) on a free port; with ``public`` webhooks point at it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**env, **({"HUBFERRY_PUBLIC_URL": base} if public else {})}
    server = spawn("serve", "--port", str(port), env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "serve did not start"
            try:
                if httpx.get(f"{base}/api/health", timeout=1).json() == {"status": "ok"}:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        while not list((Path(env["HUBFERRY_HOME"]) / "workers").glob("*.alive")):
            assert time.monotonic() < deadline, "serve's worker did not start"
            time.sleep(0.05)
        yield base, env, server
    finally:
        stop(server)


def event_at(events: list[JobEvent], match: Callable[[JobEvent], bool]) -> datetime:
    return next(e.at for e in events if match(e))


def training_finished(e: JobEvent) -> bool:
    return e.kind is EventKind.STAGE_FINISHED and e.stage == "training"


def upload_started(e: JobEvent) -> bool:
    return e.kind is EventKind.NOTICE and e.message == "upload started"


def fake_time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# -- 1. the whole flow from the CLI ---------------------------------------------------------------------


def test_images_folder_to_a_published_verified_lora(env, images, fake, registry, alice_token, tmp_path):
    watchable(fake)
    store = Store(env)
    process = spawn(*train_args(images, "alice/flux-cli", "--wait", "--json"), env=env)
    seen: list[tuple[str, float | None, int | None, float | None]] = []
    try:
        while process.poll() is None:
            job = store.only_job()
            if job is not None and job.state is JobState.TRAINING:
                p = job.progress
                if not seen or seen[-1][1:] != (p.percent, p.step, p.loss):
                    seen.append((job.state.value, p.percent, p.step, p.loss))
            time.sleep(0.05)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        stop(process)
    assert process.returncode == 0, stderr
    job = last_json(stdout)
    assert job["state"] == "published"
    assert re.search(r"^published and verified: ", stderr, re.MULTILINE), stderr  # on its own line, not run on

    # progress moved while training: several observations, step and percent rising, the loss parsed
    steps = [s for _, _, s, _ in seen if s is not None]
    assert len(set(steps)) >= 2 and steps == sorted(steps), seen
    percents = [p for _, p, s, _ in seen if p is not None and s is not None]
    assert percents == sorted(percents) and 5 <= percents[0] < percents[-1] <= 95, seen  # the training band
    assert any(loss is not None and 0.2 < loss < 0.6 for *_, loss in seen), seen

    training = fake.trainings()[0]
    assert training["status"] == "succeeded" and training["input"]["steps"] == STEPS
    assert training["input"]["trigger_word"] == TRIGGER
    started = next(e for e in job["timeline"] if e["kind"] == "stage_started" and e["stage"] == "training")
    assert started["context"]["web_url"] == f"https://replicate.com/p/{training['id']}"
    assert job["dataset_report"]["sha256"] and len(job["dataset_report"]["images"]) == 4
    assert_published_lora(registry, alice_token, fake, Outcome.from_json(job), tmp_path)
    log = hubferry("logs", "show", job["id"], "--lines", "1000", env=env)
    assert f"| {STEPS}/{STEPS}" in log.stdout and "Extracted" in log.stdout


# -- 2 and 11. on `hubferry serve`, with webhooks and without; how soon a finished training is published --


def test_served_with_webhooks_publishes_on_the_completed_webhook(env, images, fake, registry, alice_token,
                                                                tmp_path):
    # no polling to speak of: only the webhook can make this job publish in time
    env = {**env, "HUBFERRY_POLL_INTERVAL_S": "600"}
    watchable(fake)
    fake.webhooks.duplicate_completed = True
    store = Store(env)
    with served(env, public=True) as (base, env, _server):
        result = hubferry(*train_args(images, "alice/flux-hooked", "--json"), env=env)
        assert result.returncode == 0, result.stderr
        assert "queued for the workers" in result.stderr
        job_id = last_json(result.stdout)["id"]
        job = store.wait(lambda j: j.state in (JobState.PUBLISHED, JobState.FAILED), "published", job_id=job_id)
        assert fake.webhooks.wait_idle()
    assert job.state is JobState.PUBLISHED, job.error
    attempts = fake.webhook_attempts
    assert {a.event for a in attempts} >= {"start", "logs", "completed"}
    assert all(a.status is not None and 200 <= a.status < 300 for a in attempts), [
        (a.event, a.status, a.error) for a in attempts]
    assert all(f"{base}/webhooks/replicate?job={job_id}" == a.url for a in attempts)
    duplicates = [a for a in attempts if a.duplicate]
    assert len(duplicates) == 1  # the completed message came twice: answered, ignored
    # progress webhooks add no reads to the polls' (none at a 600 s interval): hubferry read the training when
    # it had never read it (start webhook, maybe the first logs one), then on the completed one
    training_id = fake.trainings()[0]["id"]
    logs_webhooks = sum(a.event == "logs" for a in attempts)
    reads = fake.calls(method="GET", route="/v1/trainings/{training_id}", training_id=training_id)
    print(f"\n{logs_webhooks} logs webhooks, {reads} reads of the training")
    assert logs_webhooks >= 4 and reads <= 3
    assert_published_lora(registry, alice_token, fake, Outcome.from_store(store, job_id), tmp_path)

    events = store.jobs.events(job_id)
    completed = next(a for a in attempts if a.event == "completed" and not a.duplicate)
    finished_at = fake_time(fake.trainings()[0]["completed_at"])
    lag = event_at(events, upload_started).timestamp() - completed.at
    print(f"\nwebhooks: completed at Replicate -> webhook sent {completed.at - finished_at:.3f} s, "
          f"webhook -> training finished (weights downloaded) "
          f"{event_at(events, training_finished).timestamp() - completed.at:.3f} s, "
          f"webhook -> upload started {lag:.3f} s")
    assert lag <= 1.0


def test_served_without_webhooks_publishes_within_a_poll_interval(env, images, fake, registry, alice_token,
                                                                 tmp_path):
    poll_s = 0.5
    env = {**env, "HUBFERRY_POLL_INTERVAL_S": str(poll_s)}
    watchable(fake)
    store = Store(env)
    with served(env, public=False) as (_base, env, _server):
        result = hubferry(*train_args(images, "alice/flux-polled", "--json"), env=env)
        assert result.returncode == 0, result.stderr
        job_id = last_json(result.stdout)["id"]
        job = store.wait(lambda j: j.state in (JobState.PUBLISHED, JobState.FAILED), "published", job_id=job_id)
    assert job.state is JobState.PUBLISHED, job.error
    assert fake.webhook_attempts == []
    training = fake.trainings()[0]
    assert "webhook" not in training["input"]
    assert_published_lora(registry, alice_token, fake, Outcome.from_store(store, job_id), tmp_path)
    events = store.jobs.events(job_id)
    lag = event_at(events, upload_started).timestamp() - fake_time(training["completed_at"])
    reads = [c.at for c in fake.requests if c.method == "GET" and c.training_id == training["id"]]
    gaps = [b - a for a, b in zip(reads, reads[1:], strict=False)]
    print(f"\npolling every {poll_s} s: completed at Replicate -> upload started {lag:.3f} s; "
          f"{len(reads)} reads of the training, {min(gaps):.3f} s apart at least")
    assert lag <= poll_s + 0.5
    assert min(gaps) >= poll_s - 0.1  # at most one provider call per poll interval, the weights download included


# -- 3. webhooks that must not move a job -----------------------------------------------------------------


def test_forged_replayed_stale_and_malformed_webhooks_change_nothing(env, images, fake, registry, alice_token,
                                                                     tmp_path):
    env = {**env, "HUBFERRY_POLL_INTERVAL_S": "600"}  # only webhooks move this job
    fake.knobs.hold_starting = True  # the training waits until released: the job sits in `training`
    store = Store(env)
    with served(env, public=True) as (base, env, _server):
        result = hubferry(*train_args(images, "alice/flux-guarded", "--json"), env=env)
        assert result.returncode == 0, result.stderr
        job_id = last_json(result.stdout)["id"]
        job = store.wait(lambda j: j.state is JobState.TRAINING, "training", job_id=job_id)
        assert fake.webhooks.wait_idle()
        training = fake.trainings()[0]
        url = f"{base}/webhooks/replicate?job={job_id}"
        body = json.dumps({**training, "status": "succeeded"})  # what a forger would love to say
        now = str(int(time.time()))

        def post(content: str | bytes, headers: dict[str, str], target: str = url) -> httpx.Response:
            return httpx.post(target, content=content, headers={"content-type": "application/json", **headers},
                              timeout=10)

        def signed(content: str, msg_id: str, timestamp: str = now, key: str = fake.webhook_secret) -> dict[str, str]:
            return {"webhook-id": msg_id, "webhook-timestamp": timestamp,
                    "webhook-signature": sign(key, msg_id, timestamp, content)}

        before = store.jobs.require(job_id)
        events_before = len(store.jobs.events(job_id))
        reads_before = fake.calls(method="GET", training_id=training["id"])
        secret_reads_before = fake.calls(route="/v1/webhooks/default/secret")
        other = dict(training, id="zz4ibbonubfz7carwiefibzgga")
        refused = {
            "forged (another secret)": post(body, signed(body, "msg_forged", key=new_secret())),
            "stale timestamp": post(body, signed(body, "msg_stale", str(int(time.time()) - 3600))),
            "from the future": post(body, signed(body, "msg_future", str(int(time.time()) + 3600))),
            "missing headers": post(body, {}),
            "missing signature": post(body, {"webhook-id": "msg_x", "webhook-timestamp": now}),
            "garbled signature": post(body, {**signed(body, "msg_g"), "webhook-signature": "v1"}),
            "non-numeric timestamp": post(body, {**signed(body, "msg_t"), "webhook-timestamp": "soon"}),
            "malformed JSON": post("{not json", signed("{not json", "msg_json")),
            "JSON that is not a training": post("[1, 2]", signed("[1, 2]", "msg_list")),
            "not UTF-8": post(b"\xff\xfe", {**signed("x", "msg_bytes")}),
            "another training's body": post(json.dumps(other), signed(json.dumps(other), "msg_other")),
            "no job named": post(body, signed(body, "msg_nojob"), target=f"{base}/webhooks/replicate"),
            "an unknown job": post(body, signed(body, "msg_unknown"), target=url.replace(job_id, "job_nosuchjob00")),
        }
        for what, response in refused.items():
            assert 400 <= response.status_code < 500, (what, response.status_code, response.text)
        assert refused["malformed JSON"].status_code == 400 and "not JSON" in refused["malformed JSON"].text
        assert refused["forged (another secret)"].status_code == 401
        # a forger's flood costs at most one read of the signing secret from Replicate
        assert fake.calls(route="/v1/webhooks/default/secret") - secret_reads_before <= 1
        time.sleep(1.0)  # whatever a task would have done, it has done
        after = store.jobs.require(job_id)
        assert (after.state, after.progress, after.log_cursor, after.observed_at) == (
            before.state, before.progress, before.log_cursor, before.observed_at)
        assert len(store.jobs.events(job_id)) == events_before
        assert fake.calls(method="GET", training_id=training["id"]) == reads_before  # no read of the training

        # a genuine delivery is accepted and read once; the same message again (a replay) is acknowledged, ignored
        genuine = json.dumps(fake.training(training["id"]))
        first = post(genuine, signed(genuine, "msg_genuine"))
        assert first.status_code == 202, first.text
        replayed = post(genuine, signed(genuine, "msg_genuine"))
        assert replayed.status_code == 200 and replayed.json() == {"status": "duplicate ignored"}
        time.sleep(1.0)
        assert fake.calls(method="GET", training_id=training["id"]) == reads_before + 1
        assert store.jobs.require(job_id).state is JobState.TRAINING

        # then the real thing, after the worker sat idle: released, trained, the completed webhook delivered
        # twice (same webhook-id), published once, soon after the first delivery
        fake.webhooks.duplicate_completed = True
        fake.release(training["id"])
        job = store.wait(lambda j: j.state in (JobState.PUBLISHED, JobState.FAILED), "published", job_id=job_id)
        assert fake.webhooks.wait_idle()
    assert job.state is JobState.PUBLISHED, job.error
    completed = [a for a in fake.webhook_attempts if a.event == "completed"]
    assert len(completed) == 2 and len({a.webhook_id for a in completed}) == 1 and all(a.ok for a in completed)
    assert_published_lora(registry, alice_token, fake, Outcome.from_store(store, job_id), tmp_path)
    lag = event_at(store.jobs.events(job_id), upload_started).timestamp() - completed[0].at
    print(f"\nwebhooks, idle worker: completed webhook -> upload started {lag:.3f} s")
    assert lag <= 1.0


# -- 4. a failed training ---------------------------------------------------------------------------------


def test_a_failed_training_fails_the_job_with_the_providers_error_and_publishes_nothing(env, images, fake,
                                                                                       registry, alice_token):
    fake.knobs.fail_at_step = 5
    fake.knobs.fail_error = "CUDA out of memory. Tried to allocate 2.00 GiB"
    result = hubferry(*train_args(images, "alice/flux-oom", "--wait", "--json"), env=env)
    assert result.returncode == 1, result.stderr
    job = last_json(result.stdout)
    assert job["state"] == "failed" and job["error"]["category"] == "training_error"
    message = job["error"]["message"]
    assert "the Replicate training failed: CUDA out of memory" in message
    assert "Last lines of the log" in message and "RuntimeError: CUDA out of memory" in message
    assert "5/20" in message  # the log tail shows where it stopped
    assert "hubferry logs show" in job["error"]["hint"]
    assert "CUDA out of memory" in result.stderr and "Traceback (most recent" not in result.stderr.split(
        "Last lines")[0]
    assert fake.trainings()[0]["status"] == "failed"
    assert not HfApi(endpoint=registry.endpoint, token=alice_token).repo_exists("alice/flux-oom")


# -- 5. cancel --------------------------------------------------------------------------------------------


def test_cancel_mid_training_cancels_it_at_replicate(env, images, fake, registry, alice_token):
    watchable(fake, 2.0)  # 10 s of training: time to cancel
    store = Store(env)
    process = spawn(*train_args(images, "alice/flux-cancelled", "--wait", "--json"), env=env)
    try:
        job = store.wait(lambda j: j.state is JobState.TRAINING and (j.progress.step or 0) >= 2, "step 2")
        fake.set_speed(0)  # still mid-way when the cancel arrives, however slow this machine is
        assert fake.trainings()[0]["status"] == "processing"
        cancelled = hubferry("cancel", job.id, env=env)
        assert cancelled.returncode == 0, cancelled.stderr
        stdout, stderr = process.communicate(timeout=60)
    finally:
        stop(process)
    assert process.returncode == 1, stderr
    assert last_json(stdout)["state"] == "cancelled"
    training = fake.trainings()[0]
    assert training["status"] == "canceled"
    assert fake.calls(method="POST", route="/v1/trainings/{training_id}/cancel") == 1
    final = store.jobs.require(job.id)
    assert final.state is JobState.CANCELLED and final.commit_sha is None
    assert not HfApi(endpoint=registry.endpoint, token=alice_token).repo_exists("alice/flux-cancelled")


# -- 6. a worker killed while its training runs -------------------------------------------------------------


def test_a_worker_killed_during_training_publishes_once_after_a_restart(env, images, fake, registry, alice_token,
                                                                       tmp_path):
    watchable(fake, 4.0)  # 5 s of training: time to kill the worker in the middle
    store = Store(env)
    worker = spawn("worker", env=env)
    try:
        deadline = time.monotonic() + 30
        while not list((Path(env["HUBFERRY_HOME"]) / "workers").glob("*.alive")):
            assert time.monotonic() < deadline and worker.poll() is None, "the worker did not start"
            time.sleep(0.05)
        result = hubferry(*train_args(images, "alice/flux-survivor", "--json"), env=env)
        assert result.returncode == 0 and "queued for the workers" in result.stderr, result.stderr
        job_id = last_json(result.stdout)["id"]
        store.wait(lambda j: (j.progress.step or 0) >= 1, "training progress", job_id=job_id)
        fake.set_speed(0)  # the training stands still until the worker is dead, however slow this machine is
    finally:
        stop(worker, signal.SIGKILL)
    training = fake.trainings()[0]
    assert training["status"] == "processing"
    fake.set_speed(10)
    fake.wait_for(training["id"], "succeeded", timeout=30)
    assert store.jobs.require(job_id).state is JobState.TRAINING  # nobody was there to see it end

    worker = spawn("worker", env=env)
    try:
        job = store.wait(lambda j: j.state in (JobState.PUBLISHED, JobState.FAILED), "published", timeout=60,
                         job_id=job_id)
    finally:
        stop(worker)
    assert job.state is JobState.PUBLISHED, job.error
    assert len(fake.trainings()) == 1  # not trained again
    assert_published_lora(registry, alice_token, fake, Outcome.from_store(store, job_id), tmp_path)


# -- 7. adopt a training started elsewhere --------------------------------------------------------------------


def test_adopt_a_training_started_with_the_replicate_client(env, fake, replicate_client, dataset_zip, registry,
                                                           alice_token, tmp_path):
    from fakes.replicate_schema import TRAINER_NAME, TRAINER_OWNER, TRAINER_VERSION

    fake.add_model("alice", "adopted-model")
    with dataset_zip.open("rb") as data:
        training = replicate_client.trainings.create(
            model=f"{TRAINER_OWNER}/{TRAINER_NAME}", version=TRAINER_VERSION, destination="alice/adopted-model",
            input={"input_images": data, "steps": 30, "trigger_word": "adoptme"})
    fake.hold(training.id)  # still running when it is adopted, however fast the fake is
    result = hubferry("adopt", "replicate", training.id, "--repo", "alice/adopted", "--json", env=env)
    assert result.returncode == 0, result.stderr
    job = last_json(result.stdout)
    assert job["state"] == "training" and job["repo_id"] == "alice/adopted"
    again = hubferry("adopt", "replicate", training.id, env=env)
    assert again.returncode == 2 and "already tracked" in again.stderr

    fake.release(training.id)
    watched = hubferry("watch", job["id"], env=env)
    assert watched.returncode == 0, watched.stderr
    assert "published and verified" in watched.stderr
    store = Store(env)
    outcome = Outcome.from_store(store, job["id"])
    assert outcome.training_id == training.id
    card = assert_published_lora(registry, alice_token, fake, outcome, tmp_path, steps=30, trigger="adoptme")
    assert training.id in card  # the card names the Replicate training it came from


# -- 8. a weights download cut short --------------------------------------------------------------------------


def test_a_cut_weights_download_resumes_and_publishes_the_right_bytes(env, images, fake, registry, alice_token,
                                                                     tmp_path):
    fake.cut_next_download(after_bytes=4096)
    result = hubferry(*train_args(images, "alice/flux-resumed", "--wait", "--json"), env=env)
    assert result.returncode == 0, result.stderr
    job = last_json(result.stdout)
    downloads = [c for c in fake.requests if c.route == "/delivery/{opaque}/trained_model.tar"]
    assert len(downloads) >= 2, downloads  # cut, then resumed
    assert_published_lora(registry, alice_token, fake, Outcome.from_json(job), tmp_path)


def test_a_weights_download_that_keeps_failing_is_retried_by_the_next_poll(env, images, fake, registry,
                                                                           alice_token, tmp_path):
    env = {**env, "HUBFERRY_MAX_ATTEMPTS": "2"}
    fake.fail_gets(3, status=503, path_prefix="/delivery/")  # more than one observation's 2 attempts
    result = hubferry(*train_args(images, "alice/flux-retried", "--wait", "--json"), env=env)
    assert result.returncode == 0, result.stderr
    job = last_json(result.stdout)
    notices = [e["message"] for e in job["timeline"] if e["kind"] == "notice"]
    assert any(m.startswith("downloading the outputs failed; will retry") and "503" in m for m in notices), notices
    assert sum(e["kind"] == "stage_finished" and e["stage"] == "training" for e in job["timeline"]) == 1
    assert_published_lora(registry, alice_token, fake, Outcome.from_json(job), tmp_path)


# -- 9. bad inputs are refused before anything is spent ------------------------------------------------------


#: What a user gets wrong, and what hubferry says: (flags, environment changes, message, exit code).
BAD_INPUTS = {
    "steps out of range": (("--steps", "1"), {}, "steps must be between 3 and 6000", 2),
    "unknown input": (("--param", "warp_speed=9"), {}, "the trainer has no input 'warp_speed'", 2),
    "a secret as input": (("--param", "hf_token=hf_abc"), {}, "hf_token is not sent to Replicate", 2),
    "no Replicate token": ((), {"REPLICATE_API_TOKEN": ""}, "no Replicate token", 2),
    "a wrong Replicate token": ((), {"REPLICATE_API_TOKEN": "r8_wrong0token"}, "HTTP 401", 1),
}


def test_bad_inputs_are_refused_before_any_spend(env, images, fake, registry, alice_token):
    from concurrent.futures import ThreadPoolExecutor

    def attempt(case: str) -> tuple[str, str, subprocess.CompletedProcess[str]]:
        extra, env_change, _, _ = BAD_INPUTS[case]
        changed = {k: v for k, v in {**env, **env_change}.items() if v}
        repo = f"alice/flux-refused-{sorted(BAD_INPUTS).index(case)}"
        return case, repo, hubferry(*train_args(images, repo, *extra), env=changed)

    with ThreadPoolExecutor(len(BAD_INPUTS)) as pool:  # independent commands: side by side
        results = list(pool.map(attempt, BAD_INPUTS))
    api = HfApi(endpoint=registry.endpoint, token=alice_token)
    for case, repo, result in results:
        _, _, expected, code = BAD_INPUTS[case]
        assert result.returncode == code and expected in result.stderr, (case, result.stderr)
        assert "Traceback" not in result.stderr, case
        assert not api.repo_exists(repo), case
    assert fake.trainings() == [] and fake.calls(route="/v1/files") == 0  # no training, nothing uploaded
    assert not list((Path(env["HUBFERRY_HOME"]) / "datasets").glob("*/data.zip"))


def test_an_unusable_dataset_is_refused_before_any_spend(env, tmp_path, fake):
    folder = tmp_path / "not-photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("no pictures here")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = hubferry(*train_args(folder, "alice/flux-nothing"), env=env)
    assert result.returncode == 2, result.stderr
    assert "broken.jpg" in result.stderr and "Traceback" not in result.stderr
    assert fake.trainings() == [] and fake.calls(route="/v1/files") == 0
    missing = hubferry(*train_args(tmp_path / "nowhere", "alice/flux-nothing"), env=env)
    assert missing.returncode == 2 and "nowhere" in missing.stderr
    assert fake.trainings() == []


# -- 10. a job file reproduces a run ---------------------------------------------------------------------------


def test_a_job_file_reproduces_a_run(env, images, fake, registry, alice_token, tmp_path):
    flags = hubferry(*train_args(images, "alice/flux-flags", "--learning-rate", "0.0002", "--lora-rank", "8",
                                 "--param", "autocaption=false", "--param", "optimizer=adamw", "--wait", "--json"),
                     env=env)
    assert flags.returncode == 0, flags.stderr
    job_file = tmp_path / "job.toml"
    job_file.write_text(
        f'trainer = "replicate"\nimages = "{images}"\ntrigger-word = "{TRIGGER}"\nsteps = {STEPS}\n'
        'learning_rate = 0.0002\nlora-rank = 8\nrepo = "alice/flux-file"\n\n'
        '[param]\nautocaption = false\noptimizer = "adamw"\n')
    from_file = hubferry("train", "-f", str(job_file), "--wait", "--json", env=env)
    assert from_file.returncode == 0, from_file.stderr
    second, first = fake.trainings()  # newest first
    assert first["input"].pop("input_images") != second["input"].pop("input_images")  # each staged its own copy
    assert first["input"] == second["input"] == {
        "trigger_word": TRIGGER, "steps": STEPS, "learning_rate": 0.0002, "lora_rank": 8, "autocaption": False,
        "optimizer": "adamw"}
    a, b = last_json(flags.stdout), last_json(from_file.stdout)
    assert a["dataset_report"]["sha256"] == b["dataset_report"]["sha256"]  # the same zip, byte for byte
    for job in (a, b):
        assert_published_lora(registry, alice_token, fake, Outcome.from_json(job), tmp_path)
    unknown = tmp_path / "typo.toml"
    unknown.write_text('trainer = "replicate"\nimagez = "x"\n')
    refused = hubferry("train", "-f", str(unknown), env=env)
    assert refused.returncode == 2 and "imagez" in refused.stderr



# -- the worker's chores keep to the poll budget -------------------------------------------------------------


def test_the_reconciler_leaves_remote_trainings_to_the_polls(env, images, fake, monkeypatch):
    """A Replicate training queued for a long time (no progress for minutes) is not read by the reconciler,
    which looks for local runs whose process died: only the polls read it, once per interval."""
    from datetime import timedelta

    from hubferry.config import load_settings
    from hubferry.services import replicate_jobs
    from hubferry.services.context import open_context
    from hubferry.services.reconcile import ORPHAN_GRACE, reconcile
    from hubferry.services.training import run_training

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    fake.knobs.hold_starting = True  # queued at Replicate: no progress to report
    ctx = open_context(load_settings())
    job = replicate_jobs.submit(ctx, replicate_jobs.ReplicateRequest(
        images=str(images), trigger_word=TRIGGER, steps=STEPS, repo_id="alice/flux-queued"))
    run_training(ctx, job.id)
    assert ctx.jobs.require(job.id).state is JobState.TRAINING
    training_id = fake.trainings()[0]["id"]
    real_clock = ctx.jobs.clock
    ctx.jobs.clock = lambda: real_clock() + ORPHAN_GRACE + timedelta(minutes=5)  # long since any update
    reads = fake.calls(method="GET", training_id=training_id)
    reconcile(ctx)
    assert fake.calls(method="GET", training_id=training_id) == reads
    assert ctx.jobs.require(job.id).state is JobState.TRAINING


def test_observers_racing_on_a_finished_training_download_it_once(env, images, fake, registry, alice_token,
                                                                 tmp_path, monkeypatch):
    """A completed webhook, a poll and a status read that all see the success at once: one downloads the
    weights, one publish starts, the timeline says "training finished" once."""
    import threading

    from hubferry.config import load_settings
    from hubferry.services import remote, replicate_jobs
    from hubferry.services.context import open_context
    from hubferry.services.training import run_training

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ctx = open_context(load_settings())
    job = replicate_jobs.submit(ctx, replicate_jobs.ReplicateRequest(
        images=str(images), trigger_word=TRIGGER, steps=STEPS, repo_id="alice/flux-raced"))
    run_training(ctx, job.id)
    fake.wait_for(fake.trainings()[0]["id"], "succeeded")
    barrier = threading.Barrier(6)

    def observe() -> None:
        barrier.wait()
        remote.refresh(ctx, job.id, force=True)

    observers = [threading.Thread(target=observe) for _ in range(6)]
    for observer in observers:
        observer.start()
    for observer in observers:
        observer.join()
    final = ctx.jobs.require(job.id)
    assert final.state is JobState.PUBLISHED, final.error
    assert fake.calls(route="/delivery/{opaque}/trained_model.tar") == 1
    events = ctx.jobs.events(job.id)
    assert sum(training_finished(e) for e in events) == 1
    assert sum(upload_started(e) for e in events) == 1
    assert_published_lora(registry, alice_token, fake, Outcome.from_store(Store(env), job.id), tmp_path)
