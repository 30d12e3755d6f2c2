"""A trained job reaches the Hub exactly once: racing observers, duplicate tasks, and a worker killed mid-publish.

Real ``python -m hubferry worker`` processes consume the queue (Redis or the embedded SQLite
queue) against a shared job database (PostgreSQL or SQLite) and publish to the built-in registry.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

from hubferry.config import load_settings
from hubferry.domain.jobs import EventKind, Job, JobEvent, JobState
from hubferry.services.context import Context, open_context
from hubferry.services.launch import LocalRequest, submit
from hubferry.services.publishing import run_publish, training_succeeded
from hubferry.store import PublishState, PublishStore
from hubferry.testing import RunningRegistry, file_hashes, running_registry, stored_lfs_objects
from hubferry.worker.queue import TaskQueue

MiB = 1024 * 1024
OWNER = "alice"
#: Observers racing to report the same training success: in-process threads plus child processes.
OBSERVER_THREADS = 40
OBSERVER_PROCESSES = 2
THREADS_PER_PROCESS = 5
#: Worst case for one small publish through two workers (seconds).
PUBLISH_TIMEOUT_S = 45.0

pytestmark = pytest.mark.timeout(120)

# A child process: open its own context, park N threads on a barrier, race when told "go" on stdin.
_OBSERVER = """
import sys, threading
from hubferry.config import load_settings
from hubferry.services.context import open_context
from hubferry.services.publishing import run_publish, training_succeeded
from hubferry.worker.queue import TaskQueue

job_id, n = sys.argv[1], int(sys.argv[2])
settings = load_settings()
ctx = open_context(settings, dispatcher=TaskQueue(settings))
barrier = threading.Barrier(n + 1)
results = []

def observe():
    barrier.wait()
    results.append(training_succeeded(ctx, job_id))

threads = [threading.Thread(target=observe) for _ in range(n)]
for t in threads:
    t.start()
print("READY", flush=True)
sys.stdin.readline()
barrier.wait()
for t in threads:
    t.join()
print("WON", sum(results), "OF", len(results), flush=True)
"""


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A fresh registry per test, so its stored-object count belongs to this test alone."""
    with running_registry(tmp_path / "hub", multipart_threshold=8 * MiB, chunk_size=4 * MiB) as reg:
        yield reg


