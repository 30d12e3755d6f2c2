"""Pushes through what real networks send: proxies answering text and HTML, and a server that dies mid-upload."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi

import hubferry
from hubferry import testing
from hubferry.config import load_settings
from hubferry.errors import TransientError
from hubferry.hub.client import HubClients

MiB = 1024 * 1024
PROXY_KINDS = "text429,html502,html503"


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HUBFERRY_HOME", str(tmp_path / "hubferry-home"))
    for name in ("HF_TOKEN", "HF_ENDPOINT", "HUBFERRY_TOKEN", "HUBFERRY_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def _settings(**overrides):
    return load_settings(**{"retry_base_delay": 0.01, "retry_max_delay": 0.05, **overrides})


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def test_a_push_through_a_proxy_failing_40_percent_with_text_and_html_ends_verified(tmp_path, fast_retries):
    with testing.running_registry(tmp_path / "hub", fault_rate=0.4, fault_seed=5, fault_kinds=PROXY_KINDS,
                                  multipart_threshold=2 * MiB, chunk_size=MiB) as hub:
        token = hub.create_token("alice")
        files = {f"w{i}.safetensors": os.urandom(3 * MiB) for i in range(3)}
        files |= {f"cfg{i}.json": f'{{"i": {i}}}'.encode() for i in range(5)}
        files["README.md"] = b"---\nlicense: mit\n---\n# proxied\n"
        folder = _write(tmp_path / "m", files)
        pub = hubferry.publish(folder, "alice/proxied", token=token, endpoint=hub.endpoint,
                               settings=_settings(commit_max_files=4, max_attempts=20))
        assert hub.faults is not None
        kinds = {kind for kind, _, _ in hub.faults.injected}
        assert pub.verified and pub.commits_created == 3  # one commit per batch, none twice
        assert kinds == {"text429", "html502", "html503"} and len(hub.faults.injected) >= 10


def test_text_429_on_validate_yaml_is_retried_instead_of_failing_as_a_json_error(tmp_path, fast_retries):
    with testing.running_registry(tmp_path / "hub", fault_rate=0.7, fault_seed=3, fault_kinds="text429",
                                  fault_paths="/api/validate-yaml") as hub:
        token = hub.create_token("alice")
        folder = _write(tmp_path / "m", {"README.md": b"---\nlicense: mit\n---\n# card\n", "a.json": b"{}"})
        pub = hubferry.publish(folder, "alice/yaml", token=token, endpoint=hub.endpoint,
                               settings=_settings(max_attempts=20))
        assert pub.verified
        assert hub.faults is not None and any(path == "/api/validate-yaml" for _, _, path in hub.faults.injected)


class _KillMidUpload(httpx2.BaseTransport):
    """Real HTTP, except that the server process is killed once ``after`` bytes of an LFS PUT body left."""

    def __init__(self, pid: int, after: int) -> None:
        self.inner = httpx2.HTTPTransport()
        self.pid, self.after = pid, after
        self.killed = threading.Event()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "PUT" and request.url.path.startswith("/lfs-storage/") and not self.killed.is_set():
            request.stream = _Killing(request.stream, self)  # type: ignore[arg-type]
        return self.inner.handle_request(request)


class _Killing(httpx2.SyncByteStream):
    def __init__(self, inner, owner: _KillMidUpload) -> None:
        self.inner, self.owner = inner, owner

    def __iter__(self):
        sent = 0
        for chunk in self.inner:
            yield chunk
            sent += len(chunk)
            if sent >= self.owner.after and not self.owner.killed.is_set():
                self.owner.killed.set()
                os.kill(self.owner.pid, signal.SIGKILL)


def test_a_registry_killed_mid_upload_is_a_transient_network_error_and_a_rerun_resumes(tmp_path, fast_retries):
    port = testing.free_port()
    files = {f"shard-{i}.safetensors": os.urandom(12 * MiB) for i in range(3)}
    folder = _write(tmp_path / "m", files)
    settings = _settings(max_attempts=2)
    with testing.registry_process(tmp_path / "hub", port=port, log_path=tmp_path / "hub.log") as hub:
        token = hub.create_token("alice")
        assert hub.pid is not None
        transport = _KillMidUpload(hub.pid, after=4 * MiB)
        with pytest.raises(TransientError) as info:
            hubferry.publish(folder, "alice/dies", token=token, endpoint=hub.endpoint, settings=settings,
                             clients=HubClients(settings, transport=transport))
    error = info.value
    assert transport.killed.is_set()
    assert error.category == "network" and error.attempt == 2 and error.url.startswith(hub.endpoint)
    assert "re-run to resume" in error.hint and "report it" not in error.hint
    assert "RuntimeError" not in error.message
    with testing.registry_process(tmp_path / "hub", port=port, log_path=tmp_path / "hub.log") as again:
        pub = hubferry.publish(folder, "alice/dies", token=token, endpoint=again.endpoint, settings=settings)
        assert pub.verified
        tree = {f.path: f for f in HfApi(endpoint=again.endpoint, token=token).list_repo_tree("alice/dies")}
        assert set(files) <= set(tree)
