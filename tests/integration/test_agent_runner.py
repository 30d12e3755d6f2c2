"""``python -m hubferry agent`` as a pod runs it: a subprocess with the pod's environment, against a stub
orchestrator (the three callbacks of docs/pod-agent.md, in a thread) and the built-in registry as the Hub.

The base model is the tiny Llama of tests/fixtures/tiny_llm.py, published to the registry so the agent's
training downloads it from ``HF_ENDPOINT`` as a pod does. Training runs for real (trl, CPU).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest
from huggingface_hub import HfApi

from fixtures.tiny_llm import push_tiny_llm, tiny_llm  # noqa: F401 - tiny_llm is the session fixture
from hubferry.testing import RunningRegistry
from hubferry.tracking import ProgressTracker

JOB_ID = "job-runner-1"
SFT_ROWS = [
    {"messages": [{"role": "user", "content": "what color is the sky ?"},
                  {"role": "assistant", "content": "the sky is blue ."}]},
    {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi ! how are you ?"}]},
] * 3
#: The agent's timings, made fast: lines every 0.2 s, a heartbeat every 0.5 s (from the spec), 1 s grace.
FAST = {"HUBFERRY_AGENT_REPORT_INTERVAL_S": "0.2", "HUBFERRY_CANCEL_GRACE_S": "1", "HUBFERRY_RETRY_BASE_DELAY": "0.05",
        "HUBFERRY_RETRY_MAX_DELAY": "0.2", "HUBFERRY_AGENT_PATIENCE_S": "30"}
HEARTBEAT_S = 0.5


def job_token() -> str:
    return "hfj_" + secrets.token_urlsafe(32)[:43].ljust(43, "x")


@dataclass
class Stub:
    """The orchestrator's side of the contract, recording what the agent sends."""

    token: str
    spec: dict[str, Any]
    hub: RunningRegistry
    #: The Hub token publish-grant hands over now; None answers 409.
    hub_token: str | None = None
    repo_id: str = ""
    #: Statuses answered to the first attempt of a report of the given phase (then it is accepted).
    fail_first: dict[str, list[int]] = field(default_factory=dict)
    #: An action that overrides the usual answer to a report (None: the usual one).
    action_for: Callable[[dict[str, Any]], str | None] = lambda report: None
    dataset: bytes = b""
    received: list[dict[str, Any]] = field(default_factory=list)  # every report body, retries included
    accepted_lines: list[str] = field(default_factory=list)  # lines of each seq, counted once
    seen: set[int] = field(default_factory=set)
    grants: list[int] = field(default_factory=list)  # status of each publish-grant answer
    verified: list[str] = field(default_factory=list)
    publish_again: bool = False
    unauthorized: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def phases(self) -> list[str]:
        with self.lock:
            phases = [r["phase"] for r in self.received]
        return [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]

    def answer(self, report: dict[str, Any]) -> str:
        override = self.action_for(report)
        if override is not None:
            return override
        phase = report["phase"]
        if phase == "trained":
            return "publish"
        if phase == "failed" and report["stage"] == "publishing" and self.publish_again:
            self.publish_again = False
            return "publish"
        if phase == "published":
            return "exit" if self.verify(report["result"]) else "continue"
        return "continue"

    def verify(self, result: dict[str, Any]) -> bool:
        """Read the commit back from the registry, as the orchestrator does before saying published."""
        api = HfApi(endpoint=self.hub.endpoint, token=self.hub_token)
        infos = api.get_paths_info(result["repo_id"], list(result["files"]), revision=result["commit_sha"])
        held = {i.path: i for i in infos}
        for path, facts in result["files"].items():
            info = held.get(path)
            if info is None or info.size != facts["size"]:
                return False
            if info.lfs is not None and info.lfs.sha256 != facts["sha256"]:
                return False
            if info.lfs is None and info.blob_id != facts["git_sha1"]:
                return False
        self.verified.append(result["commit_sha"])
        return True

    def grant(self) -> tuple[int, dict[str, Any]]:
        if self.hub_token is None:
            self.grants.append(409)
            return 409, {"error": {"category": "authentication", "message": "no Hub token is stored for "
                                   f"{self.hub.endpoint}", "hint": "hubferry secrets set hf_token, then retry"}}
        self.grants.append(200)
        return 200, {"endpoint": self.hub.endpoint, "token": self.hub_token, "repo_id": self.repo_id,
                     "private": True, "revision": "main", "commit_message": "hubferry: agent test",
                     "card": {"title": "Agent SFT test", "tags": ["my-tag"], "training_params": {"job": "j1"}}}


