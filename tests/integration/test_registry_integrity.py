"""The registry refuses what it cannot vouch for: unknown LFS objects, wrong bytes, oversize regular files."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest
from huggingface_hub import HfApi
from huggingface_hub.utils import get_session

from hubferry.testing import RunningRegistry

LFS_HEADERS = {"accept": "application/vnd.git-lfs+json", "content-type": "application/vnd.git-lfs+json"}


def _batch(registry: RunningRegistry, token: str, repo_id: str, objects: list[dict]) -> list[dict]:
    response = get_session().post(
        f"{registry.endpoint}/{repo_id}.git/info/lfs/objects/batch",
        json={"operation": "upload", "transfers": ["basic", "multipart"], "objects": objects, "hash_algo": "sha256"},
        headers={**LFS_HEADERS, "authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    return response.json()["objects"]


def _commit(registry: RunningRegistry, token: str, repo_id: str, *lines: dict) -> object:
    body = "\n".join(json.dumps(line) for line in lines).encode()
    return get_session().post(
        f"{registry.endpoint}/api/models/{repo_id}/commit/main",
        content=body,
        headers={"authorization": f"Bearer {token}", "content-type": "application/x-ndjson"},
    )


def test_commit_naming_an_unknown_lfs_object_is_refused(
    registry: RunningRegistry, alice_token: str, repo_id: str, api: HfApi
) -> None:
    oid = hashlib.sha256(b"never uploaded").hexdigest()
    response = _commit(
        registry, alice_token, repo_id,
        {"key": "header", "value": {"summary": "ghost"}},
        {"key": "lfsFile", "value": {"path": "ghost.bin", "algo": "sha256", "oid": oid, "size": 14}},
    )  # fmt: skip
    assert response.status_code == 400
    assert "never uploaded" in response.json()["error"]
    assert api.list_repo_files(repo_id) == [".gitattributes"]


def test_basic_upload_with_wrong_bytes_is_refused_and_nothing_kept(
    registry: RunningRegistry, alice_token: str, repo_id: str
) -> None:
    data = os.urandom(10_000)
    oid = hashlib.sha256(data).hexdigest()
    (obj,) = _batch(registry, alice_token, repo_id, [{"oid": oid, "size": len(data)}])
    href = obj["actions"]["upload"]["href"]
    assert obj["actions"]["verify"]["href"].endswith(f"/{repo_id}.git/info/lfs/objects/verify")

    wrong = bytearray(data)
    wrong[5000] ^= 1
    refused = get_session().put(href, content=bytes(wrong))
    assert refused.status_code == 400 and "sha256 mismatch" in refused.json()["error"]
    short = get_session().put(href, content=data[:-1])
    assert short.status_code == 400 and "Size mismatch" in short.json()["error"]
    (again,) = _batch(registry, alice_token, repo_id, [{"oid": oid, "size": len(data)}])
    assert "actions" in again  # still not stored
    assert list((registry.data_dir / "blobs" / "tmp").iterdir()) == []

    assert get_session().put(href, content=data).status_code == 200
    (stored,) = _batch(registry, alice_token, repo_id, [{"oid": oid, "size": len(data)}])
    assert "actions" not in stored
    verify = get_session().post(
        obj["actions"]["verify"]["href"],
        json={"oid": oid, "size": len(data)},
        headers={**LFS_HEADERS, "authorization": f"Bearer {alice_token}"},
    )
    assert verify.status_code == 200


def test_multipart_completion_checks_the_whole_object(
    registry: RunningRegistry, alice_token: str, repo_id: str
) -> None:
    size = 2 * 1024 * 1024 + 5  # above the 1 MiB test threshold: 9 parts of 256 KiB
    data = os.urandom(size)
    oid = hashlib.sha256(data).hexdigest()
    (obj,) = _batch(registry, alice_token, repo_id, [{"oid": oid, "size": size}])
    header = obj["actions"]["upload"]["header"]
    chunk = int(header["chunk_size"])
    urls = [header[k] for k in sorted((k for k in header if k.isdigit()), key=int)]
    assert len(urls) == -(-size // chunk)
    session = get_session()
    etags = []
    for i, url in enumerate(urls):
        piece = bytearray(data[i * chunk : (i + 1) * chunk])
        if i == 3:
            piece[0] ^= 0xFF  # right size, wrong bytes
        response = session.put(url, content=bytes(piece))
        assert response.status_code == 200 and response.headers["etag"]
        etags.append({"partNumber": i + 1, "etag": response.headers["etag"]})
    completion = session.post(obj["actions"]["upload"]["href"], json={"oid": oid, "parts": etags})
    assert completion.status_code == 400 and "sha256 mismatch" in completion.json()["error"]
    (again,) = _batch(registry, alice_token, repo_id, [{"oid": oid, "size": size}])
    assert "actions" in again


def test_regular_file_over_10_mib_is_refused(registry: RunningRegistry, alice_token: str, repo_id: str) -> None:
    data = b"a" * (10 * 1024 * 1024 + 1)
    response = _commit(
        registry, alice_token, repo_id,
        {"key": "header", "value": {"summary": "too big"}},
        {"key": "file", "value": {"path": "big.txt", "content": base64.b64encode(data).decode(), "encoding": "base64"}},
    )  # fmt: skip
    assert response.status_code == 400
    assert "LFS" in response.json()["error"]


def test_preupload_modes_and_remote_oids(registry: RunningRegistry, alice_token: str, repo_id: str, api: HfApi) -> None:
    api.upload_file(path_or_fileobj=b"hello\n", path_in_repo="a.txt", repo_id=repo_id)
    sample = base64.b64encode(b"plain text").decode()
    binary = base64.b64encode(b"\x00\x01\x02").decode()
    files = [
        {"path": "a.txt", "sample": sample, "size": 6},
        {"path": "b.txt", "sample": sample, "size": 20 * 1024 * 1024},
        {"path": "c.dat", "sample": binary, "size": 3},
        {"path": "d.safetensors", "sample": sample, "size": 10},
        {"path": "e.txt", "sample": "", "size": 0},
    ]
    response = get_session().post(
        f"{registry.endpoint}/api/models/{repo_id}/preupload/main",
        json={"files": files},
        headers={"authorization": f"Bearer {alice_token}"},
    )
    body = response.json()
    modes = {f["path"]: f["uploadMode"] for f in body["files"]}
    assert modes == {"a.txt": "regular", "b.txt": "lfs", "c.dat": "lfs", "d.safetensors": "lfs", "e.txt": "regular"}
    oids = {f["path"]: f["oid"] for f in body["files"]}
    assert oids["a.txt"] == hashlib.sha1(b"blob 6\0hello\n").hexdigest()
    assert oids["b.txt"] is None
    assert all(f["shouldIgnore"] is False for f in body["files"])
    assert body["commitOid"] == api.model_info(repo_id).sha


@pytest.mark.parametrize(
    ("card", "ok"),
    [("---\nlicense: mit\n---\n# Hi\n", True), ("no metadata\n", True), ("---\nlicense: [mit\n---\n", False)],
)
def test_validate_yaml_always_answers_json(registry: RunningRegistry, card: str, ok: bool) -> None:
    response = get_session().post(f"{registry.endpoint}/api/validate-yaml", json={"content": card, "repoType": "model"})
    assert response.status_code == (200 if ok else 400)
    assert (response.json()["errors"] == []) is ok


def test_invalid_readme_metadata_fails_upload(api: HfApi, repo_id: str) -> None:
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=b"---\nlicense: [mit\n---\n", path_in_repo="README.md", repo_id=repo_id)


def test_knowing_a_sha256_does_not_copy_another_namespaces_object(
    registry: RunningRegistry, alice_token: str, bob_token: str, api: HfApi, hf_env
) -> None:
    secret = os.urandom(4096)
    oid = hashlib.sha256(secret).hexdigest()
    private = f"alice/private-{oid[:8]}"
    api.create_repo(private, private=True)
    api.upload_file(path_or_fileobj=secret, path_in_repo="weights.bin", repo_id=private)
    bob = HfApi(endpoint=registry.endpoint, token=bob_token)
    theirs = f"bob/steal-{oid[:8]}"
    bob.create_repo(theirs)
    # Bob's batch must ask for the bytes (it does not reveal that the object exists) ...
    (obj,) = _batch(registry, bob_token, theirs, [{"oid": oid, "size": len(secret)}])
    assert "upload" in obj["actions"]
    # ... and a commit naming the object without uploading it is refused.
    response = _commit(
        registry, bob_token, theirs,
        {"key": "header", "value": {"summary": "steal"}},
        {"key": "lfsFile", "value": {"path": "stolen.bin", "algo": "sha256", "oid": oid, "size": len(secret)}},
    )  # fmt: skip
    assert response.status_code == 400 and "never uploaded" in response.json()["error"]
    # Sending the bytes proves possession: then the same content is fine in Bob's repo too.
    bob.upload_file(path_or_fileobj=secret, path_in_repo="mine.bin", repo_id=theirs)
    assert "mine.bin" in bob.list_repo_files(theirs)
    # Within one namespace, stored objects are not sent again.
    again = _batch(registry, alice_token, private, [{"oid": oid, "size": len(secret)}])
    assert "actions" not in again[0]
