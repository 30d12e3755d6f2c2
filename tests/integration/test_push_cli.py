"""What ``hubferry push`` tells the user: the branch URL, humanised sizes, and repo visibility."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi

import hubferry
from hubferry.config import load_settings
from hubferry.hub.client import HubClients
from hubferry.hub.publish import _visibility

MiB = 1024 * 1024


@pytest.fixture()
def env(tmp_path, registry) -> dict[str, str]:
    env = {**os.environ, "HF_ENDPOINT": registry.endpoint, "HF_HOME": str(tmp_path / "hf"),
           "HUBFERRY_HOME": str(tmp_path / "home"), "HUBFERRY_RETRY_BASE_DELAY": "0.01"}
    for name in ("HF_TOKEN", "HUBFERRY_TOKEN", "HUBFERRY_ENDPOINT"):
        env.pop(name, None)
    return env


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "adapter.safetensors").write_bytes(os.urandom(3 * MiB))
    (folder / "config.json").write_bytes(b"{}")
    return folder


def _push(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hubferry", "push", *args], env=env, capture_output=True,
                          text=True, timeout=180)


def _repo() -> str:
    return f"alice/cli-{uuid.uuid4().hex[:8]}"


def test_a_push_to_a_branch_prints_the_branch_url_and_humanised_sizes(registry, alice_token, env, tmp_path):
    repo = _repo()
    result = _push(env, str(_folder(tmp_path)), "--repo", repo, "--token", alice_token, "--revision", "dev",
                   "--json")
    assert result.returncode == 0, result.stderr
    assert f"{registry.endpoint}/{repo}/tree/dev" in result.stderr
    assert re.search(r"\d+\.\d MB sent", result.stderr), result.stderr
    assert not re.search(r"\d{4,} bytes", result.stderr)
    data = json.loads(result.stdout)
    assert data["revision_url"] == f"{registry.endpoint}/{repo}/tree/dev"
    assert data["repo_url"] == f"{registry.endpoint}/{repo}"


def test_public_on_an_existing_private_repo_leaves_it_private_and_says_so(
    registry, alice_token, env, tmp_path,
):
    repo = _repo()
    api = HfApi(endpoint=registry.endpoint, token=alice_token)
    api.create_repo(repo, private=True)
    folder = str(_folder(tmp_path))
    result = _push(env, folder, "--repo", repo, "--token", alice_token, "--public")
    assert result.returncode == 0, result.stderr
    assert "left unchanged" in result.stderr and "--update-visibility" in result.stderr
    assert api.model_info(repo).private is True
    quiet = _push(env, folder, "--repo", repo, "--token", alice_token)
    assert quiet.returncode == 0 and "visibility" not in quiet.stderr  # no flag, nothing to say


def test_update_visibility_sends_the_hub_settings_request():
    """The registry has no settings route yet; the request huggingface_hub sends is checked here."""
    seen: list[httpx2.Request] = []

    def hub(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json={})

    settings = load_settings()
    api = HubClients(settings, transport=httpx2.MockTransport(hub)).api("http://hub.test", "hf_" + "v" * 34)

    def call(fn, _what):
        return fn()

    notice = _visibility(api, call, "alice/m", "model", private=False, update=True)
    assert notice == "alice/m was private and is now public"
    assert seen[0].method == "PUT" and seen[0].url.path == "/api/models/alice/m/settings"
    assert json.loads(seen[0].content) == {"visibility": "public"}
    assert "left unchanged" in _visibility(api, call, "alice/m", "model", private=True, update=False)
    assert len(seen) == 1


def test_library_publish_reports_the_visibility_notice(registry, alice_token, tmp_path, monkeypatch):
    monkeypatch.setenv("HUBFERRY_HOME", str(tmp_path / "home"))
    repo = _repo()
    HfApi(endpoint=registry.endpoint, token=alice_token).create_repo(repo, private=False)
    pub = hubferry.publish(_folder(tmp_path), repo, endpoint=registry.endpoint, token=alice_token, private=True,
                           settings=load_settings(retry_base_delay=0.01))
    assert pub.verified and len(pub.notices) == 1 and "is public" in pub.notices[0]
    assert pub.revision_url == pub.repo_url