def start_stub(stub: Stub) -> ThreadingHTTPServer:
    """Serve ``stub`` on a free 127.0.0.1 port, in a thread (the three callbacks and one staged file)."""
    base = f"/api/v1/agent/jobs/{JOB_ID}"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any] | bytes) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {stub.token}":
                return True
            stub.unauthorized += 1
            self._send(401, {"error": {"category": "authentication", "message": "bad job token", "hint": ""}})
            return False

        def do_GET(self) -> None:
            if self.path == "/staging/data.jsonl?sig=s3cr3t-signature":
                self._send(200, stub.dataset)
            elif self.path == f"{base}/spec":
                if self._authorized():
                    self._send(200, stub.spec)
            else:
                self._send(404, {"error": {"message": "no such route"}})

        def do_POST(self) -> None:
            if not self._authorized():
                return
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == f"{base}/report":
                with stub.lock:
                    stub.received.append(body)
                    failures = stub.fail_first.get(body["phase"])
                    if failures:
                        self._send(failures.pop(0), {"error": {"message": "restarting"}})
                        return
                    if body["seq"] not in stub.seen:
                        stub.seen.add(body["seq"])
                        stub.accepted_lines.extend(body["lines"])
                self._send(200, {"action": stub.answer(body)})
            elif self.path == f"{base}/publish-grant":
                self._send(*stub.grant())
            else:
                self._send(404, {"error": {"message": "no such job"}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def serve() -> Iterator[Callable[[Stub], str]]:
    """Start stub orchestrators for one test; returns a function giving each one's base URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(stub: Stub) -> str:
        servers.append(start_stub(stub))
        return url_of(servers[-1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def base_model(registry: RunningRegistry, alice_token: str, tiny_llm: Path) -> str:  # noqa: F811
    """The tiny Llama as a public repo on the registry: the pod downloads it from HF_ENDPOINT."""
    repo_id = f"alice/tiny-llm-{uuid.uuid4().hex[:8]}"
    push_tiny_llm(tiny_llm, repo_id, endpoint=registry.endpoint, token=alice_token)
    return repo_id


def make_spec(base_model: str, url: str | None, *, steps: int = 3, method: str = "sft") -> dict[str, Any]:
    config = {"method": method, "model": {"base": base_model}, "dataset": "data.jsonl",
              "training": {"max_steps": steps, "learning_rate": 5e-3, "per_device_batch_size": 2, "max_seq_len": 64},
              "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}
    return {"job_id": JOB_ID, "config": config, "dataset_url": url, "heartbeat_s": HEARTBEAT_S}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def pod_env(url: str, token: str, agent_dir: Path, registry: RunningRegistry, tmp_path: Path) -> dict[str, str]:
    """What the orchestrator puts in a pod, plus the fast timings; nothing of this shell's secrets."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith(("HUBFERRY_", "HF_")) and "TOKEN" not in k and "KEY" not in k}
    return {**keep, **FAST, "HUBFERRY_CALLBACK_URL": f"{url}/api/v1/agent/jobs/{JOB_ID}",
            "HUBFERRY_JOB_TOKEN": token, "HUBFERRY_JOB_ID": JOB_ID, "HUBFERRY_AGENT_DIR": str(agent_dir),
            "HF_ENDPOINT": registry.endpoint, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf"),
            "HUBFERRY_HOME": str(tmp_path / "home"), "TRL_EXPERIMENTAL_SILENCE": "1", "PYTHONUNBUFFERED": "1"}


def run_agent(env: dict[str, str], tmp_path: Path, *, timeout: float = 150,
              during: Callable[[subprocess.Popen[bytes]], None] | None = None) -> Run:
    out, err = tmp_path / "agent.out", tmp_path / "agent.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        agent = subprocess.Popen([sys.executable, "-m", "hubferry", "agent"], env=env, stdout=stdout, stderr=stderr,
                                 stdin=subprocess.DEVNULL)
        try:
            if during is not None:
                during(agent)
            code = agent.wait(timeout=timeout)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    return Run(code, out.read_text(errors="replace"), err.read_text(errors="replace"))


def training_children(agent_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if "hubferry.trainers.agent.trl_train" in cmdline and str(agent_dir / "output") in cmdline:
            found.append(process)
    return found


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, registry: RunningRegistry, alice_token: str,
            base_model: str) -> Iterator[dict[str, Any]]:
    """The happy path, run once: spec → staged dataset → training → trained → publish → published → exit."""
    tmp_path = tmp_path_factory.mktemp("happy")
    token = job_token()
    stub = Stub(token=token, spec={}, hub=registry, hub_token=alice_token,
                repo_id=f"alice/agent-sft-{uuid.uuid4().hex[:8]}",
                dataset=b"".join(json.dumps(r).encode() + b"\n" for r in SFT_ROWS))
    server = start_stub(stub)
    try:
        url = url_of(server)
        stub.spec = make_spec(base_model, f"{url}/staging/data.jsonl?sig=s3cr3t-signature")
        agent_dir = tmp_path / "agent"
        started = time.monotonic()
        run = run_agent(pod_env(url, token, agent_dir, registry, tmp_path), tmp_path)
        yield {"run": run, "stub": stub, "agent_dir": agent_dir, "elapsed": time.monotonic() - started,
               "token": token}
    finally:
        server.shutdown()
        server.server_close()


def test_happy_path_trains_publishes_and_exits_0(trained: dict[str, Any], registry: RunningRegistry,
                                                 alice_token: str) -> None:
    run, stub = trained["run"], trained["stub"]
    assert run.code == 0, run.stderr[-3000:]
    assert stub.phases() == ["starting", "training", "trained", "publishing", "published"], stub.phases()
    assert stub.unauthorized == 0
    # progress reached the orchestrator as lines its tracker reads
    tracker = ProgressTracker()
    for line in stub.accepted_lines:
        tracker.feed(line)
    snapshot = tracker.snapshot()
    assert (snapshot.step, snapshot.total_steps) == (3, 3) and snapshot.loss is not None
    # the published commit exists on the registry and holds what the agent reported, nothing else
    published = [r for r in stub.received if r["phase"] == "published"][-1]["result"]
    assert stub.verified == [published["commit_sha"]]
    api = HfApi(endpoint=registry.endpoint, token=alice_token)
    assert api.list_repo_commits(published["repo_id"])[0].commit_id == published["commit_sha"]
    files = set(api.list_repo_files(published["repo_id"], revision=published["commit_sha"]))
    assert files - {".gitattributes"} == set(published["files"])  # the registry adds .gitattributes itself
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"} <= files
    assert not {".hubferry-trained", "config.json", "dataset.jsonl"} & files
    assert not [f for f in files if f.startswith(("checkpoint", "work", "data/"))]
    card = api.hf_hub_download(published["repo_id"], "README.md", revision=published["commit_sha"])
    text = Path(card).read_text()
    assert stub.spec["config"]["model"]["base"] in text and "# Agent SFT test" in text  # the grant's card facts
    assert "my-tag" in text and "| lora_r | 4 |" in text and "| job | j1 |" in text  # + training_args.json
    # seq grows by one per report; the marker is on the volume
    seqs = sorted(stub.seen)
    assert seqs == list(range(1, len(seqs) + 1))
    assert (trained["agent_dir"] / "output" / ".hubferry-trained").is_file()
    # neither token, nor the dataset URL's signature, is printed anywhere
    for secret in (trained["token"], alice_token, "s3cr3t-signature"):
        assert secret not in run.stdout + run.stderr


def test_restart_after_training_publishes_without_training(trained: dict[str, Any], tmp_path: Path,
                                                           registry: RunningRegistry, alice_token: str,
                                                           serve: Callable[[Stub], str]) -> None:
    """A pod restarted on its volume (marker present) skips to publishing; a report retried after a 503 keeps
    its seq, so its lines count once."""
    agent_dir = tmp_path / "agent"
    shutil.copytree(trained["agent_dir"], agent_dir)
    token = job_token()
    stub = Stub(token=token, spec={}, hub=registry, hub_token=alice_token,
                repo_id=f"alice/agent-restart-{uuid.uuid4().hex[:8]}", fail_first={"trained": [503, 503],
                                                                                  "published": [502]})
    url = serve(stub)
    stub.spec = make_spec(str(trained["stub"].spec["config"]["model"]["base"]), None)
    stub.spec["config"]["dataset"] = "alice/never-downloaded"
    run = run_agent(pod_env(url, token, agent_dir, registry, tmp_path), tmp_path, timeout=60)
    assert run.code == 0, run.stderr[-3000:]
    assert stub.phases() == ["trained", "publishing", "published"]
    assert not training_children(agent_dir)
    trained_reports = [r for r in stub.received if r["phase"] == "trained"]
    assert len(trained_reports) >= 3 and trained_reports[0] == trained_reports[1] == trained_reports[2]
    assert len({json.dumps(r, sort_keys=True) for r in stub.received}) == len(stub.received) - 3  # 3 re-sends
    seqs = [r["seq"] for r in stub.received]
    first = seqs[0]
    assert sorted(set(seqs)) == list(range(first, first + len(set(seqs))))
    assert first > max(trained["stub"].seen)  # the sequence continues across the restart
    assert len(stub.accepted_lines) == len(set(stub.accepted_lines))
    assert stub.verified


def test_grant_refused_then_publish_with_the_fixed_token(
        trained: dict[str, Any], tmp_path: Path, registry: RunningRegistry, serve: Callable[[Stub], str]) -> None:
    """409 at publish-grant: the agent reports failed (publishing), keeps heartbeating, and publishes with the
    token stored later; that token never shows in its output."""
    agent_dir = tmp_path / "agent"
    shutil.copytree(trained["agent_dir"], agent_dir)
    later_token = registry.create_token("carol")
    token = job_token()
    stub = Stub(token=token, spec={}, hub=registry, hub_token=None, repo_id=f"carol/agent-late-{uuid.uuid4().hex[:8]}")
    url = serve(stub)
    stub.spec = make_spec(str(trained["stub"].spec["config"]["model"]["base"]), None)
    stub.spec["config"]["dataset"] = "carol/unused"

    def fix_token_while_waiting(agent: subprocess.Popen[bytes]) -> None:
        wait_for(lambda: any(r["phase"] == "failed" for r in list(stub.received)), 30, "the failed publish")
        failed_at = len(stub.received)
        time.sleep(3 * HEARTBEAT_S)  # it keeps heartbeating and does not exit
        assert agent.poll() is None
        assert len(stub.received) > failed_at
        stub.hub_token, stub.publish_again = later_token, True

    run = run_agent(pod_env(url, token, agent_dir, registry, tmp_path), tmp_path, timeout=60,
                    during=fix_token_while_waiting)
    assert run.code == 0, run.stderr[-3000:]
    assert stub.grants == [409, 200]
    failed = next(r for r in stub.received if r["phase"] == "failed")
    assert failed["stage"] == "publishing" and "no Hub token is stored" in failed["message"]
    assert "hubferry secrets set hf_token" in failed["message"]
    assert stub.phases()[-2:] == ["publishing", "published"] and stub.verified
    api = HfApi(endpoint=registry.endpoint, token=later_token)
    assert api.model_info(stub.repo_id).sha == stub.verified[-1]
    for secret in (later_token, token):
        assert secret not in run.stdout + run.stderr


def test_cancel_mid_training_kills_the_child(tmp_path: Path, registry: RunningRegistry, alice_token: str,
                                             base_model: str, serve: Callable[[Stub], str]) -> None:
    token = job_token()
    stub = Stub(token=token, spec={}, hub=registry, hub_token=alice_token)
    agent_dir = tmp_path / "agent"
    stepped = threading.Event()

    def cancel_after_steps(report: dict[str, Any]) -> str | None:
        if any(line.startswith("Total optimization steps") for line in report["lines"]):
            stepped.set()  # the trainer's loop has begun
        return "cancel" if stepped.is_set() else None

    stub.action_for = cancel_after_steps
    url = serve(stub)
    stub.spec = make_spec(base_model, None, steps=2000)  # minutes on CPU
    stub.spec["dataset_url"] = f"{url}/staging/data.jsonl?sig=s3cr3t-signature"
    stub.dataset = b"".join(json.dumps(r).encode() + b"\n" for r in SFT_ROWS)
    children: list[int] = []

    def watch(agent: subprocess.Popen[bytes]) -> None:
        wait_for(lambda: bool(training_children(agent_dir)) or agent.poll() is not None, 60, "the training child")
        found = training_children(agent_dir)
        children.extend(p.pid for p in found)
        for process in found:  # the training never sees the job's callback token
            assert not {"HUBFERRY_JOB_TOKEN", "HUBFERRY_CALLBACK_URL"} & set(process.environ())

    run = run_agent(pod_env(url, token, agent_dir, registry, tmp_path), tmp_path, timeout=90, during=watch)
    assert run.code == 1, run.stderr[-3000:]
    assert stepped.is_set(), "the training never began"
    failed = stub.received[-1]
    assert failed["phase"] == "failed" and failed["stage"] == "training" and "cancelled" in failed["message"]
    assert children and not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                                for pid in children)
    assert not (agent_dir / "output" / ".hubferry-trained").exists()
    assert "published" not in stub.phases()