@pytest.fixture
def base_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Environment shared by this process and the workers; returns ``HUBFERRY_HOME``."""
    home = tmp_path / "home"
    for name in ("HF_TOKEN", "HUBFERRY_TOKEN", "HF_ENDPOINT", "HUBFERRY_ENDPOINT", "HUBFERRY_DATABASE_URL",
                 "HUBFERRY_QUEUE_URL", "HUBFERRY_VAULT_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HUBFERRY_HOME", str(home))
    monkeypatch.setenv("HUBFERRY_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("HUBFERRY_RETRY_BASE_DELAY", "0.05")
    monkeypatch.setenv("HUBFERRY_RECONCILE_INTERVAL_S", "1")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    return home


class Workers:
    """``python -m hubferry worker`` processes, each in its own process group, logs kept for failures."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int, home: Path) -> list[subprocess.Popen[bytes]]:
        self.logs.mkdir(parents=True, exist_ok=True)
        started = []
        for _ in range(n):
            log = open(self.logs / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115 - lives as long as the process
            proc = subprocess.Popen([sys.executable, "-m", "hubferry", "worker"], env=dict(os.environ),
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            self.procs.append(proc)
            started.append(proc)
        # A worker touches its liveness file once its context (and migrations) are ready.
        _wait_for(lambda: len(list((home / "workers").glob("*.alive"))) >= len(self.procs), 30,
                  "workers did not start", self)
        return started

    def by_pid(self, pid: int) -> subprocess.Popen[bytes]:
        return next(p for p in self.procs if p.pid == pid)

    def tails(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.logs.glob("worker-*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)  # Huey's graceful stop
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(params=["postgresql+redis", "sqlite"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, base_env: Path) -> str:
    """Where jobs and tasks live: PostgreSQL + Redis, or SQLite for both (the embedded default)."""
    if request.param == "postgresql+redis":
        monkeypatch.setenv("HUBFERRY_DATABASE_URL", request.getfixturevalue("pg_url"))
        monkeypatch.setenv("HUBFERRY_QUEUE_URL", request.getfixturevalue("redis_url"))
    return request.param


@pytest.fixture
def workers(backend: str, tmp_path: Path) -> Iterator[Workers]:
    """Worker processes, stopped before the database and queue they use are dropped."""
    pool = Workers(tmp_path / "worker-logs")
    try:
        yield pool
    finally:
        pool.stop()


def _wait_for(condition: Callable[[], object], timeout: float, what: str, workers: Workers | None = None,
              interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s\n{workers.tails() if workers else ''}")
        time.sleep(interval)


def _write_output(folder: Path, files: dict[str, bytes]) -> dict[str, str]:
    """Write the trainer's output; returns each file's sha256."""
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}


def _training_job(ctx: Context, hub: RunningRegistry, token: str, output: Path, name: str) -> Job:
    """A local job submitted with the registry as its Hub, moved to ``training`` as a trainer would."""
    request = LocalRequest(command=["true"], output_dir=output, name=name, repo_id=f"{OWNER}/{name}",
                           endpoint=hub.endpoint, token=token)
    job = submit(ctx, "local", request, owner=OWNER)
    ctx.jobs.transition(job.id, JobState.QUEUED, JobState.PREPARING)
    ctx.jobs.transition(job.id, JobState.PREPARING, JobState.TRAINING, output_dir=str(output))
    return ctx.jobs.require(job.id)


def _wait_published(ctx: Context, job_id: str, workers: Workers, timeout: float = PUBLISH_TIMEOUT_S) -> Job:
    deadline = time.monotonic() + timeout
    while (job := ctx.jobs.require(job_id)).state is not JobState.PUBLISHED:
        if job.state is JobState.FAILED or time.monotonic() > deadline:
            timeline = "\n".join(f"{e.seq} {e.kind} {e.stage} {e.message} {dict(e.context)}"
                                 for e in ctx.jobs.events(job_id))
            pytest.fail(f"job {job_id} is {job.state} (error {job.error}), not published\n{timeline}\n"
                        f"{workers.tails()}")
        time.sleep(0.1)
    return job


def _uploads_started(events: list[JobEvent]) -> list[JobEvent]:
    return [e for e in events if e.kind is EventKind.NOTICE and e.message == "upload started"]


def _hub_commits(hub: RunningRegistry, token: str, repo_id: str) -> list:
    return HfApi(endpoint=hub.endpoint, token=token).list_repo_commits(repo_id)


def _race_observers(ctx: Context, job_id: str) -> list[bool]:
    """Fire every observer (threads here, threads in child processes) at once; returns every answer."""
    children = [
        subprocess.Popen([sys.executable, "-c", _OBSERVER, job_id, str(THREADS_PER_PROCESS)], env=dict(os.environ),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(OBSERVER_PROCESSES)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "READY"
        barrier = threading.Barrier(OBSERVER_THREADS + 1)

        def observe(_: int) -> bool:
            barrier.wait()
            return training_succeeded(ctx, job_id)

        with ThreadPoolExecutor(max_workers=OBSERVER_THREADS) as pool:
            futures = [pool.submit(observe, i) for i in range(OBSERVER_THREADS)]
            for child in children:  # release the children and the local threads together
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            barrier.wait()
            results = [f.result() for f in futures]
        for child in children:
            out, _ = child.communicate(timeout=30)
            assert child.returncode == 0, out
            _, won, _, of = out.split()
            assert int(of) == THREADS_PER_PROCESS
            results += [True] * int(won) + [False] * (THREADS_PER_PROCESS - int(won))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    return results


# -- 1 and 3: fifty observers, two workers, duplicate tasks → one commit -----------------------------


def test_fifty_observers_and_duplicate_tasks_make_exactly_one_commit(
    backend: str, tmp_path: Path, base_env: Path, hub: RunningRegistry, workers: Workers,
) -> None:
    token = hub.create_token(OWNER)
    settings = load_settings()
    queue = TaskQueue(settings)
    ctx = open_context(settings, dispatcher=queue)
    output = tmp_path / "output"
    digests = _write_output(output, {
        "config.json": b'{"r": 8, "alpha": 16}',
        "adapter_config.json": b'{"peft_type": "LORA"}',
        "adapter_model.safetensors": os.urandom(12 * MiB),  # multipart: the upload takes a moment
        "tokenizer.bin": os.urandom(MiB),
    })
    job = _training_job(ctx, hub, token, output, f"exactly-once-{backend.split('+')[0]}")
    workers.start(2, base_env)

    results = _race_observers(ctx, job.id)
    assert len(results) == OBSERVER_THREADS + OBSERVER_PROCESSES * THREADS_PER_PROCESS == 50
    assert results.count(True) == 1, "exactly one observer starts the publish"
    for _ in range(3):  # duplicates while the publish runs, as a reconciler or a retried webhook would send
        queue.publish(job.id)
    queue.publish(job.id, delay_s=1.0)

    job = _wait_published(ctx, job.id, workers)
    queue.publish(job.id)  # and one after it is done
    _wait_for(lambda: queue.pending() == 0 and queue.huey.scheduled_count() == 0, 15,
              "duplicate publish tasks were not consumed", workers)
    time.sleep(0.5)  # let the last consumed duplicate run to its no-op end

    commits = _hub_commits(hub, token, job.repo_id)
    ours = [c for c in commits if job.id in c.title]
    assert len(ours) == 1, [c.title for c in commits]
    assert len(commits) == 2, "the repo's initial commit plus exactly one publish commit"
    assert ctx.jobs.require(job.id).state is JobState.PUBLISHED
    assert job.commit_sha == commits[0].commit_id == ours[0].commit_id
    publish = ctx.publishes.get(job.id)
    assert publish is not None and publish.state is PublishState.COMMITTED
    assert (publish.fence, publish.attempts) == (1, 1), "nobody else ever claimed the publish"
    events = ctx.jobs.events(job.id)
    assert len(_uploads_started(events)) == 1
    assert [(e.context["from"], e.context["to"]) for e in events if e.kind is EventKind.STATE_CHANGED][-4:] == [
        ("preparing", "training"), ("training", "publishing"), ("publishing", "verifying"),
        ("verifying", "published"),
    ]
    remote = {f.path: f for f in HfApi(endpoint=hub.endpoint, token=token).list_repo_tree(
        job.repo_id, recursive=True, revision=job.commit_sha)}
    for rel, sha in digests.items():  # what the Hub holds at the recorded commit is what was trained
        _, git_sha1, size = file_hashes(str(output / rel))
        entry = remote[rel]
        assert entry.size == size and (entry.lfs.sha256 == sha if entry.lfs else entry.blob_id == git_sha1), rel
    assert remote["adapter_model.safetensors"].lfs is not None
    print(f"\n[{backend}] 50 observers: 1 won; {len(commits)} commits on the Hub; head {job.commit_sha[:12]}")


# -- 2: kill -9 of the lease holder mid-publish → the other worker finishes ---------------------------

KILL_FILES = 6
KILL_FILE_SIZE = 32 * MiB


@pytest.mark.parametrize("backend", ["postgresql+redis"], indirect=True)
def test_kill_9_mid_publish_hands_over_and_resumes_without_a_duplicate_commit(
    backend: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, base_env: Path, hub: RunningRegistry,
    workers: Workers,
) -> None:
    monkeypatch.setenv("HUBFERRY_PUBLISH_LEASE_TTL_S", "3")
    monkeypatch.setenv("HUBFERRY_PREUPLOAD_GROUP_BYTES", str(KILL_FILE_SIZE))  # one object per preupload call
    token = hub.create_token(OWNER)
    settings = load_settings()
    ctx = open_context(settings, dispatcher=TaskQueue(settings))
    output = tmp_path / "output"
    files = {f"model-{i:05d}-of-{KILL_FILES:05d}.safetensors": os.urandom(KILL_FILE_SIZE) for i in range(KILL_FILES)}
    files["config.json"] = b'{"architectures": ["Tiny"]}'
    digests = _write_output(output, files)
    total = KILL_FILES * KILL_FILE_SIZE
    job = _training_job(ctx, hub, token, output, "kill-nine")
    workers.start(2, base_env)

    assert training_succeeded(ctx, job.id)
    _wait_for(lambda: stored_lfs_objects(hub.data_dir) >= 2, 60, "the upload did not get going", workers,
              interval=0.005)
    holder = ctx.publishes.get(job.id)
    assert holder is not None and holder.state is PublishState.UPLOADING and holder.lease_owner
    pid = int(holder.lease_owner.split(":")[1])
    victim = workers.by_pid(pid)
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = datetime.now(UTC)
    victim.wait()
    stored_at_kill = stored_lfs_objects(hub.data_dir)
    # Count again once the survivor has claimed the publish: an object whose last bytes were already
    # in the socket when the worker died may still have been stored; the re-run cannot upload before
    # it has hashed the folder, so this is what the Hub held when the re-run planned.
    _wait_for(lambda: len(_uploads_started(ctx.jobs.events(job.id))) >= 2, 30, "no worker took over", workers,
              interval=0.01)
    stored_before = stored_lfs_objects(hub.data_dir)
    assert 0 < stored_before < KILL_FILES, "the kill must land mid-publish"

    job = _wait_published(ctx, job.id, workers)

    publish = ctx.publishes.get(job.id)
    assert publish is not None and publish.state is PublishState.COMMITTED and publish.fence >= 2
    events = ctx.jobs.events(job.id)
    starts = _uploads_started(events)
    assert len(starts) >= 2 and starts[0].context["worker"] == holder.lease_owner
    assert all(str(pid) != s.context["worker"].split(":")[1] for s in starts[1:]), "the dead worker came back?"
    takeover_s = (starts[-1].at - killed_at).total_seconds()

    commits = _hub_commits(hub, token, job.repo_id)
    assert len([c for c in commits if job.id in c.title]) == 1, [c.title for c in commits]
    assert len(commits) == 2, "the repo's initial commit plus exactly one publish commit"
    assert job.commit_sha == commits[0].commit_id

    for rel, sha in digests.items():
        local = hf_hub_download(job.repo_id, rel, revision=job.commit_sha, endpoint=hub.endpoint, token=token,
                                cache_dir=tmp_path / "readback")
        digest = hashlib.sha256()
        with open(local, "rb") as f:
            while chunk := f.read(4 * MiB):
                digest.update(chunk)
        assert digest.hexdigest() == sha, rel

    finished = [e for e in events if e.kind is EventKind.STAGE_FINISHED and e.stage == "publishing"]
    assert len(finished) == 1 and finished[0].context["commit_sha"] == job.commit_sha
    resent = finished[0].context["bytes_uploaded"]
    missing = total - stored_before * KILL_FILE_SIZE
    # Only what the Hub lacked went out again (plus the small regular file inlined in the commit).
    assert missing <= resent <= missing + KILL_FILE_SIZE // 64, (resent, missing)
    assert any(e.kind is EventKind.STAGE_FINISHED and e.stage == "verifying" for e in events)
    print(f"\n[kill -9] {stored_before}/{KILL_FILES} objects ({stored_before * KILL_FILE_SIZE // MiB} MiB) stored "
          f"before the takeover ({stored_at_kill} when the kill landed); re-run sent {resent / MiB:.1f} of "
          f"{total // MiB} MiB; takeover after {takeover_s:.1f} s (lease TTL 3 s, reconcile 1 s); "
          f"fence {publish.fence}, claims {publish.attempts}")


# -- 4: a paused lease holder (a zombie) wakes up after the takeover ----------------------------------


class _Recorder:
    """A dispatcher that only records: this process must not run or enqueue anything itself."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def train(self, job_id: str) -> None:
        self.calls.append(("train", job_id))

    def publish(self, job_id: str, delay_s: float = 0.0) -> None:
        self.calls.append(("publish", job_id))


class _PausablePublishes:
    """The zombie's publish store: its heartbeats hang while the process is paused, as under SIGSTOP."""

    def __init__(self, inner: PublishStore, running: threading.Event) -> None:
        self._inner, self._running = inner, running

    def heartbeat(self, *args: object, **kwargs: object) -> bool:
        self._running.wait()
        return self._inner.heartbeat(*args, **kwargs)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


@pytest.mark.parametrize("backend", ["postgresql+redis"], indirect=True)
def test_zombie_paused_before_its_commit_adds_no_second_commit(
    backend: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, base_env: Path, hub: RunningRegistry,
    workers: Workers,
) -> None:
    monkeypatch.setenv("HUBFERRY_PUBLISH_LEASE_TTL_S", "3")
    token = hub.create_token(OWNER)
    settings = load_settings()
    ctx = open_context(settings, dispatcher=_Recorder())
    output = tmp_path / "output"
    _write_output(output, {"adapter_model.safetensors": os.urandom(2 * MiB), "config.json": b'{"r": 4}'})
    job = _training_job(ctx, hub, token, output, "zombie")
    assert training_succeeded(ctx, job.id)

    # The zombie: this process claims the publish and uploads, then freezes (every thread, heartbeats
    # included) just before its commit request, like a process stopped by SIGSTOP or a long GC pause.
    running, at_commit, thawed = threading.Event(), threading.Event(), threading.Event()
    running.set()
    real_create_commit = HfApi.create_commit

    def create_commit(api: HfApi, *args: object, **kwargs: object) -> object:
        if threading.current_thread().name == "zombie":
            running.clear()
            at_commit.set()
            thawed.wait(60)
        return real_create_commit(api, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    zombie_ctx = open_context(settings, dispatcher=_Recorder())
    zombie_ctx.publishes = _PausablePublishes(zombie_ctx.publishes, running)  # type: ignore[assignment]
    zombie = threading.Thread(target=run_publish, args=(zombie_ctx, job.id), name="zombie", daemon=True)
    zombie.start()
    assert at_commit.wait(30), "the zombie never reached its commit"
    assert ctx.publishes.get(job.id).fence == 1

    workers.start(1, base_env)  # its reconciler sees the lease expire and hands the publish over
    job = _wait_published(ctx, job.id, workers)
    assert ctx.publishes.get(job.id).fence == 2
    thawed.set()  # the zombie wakes: its commit request goes out first, then its heartbeat finds the lease lost
    running.set()
    zombie.join(30)
    assert not zombie.is_alive()

    commits = _hub_commits(hub, token, job.repo_id)
    assert ctx.jobs.require(job.id).commit_sha == job.commit_sha
    assert len([c for c in commits if job.id in c.title]) == 1, [c.title for c in commits]
    assert commits[0].commit_id == job.commit_sha
