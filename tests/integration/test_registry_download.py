"""Downloads through huggingface_hub, Range requests, and the tamper helpers a verifier is tested with."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import RemoteEntryNotFoundError
from huggingface_hub.utils import get_session

from hubferry.testing import RunningRegistry, corrupt_blob, stored_lfs_objects, tamper_file

MiB = 1024 * 1024


@pytest.fixture
def filled_repo(api: HfApi, repo_id: str, tmp_path: Path) -> tuple[str, dict[str, bytes]]:
    contents = {
        "config.json": b'{"dim": 4}\n',
        "nested/notes \u00e9.md": "caf\u00e9\n".encode(),
        "model.safetensors": os.urandom(200 * 1024),
        "shards/big.bin": os.urandom(MiB + 1234),
    }
    folder = tmp_path / "upload"
    for path, data in contents.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    api.upload_folder(folder_path=folder, repo_id=repo_id)
    return repo_id, contents


def test_hf_hub_download_regular_and_lfs(
    filled_repo: tuple[str, dict[str, bytes]], registry: RunningRegistry, alice_token: str
) -> None:
    repo_id, contents = filled_repo
    for path, data in contents.items():
        local = hf_hub_download(repo_id, path, endpoint=registry.endpoint, token=alice_token)
        assert Path(local).read_bytes() == data, path


def test_private_lfs_download_needs_the_token(
    api: HfApi, registry: RunningRegistry, alice_token: str, tmp_path: Path
) -> None:
    import uuid

    private = f"alice/private-{uuid.uuid4().hex[:8]}"
    api.create_repo(private, private=True)
    data = os.urandom(50_000)
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=private)
    assert Path(hf_hub_download(private, "w.bin", endpoint=registry.endpoint, token=alice_token)).read_bytes() == data
    from huggingface_hub.errors import RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(private, "w.bin", endpoint=registry.endpoint, token=False, cache_dir=tmp_path / "anon")


def test_snapshot_download(filled_repo: tuple[str, dict[str, bytes]], registry: RunningRegistry, alice_token: str,
                           tmp_path: Path) -> None:  # fmt: skip
    repo_id, contents = filled_repo
    snapshot = Path(snapshot_download(repo_id, endpoint=registry.endpoint, token=alice_token))
    for path, data in contents.items():
        assert (snapshot / path).read_bytes() == data, path
    assert (snapshot / ".gitattributes").exists()


def test_resolve_headers_and_range(filled_repo: tuple[str, dict[str, bytes]], registry: RunningRegistry) -> None:
    repo_id, contents = filled_repo
    session = get_session()
    url = f"{registry.endpoint}/{repo_id}/resolve/main/config.json"
    head = session.head(url, headers={"accept-encoding": "identity"}, follow_redirects=False)
    assert head.status_code == 200
    data = contents["config.json"]
    git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert head.headers["etag"] == f'"{git_oid}"'
    assert len(head.headers["x-repo-commit"]) == 40
    assert head.headers["content-length"] == str(len(data))
    assert head.headers["accept-ranges"] == "bytes"
    assert "content-encoding" not in head.headers
    part = session.get(url, headers={"range": "bytes=2-5"})
    assert part.status_code == 206 and part.content == data[2:6]

    lfs_url = f"{registry.endpoint}/{repo_id}/resolve/main/shards/big.bin"
    redirect = session.head(lfs_url, follow_redirects=False)
    big = contents["shards/big.bin"]
    assert redirect.status_code == 302
    assert redirect.headers["x-linked-etag"] == f'"{hashlib.sha256(big).hexdigest()}"'
    assert redirect.headers["x-linked-size"] == str(len(big))
    blob = session.get(redirect.headers["location"], headers={"range": f"bytes={len(big) - 10}-"})
    assert blob.status_code == 206 and blob.content == big[-10:]
    tampered_url = redirect.headers["location"].replace("sig=", "sig=0")
    assert session.get(tampered_url).status_code == 403

    missing = session.head(f"{registry.endpoint}/{repo_id}/resolve/main/nope.txt")
    assert missing.status_code == 404
    assert missing.headers["x-error-code"] == "EntryNotFound"
    assert len(missing.headers["x-repo-commit"]) == 40


def test_missing_file_download_raises_entry_not_found(repo_id: str, registry: RunningRegistry, hf_env) -> None:
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(repo_id, "nope.txt", endpoint=registry.endpoint)


def test_tamper_file_changes_what_the_server_reports_and_serves(
    filled_repo: tuple[str, dict[str, bytes]], registry: RunningRegistry, api: HfApi, alice_token: str
) -> None:
    repo_id, contents = filled_repo
    before = {f.path: f for f in api.get_paths_info(repo_id, ["model.safetensors", "config.json"])}
    new_lfs = tamper_file(registry.data_dir, repo_id, "model.safetensors")
    new_regular = tamper_file(registry.data_dir, repo_id, "config.json")
    after = {f.path: f for f in api.get_paths_info(repo_id, ["model.safetensors", "config.json"])}

    original = contents["model.safetensors"]
    assert after["model.safetensors"].lfs.sha256 == new_lfs["sha256"] != hashlib.sha256(original).hexdigest()
    assert after["model.safetensors"].size == before["model.safetensors"].size + 1 == new_lfs["size"]
    assert after["config.json"].blob_id == new_regular["oid"] != before["config.json"].blob_id
    served = Path(hf_hub_download(repo_id, "model.safetensors", endpoint=registry.endpoint, token=alice_token))
    assert hashlib.sha256(served.read_bytes()).hexdigest() == new_lfs["sha256"]

    # The original object is gone from the server, so pushing the file again uploads it again.
    stored_before = stored_lfs_objects(registry.data_dir)
    api.upload_file(path_or_fileobj=original, path_in_repo="model.safetensors", repo_id=repo_id)
    assert stored_lfs_objects(registry.data_dir) == stored_before + 1
    (restored,) = api.get_paths_info(repo_id, ["model.safetensors"])
    assert restored.lfs.sha256 == hashlib.sha256(original).hexdigest()


def test_corrupt_blob_changes_downloaded_bytes(
    filled_repo: tuple[str, dict[str, bytes]], registry: RunningRegistry, alice_token: str
) -> None:
    repo_id, contents = filled_repo
    original = contents["model.safetensors"]
    corrupt_blob(registry.data_dir, hashlib.sha256(original).hexdigest())
    local = hf_hub_download(repo_id, "model.safetensors", endpoint=registry.endpoint, token=alice_token)
    downloaded = Path(local).read_bytes()
    assert len(downloaded) == len(original) and downloaded != original