def test_failed_training_reports_its_exit_code(tmp_path: Path, registry: RunningRegistry, alice_token: str,
                                               base_model: str, serve: Callable[[Stub], str]) -> None:
    """A DPO dataset without ``rejected``: the training command exits 2, reported as the job's exit code."""
    token = job_token()
    stub = Stub(token=token, spec={}, hub=registry, hub_token=alice_token,
                dataset=b'{"prompt": "hi", "chosen": "hello"}\n')
    url = serve(stub)
    stub.spec = make_spec(base_model, f"{url}/staging/data.jsonl?sig=s3cr3t-signature", method="dpo")
    run = run_agent(pod_env(url, token, tmp_path / "agent", registry, tmp_path), tmp_path, timeout=60)
    assert run.code == 2, run.stderr[-3000:]
    failed = stub.received[-1]
    assert (failed["phase"], failed["stage"], failed["exit_code"]) == ("failed", "training", 2)
    assert any("no 'rejected' column" in line for line in stub.accepted_lines)
    assert "exited with code 2" in failed["message"] and "no 'rejected' column" in failed["message"]
    assert stub.grants == []


def test_bad_spec_and_bad_token_exit_2_and_1(tmp_path: Path, registry: RunningRegistry, base_model: str,
                                             serve: Callable[[Stub], str]) -> None:
    token = job_token()
    stub = Stub(token=token, spec={}, hub=registry)
    url = serve(stub)
    stub.spec = make_spec(base_model, None)
    stub.spec["config"]["training"]["num_epochs"] = 2  # with max_steps: invalid
    run = run_agent(pod_env(url, token, tmp_path / "a1", registry, tmp_path), tmp_path, timeout=30)
    assert run.code == 2, run.stderr[-3000:]
    failed = stub.received[-1]
    assert failed["phase"] == "failed" and "not both" in failed["message"]
    assert not training_children(tmp_path / "a1")
    # a token the orchestrator does not know: a clear refusal at once, no retry loop
    run = run_agent(pod_env(url, job_token(), tmp_path / "a2", registry, tmp_path), tmp_path, timeout=30)
    assert run.code == 1
    assert "refused the job token (401)" in run.stderr
    assert stub.unauthorized == 1


