"""`hubferry push` and `hubferry.publish` against the built-in registry, driven by the real client."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

import hubferry
from hubferry import testing
from hubferry.config import load_settings
from hubferry.errors import PermanentError, TransientError, ValidationError, VerificationError
from hubferry.hub.verify import verify

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    # Small multipart threshold and chunk size so multipart LFS is exercised with small files.
    with testing.running_registry(
        tmp_path_factory.mktemp("registry"), multipart_threshold=3 * MiB, chunk_size=1 * MiB
    ) as reg:
        yield reg


@pytest.fixture(scope="module")
def token(registry):
    return registry.create_token("alice")


@pytest.fixture()
def env(monkeypatch, tmp_path, registry, token):
    """A clean environment for the push: the registry endpoint, fast retries, no saved login."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HUBFERRY_HOME", str(tmp_path / "hubferry-home"))
    monkeypatch.setenv("HF_ENDPOINT", registry.endpoint)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HUBFERRY_RETRY_BASE_DELAY", "0.05")
    return {**os.environ}


def _settings(**overrides):
    return load_settings(**{"retry_base_delay": 0.05, **overrides})


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def _run(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hubferry", *args], env=env, capture_output=True, text=True, timeout=300, **kwargs
    )


def _commits(registry, token, repo_id):
    return HfApi(endpoint=registry.endpoint, token=token).list_repo_commits(repo_id)


def test_round_trip_of_edge_cases_reads_back_identical(registry, token, env, tmp_path):
    files = {
        "config.json": b'{"r": 8}',
        "empty.txt": b"",
        "deep/nested/folder/weights.safetensors": os.urandom(5 * MiB),  # multipart LFS
        "unicodé/ファイル.txt": "héllo wörld".encode(),
        "exactly-10MiB.txt": b"a" * (10 * MiB),
        "over-10MiB.txt": b"b" * (10 * MiB + 1),
        "small.bin": bytes(range(256)),
    }
    folder = _write(tmp_path / "model", files)
    pub = hubferry.publish(folder, "alice/round-trip", token=token, settings=_settings())
    assert pub.verified and len(pub.commit_sha) == 40
    assert pub.repo_url == f"{registry.endpoint}/alice/round-trip"
    assert {f.path_in_repo for f in pub.files} == set(files) | {"README.md"}
    for rel, data in files.items():
        local = hf_hub_download("alice/round-trip", rel, endpoint=registry.endpoint, token=token,
                                cache_dir=tmp_path / "cache")
        assert Path(local).read_bytes() == data, rel
    card = Path(hf_hub_download("alice/round-trip", "README.md", endpoint=registry.endpoint, token=token,
                                cache_dir=tmp_path / "cache")).read_text()
    assert card.startswith("---") and "hubferry" in card
    info = HfApi(endpoint=registry.endpoint, token=token).model_info("alice/round-trip")
    assert info.private is True


def test_users_readme_is_never_overwritten(registry, token, env, tmp_path):
    folder = _write(tmp_path / "m", {"README.md": b"# mine\n", "w.bin": b"\x00\x01"})
    hubferry.publish(folder, "alice/own-card", token=token, settings=_settings())
    got = hf_hub_download("alice/own-card", "README.md", endpoint=registry.endpoint, token=token,
                          cache_dir=tmp_path / "c")
    assert Path(got).read_bytes() == b"# mine\n"


def test_repush_of_unchanged_folder_makes_no_commit(registry, token, env, tmp_path):
    folder = _write(tmp_path / "m", {"a.txt": b"1", "w.safetensors": os.urandom(MiB)})
    first = hubferry.publish(folder, "alice/idempotent", token=token, settings=_settings())
    before = len(_commits(registry, token, "alice/idempotent"))
    again = hubferry.publish(folder, "alice/idempotent", token=token, settings=_settings())
    assert again.commit_sha == first.commit_sha and again.commits_created == 0 and again.bytes_uploaded == 0
    assert len(_commits(registry, token, "alice/idempotent")) == before
    (folder / "a.txt").write_bytes(b"2")
    third = hubferry.publish(folder, "alice/idempotent", token=token, settings=_settings())
    assert third.commits_created == 1 and third.bytes_uploaded == 1