@pytest.mark.parametrize(("action", "code"), [("cancel", 1), ("exit", 0)])
def test_cancel_or_exit_before_the_training_starts_it_never(action: str, code: int, tmp_path: Path,
                                                            registry: RunningRegistry, base_model: str,
                                                            serve: Callable[[Stub], str]) -> None:
    token = job_token()
    stub = Stub(token=token, spec={}, hub=registry, action_for=lambda report: action,
                dataset=b"".join(json.dumps(r).encode() + b"\n" for r in SFT_ROWS))
    url = serve(stub)
    stub.spec = make_spec(base_model, f"{url}/staging/data.jsonl?sig=s3cr3t-signature")
    agent_dir = tmp_path / "agent"
    run = run_agent(pod_env(url, token, agent_dir, registry, tmp_path), tmp_path, timeout=30)
    assert run.code == code, run.stderr[-3000:]
    assert "training started" not in run.stderr and not (agent_dir / "output").exists()
    assert not (agent_dir / "data").exists()  # told at its first report: not even the dataset is fetched
    last = stub.received[-1]
    if action == "cancel":
        assert last["phase"] == "failed" and last["stage"] == "training" and "cancelled" in last["message"]
    else:
        assert "failed" not in stub.phases()


def test_sigterm_while_waiting_for_a_token_exits_143(trained: dict[str, Any], tmp_path: Path,
                                                     registry: RunningRegistry, serve: Callable[[Stub], str]) -> None:
    """RunPod stops the pod while the agent waits for a fixed token: it exits at once (the weights stay on
    the volume with the marker, for the next start)."""
    agent_dir = tmp_path / "agent"
    shutil.copytree(trained["agent_dir"], agent_dir)
    token = job_token()
    stub = Stub(token=token, spec={}, hub=registry, hub_token=None, repo_id="alice/never")
    url = serve(stub)
    stub.spec = make_spec(str(trained["stub"].spec["config"]["model"]["base"]), None)
    stub.spec["config"]["dataset"] = "alice/unused"
    stopped_at: list[float] = []

    def stop_while_waiting(agent: subprocess.Popen[bytes]) -> None:
        wait_for(lambda: any(r["phase"] == "failed" for r in list(stub.received)), 30, "the failed publish")
        agent.send_signal(signal.SIGTERM)
        stopped_at.append(time.monotonic())

    run = run_agent(pod_env(url, token, agent_dir, registry, tmp_path), tmp_path, timeout=30,
                    during=stop_while_waiting)
    assert run.code == 143, run.stderr[-3000:]
    assert time.monotonic() - stopped_at[0] < 10
    assert (agent_dir / "output" / ".hubferry-trained").is_file()


def test_missing_environment_exits_2_naming_every_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBFERRY_")}
    env.update(HUBFERRY_HOME=str(tmp_path / "home"), HUBFERRY_CALLBACK_URL="ftp://orchestrator")
    done = subprocess.run([sys.executable, "-m", "hubferry", "agent"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "HUBFERRY_JOB_TOKEN is not set; HUBFERRY_JOB_ID is not set" in done.stderr
    assert "HUBFERRY_CALLBACK_URL should be an http(s) URL" in done.stderr and "Traceback" not in done.stderr


# -- the callbacks client on its own (an httpx mock transport, no process) ---------------------------------


def scripted(*answers: tuple[int, Any, dict[str, str]]) -> tuple[Any, list[Any]]:
    """An httpx transport answering ``answers`` in turn (status, JSON body or raw bytes, headers)."""
    import httpx

    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body, headers = queue.pop(0)
        if isinstance(body, Exception):
            raise body
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers)

    return httpx.MockTransport(handle), seen


def client(transport: Any, slept: list[float], **kwargs: Any) -> Any:
    """A callbacks client whose sleeps are recorded and advance its clock instead of waiting."""
    from hubferry.trainers.agent.callbacks import AgentCallbacks

    return AgentCallbacks("https://orchestrator.test/api/v1/agent/jobs/j1", job_token(), transport=transport,
                          sleep=slept.append, clock=lambda: sum(slept), base_delay=0.5, max_delay=4.0, **kwargs)


def test_callbacks_retry_network_errors_429_and_5xx_then_succeed() -> None:
    import httpx

    from hubferry.trainers.agent.callbacks import Report

    transport, seen = scripted(
        (0, httpx.ConnectError("connection refused"), {}),
        (503, {"error": {"message": "restarting"}}, {"Retry-After": "3"}),
        (429, {"error": {"message": "slow down"}}, {}),
        (502, b"<html>bad gateway</html>", {}),
        (200, b"<html>not json</html>", {}),  # a proxy's page with 200: retried too
        (200, {"action": "publish"}, {}),
    )
    slept: list[float] = []
    report = Report(seq=4, phase="trained", lines=("a",))
    assert client(transport, slept).report(report) == "publish"
    assert len(seen) == 6 and slept[1] == 3.0  # Retry-After honoured
    assert all(0 <= s <= 4.0 for s in slept)
    bodies = [json.loads(r.content) for r in seen]
    assert all(b == bodies[0] for b in bodies) and bodies[0]["seq"] == 4  # the same report each time
    assert all(r.headers["Authorization"].startswith("Bearer hfj_") for r in seen)


@pytest.mark.parametrize(("status", "words"), [(401, "refused the job token (401)"), (404, "no such job"),
                                               (422, "refused the body")])
def test_callbacks_give_up_at_once_on_401_404_422(status: int, words: str) -> None:
    from hubferry.errors import PermanentError

    transport, seen = scripted((status, {"error": {"category": "x", "message": "nope", "hint": "do this"}}, {}))
    slept: list[float] = []
    with pytest.raises(PermanentError) as info:
        client(transport, slept).spec()
    assert words in info.value.message and info.value.hint == "do this" and info.value.status == status
    assert len(seen) == 1 and slept == []


def test_grant_409_is_refused_with_the_orchestrators_hint_and_the_token_never_in_repr() -> None:
    from hubferry.trainers.agent.callbacks import GrantRefused

    transport, _ = scripted(
        (409, {"error": {"category": "authentication", "message": "no Hub token stored", "hint": "store one"}}, {}),
        (200, {"endpoint": "https://hub.test/", "token": "hf_" + "k" * 34, "repo_id": "alice/x", "private": True,
               "revision": "main", "commit_message": "m"}, {}),
    )
    callbacks = client(transport, [])
    with pytest.raises(GrantRefused) as info:
        callbacks.publish_grant()
    assert info.value.message == "no Hub token stored" and info.value.hint == "store one"
    grant = callbacks.publish_grant()
    assert grant.endpoint == "https://hub.test" and grant.token.startswith("hf_kkk")
    assert "hf_k" not in repr(grant)


def test_callbacks_stop_retrying_after_their_patience() -> None:
    from hubferry.errors import TransientError

    transport, seen = scripted(*[(503, {"error": {"message": "down"}}, {"Retry-After": "2"})] * 10)
    slept: list[float] = []
    with pytest.raises(TransientError) as info:
        client(transport, slept, patience_s=5.0).spec()
    assert "kept failing" in info.value.message and "status 503" in info.value.message
    assert sum(slept) <= 5.0 and 1 < len(seen) < 10


def test_report_bodies_are_bounded() -> None:
    from hubferry.trainers.agent.callbacks import MAX_LINE_CHARS, MAX_LINES, MAX_LINES_BYTES, bound_lines

    lines, used = bound_lines(["x"] * 2000)
    assert used == len(lines) == MAX_LINES
    lines, used = bound_lines(["y" * 10_000] * 200)
    assert all(len(line) <= MAX_LINE_CHARS for line in lines) and lines[0].endswith("(cut)")
    assert sum(len(line) for line in lines) <= MAX_LINES_BYTES and used == len(lines) < 200


def test_staged_dataset_download_is_retried_capped_and_never_shows_its_signature(tmp_path: Path) -> None:
    import httpx

    from hubferry.errors import PermanentError
    from hubferry.trainers.agent.runner import fetch_dataset

    url = "https://staging.test/staging/job-1/data.jsonl?sig=s3cr3t-signature&exp=9"
    transport, seen = scripted((503, b"busy", {}), (0, httpx.ReadError("reset"), {}), (200, b'{"a": 1}\n', {}))
    slept: list[float] = []
    path = fetch_dataset(url, tmp_path / "d1", 1000, transport=transport, sleep=slept.append)
    assert path.name == "dataset.jsonl" and path.read_bytes() == b'{"a": 1}\n' and len(seen) == 3 and len(slept) == 2
    assert not list((tmp_path / "d1").glob("*.part"))

    transport, _ = scripted((403, b"expired", {}))
    with pytest.raises(PermanentError) as refused:
        fetch_dataset(url, tmp_path / "d2", 1000, transport=transport, sleep=slept.append)
    assert "refused (403)" in refused.value.message and "s3cr3t" not in str(refused.value)

    def chunked(request: httpx.Request) -> httpx.Response:  # no Content-Length: the cap holds while streaming
        return httpx.Response(200, content=iter([b"x" * 600, b"x" * 600]))

    with pytest.raises(PermanentError, match="larger than 1000 bytes"):
        fetch_dataset(url, tmp_path / "d3", 1000, transport=httpx.MockTransport(chunked), sleep=slept.append)
    assert list((tmp_path / "d3").iterdir()) == []  # the partial download is gone
    transport, _ = scripted((200, b"y" * 2000, {}))  # a declared length over the cap: refused before reading
    with pytest.raises(PermanentError, match="larger than 1000 bytes"):
        fetch_dataset(url, tmp_path / "d4", 1000, transport=transport, sleep=slept.append)


def test_reporter_batches_lines_keeps_seq_on_a_retry_and_continues_it_after_a_restart(tmp_path: Path) -> None:
    from hubferry.errors import TransientError
    from hubferry.trainers.agent.callbacks import Reporter

    answers: list[tuple[int, Any, dict[str, str]]] = [(200, {"action": "continue"}, {})] * 3
    answers += [(503, {"error": {"message": "down"}}, {"Retry-After": "5"})]  # the 4th report is not delivered
    answers += [(200, {"action": "publish"}, {}), (200, {"action": "continue"}, {})]  # re-sent first, as it was
    transport, seen = scripted(*answers)
    slept: list[float] = []
    reporter = Reporter(client(transport, slept, patience_s=1.0), tmp_path / "seq", heartbeat_s=60, interval_s=1)
    for n in range(1200):
        reporter.add_line(f"line {n}")
    assert reporter.send("training") == "continue"
    bodies = [json.loads(r.content) for r in seen]
    assert [b["seq"] for b in bodies] == [1, 2, 3] and [len(b["lines"]) for b in bodies] == [500, 500, 200]
    assert [line for b in bodies for line in b["lines"]] == [f"line {n}" for n in range(1200)]
    reporter.add_line("late")
    with pytest.raises(TransientError):
        reporter.send()
    assert reporter.send("trained") == "continue"
    bodies = [json.loads(r.content) for r in seen[3:]]
    assert [b["seq"] for b in bodies] == [4, 4, 5]
    assert bodies[1] == bodies[0] and bodies[1]["lines"] == ["late"] and bodies[1]["phase"] == "training"
    assert bodies[2]["phase"] == "trained" and bodies[2]["lines"] == []
    assert reporter.take_action(0) == "publish" and reporter.take_action(0) is None
    # a restarted agent on the same volume goes on from the last seq sent
    transport, seen = scripted((200, {"action": "continue"}, {}))
    Reporter(client(transport, []), tmp_path / "seq", heartbeat_s=60, interval_s=1).send("trained")
    assert json.loads(seen[0].content)["seq"] == 6