def test_many_files_become_several_commits_on_a_branch(registry, token, env, tmp_path):
    folder = _write(tmp_path / "m", {f"shard-{i:02d}.txt": f"{i}".encode() for i in range(7)})
    pub = hubferry.publish(folder, "alice/batched", token=token, revision="dev", message="shards",
                           settings=_settings(commit_max_files=3))
    assert pub.commits_created == 3 and pub.revision == "dev"
    titles = [c.title for c in HfApi(endpoint=registry.endpoint, token=token).list_repo_commits(
        "alice/batched", revision="dev")]
    assert titles[:3] == ["shards (part 3/3)", "shards (part 2/3)", "shards (part 1/3)"]
    main_files = HfApi(endpoint=registry.endpoint, token=token).list_repo_files("alice/batched")
    assert "shard-00.txt" not in main_files


def test_cli_json_contract_and_token_never_printed(registry, token, env, tmp_path):
    folder = _write(tmp_path / "m", {"config.json": b"{}", "w.safetensors": os.urandom(2 * MiB)})
    result = _run(["push", str(folder), "--repo", "alice/cli-json", "--token", token, "--json", "--verbose",
                   "--public"], env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["verified"] is True and data["repo_url"].endswith("/alice/cli-json")
    assert len(data["commit_sha"]) == 40 and data["bytes_uploaded"] >= 2 * MiB
    sizes = {f["path"]: f["size"] for f in data["files"]}
    assert sizes["w.safetensors"] == 2 * MiB and all(len(f["sha256"]) == 64 for f in data["files"])
    assert "request" in result.stderr and "response" in result.stderr  # --verbose shows HTTP lines
    assert token not in result.stdout + result.stderr


def test_bad_token_fails_with_context_and_no_retry(registry, env, tmp_path):
    folder = _write(tmp_path / "m", {"a.txt": b"1"})
    result = _run(["push", str(folder), "--repo", "alice/x", "--token", "hf_" + "z" * 34, "--json"], env)
    assert result.returncode == 1
    assert "authentication" in result.stderr and "status: 401" in result.stderr and "next step" in result.stderr
    assert "attempt: 1" in result.stderr and "elapsed_s" in result.stderr and "/api/whoami-v2" in result.stderr
    assert json.loads(result.stdout)["verified"] is False
    assert "z" * 34 not in result.stderr


def test_read_only_token_and_foreign_namespace_are_refused_before_upload(registry, token, env, tmp_path):
    folder = _write(tmp_path / "m", {"a.txt": b"1"})
    read_only = registry.create_token("alice", read_only=True)
    with pytest.raises(PermanentError, match="read-only") as info:
        hubferry.publish(folder, "alice/ro", token=read_only, settings=_settings())
    assert info.value.category == "authentication"
    with pytest.raises(PermanentError, match="cannot write to namespace 'bob'"):
        hubferry.publish(folder, "bob/theirs", token=token, settings=_settings())
    api = HfApi(endpoint=registry.endpoint, token=token)
    assert not api.repo_exists("alice/ro") and not api.repo_exists("bob/theirs")


def test_secret_in_config_is_refused_unless_allowed(registry, token, env, tmp_path):
    folder = _write(tmp_path / "m", {"train.yaml": b"lr: 1\nhf_token: hf_" + b"Q" * 34 + b"\n"})
    result = _run(["push", str(folder), "--repo", "alice/leaky", "--token", token], env)
    assert result.returncode == 2 and "train.yaml:2" in result.stderr and "Q" * 34 not in result.stderr
    assert not HfApi(endpoint=registry.endpoint, token=token).repo_exists("alice/leaky")
    allowed = _run(["push", str(folder), "--repo", "alice/leaky", "--token", token, "--allow-secrets"], env)
    assert allowed.returncode == 0, allowed.stderr


def test_oversized_file_is_refused_with_a_sharding_hint(registry, token, env, tmp_path):
    folder = _write(tmp_path / "m", {"big.bin": b"x" * 2000})
    with pytest.raises(ValidationError, match="per-file limit") as info:
        hubferry.publish(folder, "alice/too-big", token=token, settings=_settings(max_file_size=1000))
    assert "shard" in info.value.hint


def test_tampered_blob_is_caught_by_verification(registry, token, env, tmp_path):
    folder = _write(tmp_path / "m", {"w.safetensors": os.urandom(MiB), "c.json": b"{}"})

    def tamper_before_verify(event):
        if event.stage == "verifying":
            testing.tamper_file(registry.data_dir, "alice/tampered", "w.safetensors")

    with pytest.raises(VerificationError, match="w.safetensors") as info:
        hubferry.publish(folder, "alice/tampered", token=token, settings=_settings(),
                         progress=tamper_before_verify)
    assert info.value.repo_id == "alice/tampered"
    # A later re-push sends the file again and ends verified.
    pub = hubferry.publish(folder, "alice/tampered", token=token, settings=_settings())
    assert pub.verified and pub.bytes_uploaded >= MiB
    files = [f for f in pub.files if f.path_in_repo == "w.safetensors"]
    verify(HfApi(endpoint=registry.endpoint, token=token), "alice/tampered", "model", pub.commit_sha, files,
           __import__("hubferry.hub.retry", fromlist=["RetryPolicy"]).RetryPolicy())


def test_unreachable_endpoint_is_a_network_error_after_retries(env, token, tmp_path):
    folder = _write(tmp_path / "m", {"a.txt": b"1"})
    with pytest.raises(TransientError) as info:
        hubferry.publish(folder, "alice/x", token=token, endpoint="http://127.0.0.1:9",
                         settings=_settings(max_attempts=2, retry_base_delay=0.01))
    assert info.value.category == "network" and info.value.attempt == 2


def test_faults_on_a_fifth_of_requests_still_end_verified(tmp_path, monkeypatch, env):
    kinds = "500,503,429,cut,lost"
    with testing.running_registry(tmp_path / "faulty", fault_rate=0.25, fault_seed=7, fault_kinds=kinds,
                                  multipart_threshold=2 * MiB, chunk_size=MiB) as reg:
        tok = reg.create_token("alice")
        files = {f"w{i}.safetensors": os.urandom(3 * MiB) for i in range(3)}
        files.update({f"cfg{i}.json": f'{{"i": {i}}}'.encode() for i in range(6)})
        folder = _write(tmp_path / "m", files)
        pub = hubferry.publish(folder, "alice/faulty", token=tok, endpoint=reg.endpoint,
                               settings=_settings(commit_max_files=4, max_attempts=10))
        injected = reg.faults_injected()
        assert pub.verified
        stats = {"requests": reg.requests_seen(), "faults": injected}
        print("fault test:", stats)
        assert injected >= 0.2 * stats["requests"] * 0.5  # the seeded sequence really injected faults
    # One commit per batch: a lost commit response never made a second commit.
    assert pub.commits_created == 3


def _stored_objects(data_dir: Path) -> int:
    return testing.stored_lfs_objects(data_dir)


def test_resume_after_kill_9_sends_only_what_is_missing(tmp_path, env):
    with testing.running_registry(tmp_path / "resume") as reg:
        tok = reg.create_token("alice")
        files = {f"shard-{i}.safetensors": os.urandom(16 * MiB) for i in range(8)}
        folder = _write(tmp_path / "m", files)
        total = 8 * 16 * MiB
        child_env = {**env, "HF_ENDPOINT": reg.endpoint, "HUBFERRY_PREUPLOAD_GROUP_BYTES": str(16 * MiB),
                     "HUBFERRY_COMMIT_MAX_FILES": "3"}
        proc = subprocess.Popen([sys.executable, "-m", "hubferry", "push", str(folder), "--repo", "alice/resume",
                                 "--token", tok, "--json"], env=child_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 60
        while _stored_objects(reg.data_dir) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        stored_before = _stored_objects(reg.data_dir)
        assert 0 < stored_before < 8, "the kill must land mid-push"
        result = _run(["push", str(folder), "--repo", "alice/resume", "--token", tok, "--json"], child_env)
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["verified"]
        resent = data["bytes_uploaded"]
        print(f"resume test: {stored_before}/8 objects stored before kill -9; re-run sent {resent} of {total} bytes")
        assert resent <= total - stored_before * 16 * MiB + 16 * MiB  # at most the one object in flight again
        remote = {f.path: f for f in HfApi(endpoint=reg.endpoint, token=tok).list_repo_tree(
            "alice/resume", recursive=True) if hasattr(f, "lfs") and f.lfs}
        assert {p: remote[p].lfs.sha256 for p in files} == {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
