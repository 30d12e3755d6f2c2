"""Signed URLs: built from the registry's own address, bound to what they grant, kept out of logs, and
the leftovers of uploads that can no longer complete are removed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download

from hubferry.registry.app import build_context, create_app
from hubferry.registry.cleanup import clean_expired_uploads
from hubferry.testing import RunningRegistry, free_port, running_registry

LFS = {"accept": "application/vnd.git-lfs+json", "content-type": "application/vnd.git-lfs+json"}
EVIL = "evil.example"
MiB = 1024 * 1024


def _batch(endpoint: str, token: str, repo_id: str, data_size: int, oid: str, headers: dict | None = None) -> dict:
    response = httpx2.post(
        f"{endpoint}/{repo_id}.git/info/lfs/objects/batch",
        json={"operation": "upload", "transfers": ["basic", "multipart"], "objects": [{"oid": oid, "size": data_size}]},
        headers={**LFS, "authorization": f"Bearer {token}", **(headers or {})},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    return response.json()["objects"][0]


def test_a_forged_host_header_never_reaches_a_link(
    registry: RunningRegistry, alice_token: str, api: HfApi, repo_id: str
) -> None:
    forged = {"host": EVIL, "x-forwarded-host": EVIL, "forwarded": f"host={EVIL}"}
    auth = {"authorization": f"Bearer {alice_token}", **forged}
    api.upload_file(path_or_fileobj=os.urandom(3000), path_in_repo="w.bin", repo_id=repo_id)
    for size in (1000, 2 * MiB):  # basic and multipart
        obj = _batch(registry.endpoint, alice_token, repo_id, size, hashlib.sha256(b"%d" % size).hexdigest(), forged)
        upload = obj["actions"]["upload"]
        links = [upload["href"], obj["actions"]["verify"]["href"], *upload["header"].values()]
        assert all(EVIL not in link for link in links)
        assert upload["href"].startswith(registry.endpoint + "/lfs-storage/")
    created = httpx2.post(f"{registry.endpoint}/api/repos/create", json={"name": repo_id.split("/")[1]}, headers=auth)
    assert created.status_code == 409 and created.json()["url"] == f"{registry.endpoint}/{repo_id}"
    redirect = httpx2.get(f"{registry.endpoint}/{repo_id}/resolve/main/w.bin", headers=forged)
    assert redirect.headers["location"].startswith(registry.endpoint + "/lfs-blobs/")
    tree = httpx2.get(f"{registry.endpoint}/api/models/{repo_id}/tree/main?recursive=true", headers=forged)
    assert EVIL not in tree.headers.get("link", "")


def test_links_use_the_configured_public_url(tmp_path: Path) -> None:
    with running_registry(tmp_path, public_url="https://hub.example.test/prefix/") as hub:
        token = hub.create_token("alice")
        created = httpx2.post(f"{hub.endpoint}/api/repos/create", json={"name": "r"},
                              headers={"authorization": f"Bearer {token}", "host": EVIL})  # fmt: skip
        obj = _batch(hub.endpoint, token, "alice/r", 10, hashlib.sha256(b"p").hexdigest(), {"host": EVIL})
    assert created.json()["url"] == "https://hub.example.test/prefix/alice/r"
    assert obj["actions"]["upload"]["href"].startswith("https://hub.example.test/prefix/lfs-storage/")


def test_public_url_must_be_an_http_url(tmp_path: Path) -> None:
    from hubferry.registry.settings import RegistrySettings

    for bad in ("javascript:alert(1)", "hub.example.com", "https://hub.example.com/?x=1"):
        with pytest.raises(ValueError, match="http"):
            RegistrySettings(data_dir=tmp_path, public_url=bad)


@pytest.fixture
def lfs_file(api: HfApi, repo_id: str, registry: RunningRegistry) -> tuple[str, bytes, str]:
    """``(repo_id, bytes, signed download URL)`` of an LFS file."""
    data = os.urandom(5000)
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id)
    redirect = httpx2.get(f"{registry.endpoint}/{repo_id}/resolve/main/w.bin", timeout=20)
    assert httpx2.get(redirect.headers["location"]).content == data
    return repo_id, data, redirect.headers["location"]


def test_a_download_link_dies_with_its_repo(lfs_file: tuple[str, bytes, str], api: HfApi) -> None:
    repo_id, data, url = lfs_file
    api.delete_repo(repo_id)
    assert httpx2.get(url).status_code == 404
    # Recreated with the same name and the same file: the old link stays dead.
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id=repo_id)
    gone = httpx2.get(url)
    assert gone.status_code == 404 and "no longer valid" in gone.json()["error"]


def test_lfs_batch_download_links_are_bound_too(
    lfs_file: tuple[str, bytes, str], registry: RunningRegistry, alice_token: str, api: HfApi
) -> None:
    repo_id, data, _ = lfs_file
    response = httpx2.post(
        f"{registry.endpoint}/{repo_id}.git/info/lfs/objects/batch",
        json={"operation": "download", "objects": [{"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}]},
        headers={**LFS, "authorization": f"Bearer {alice_token}"},
    )
    href = response.json()["objects"][0]["actions"]["download"]["href"]
    assert httpx2.get(href).content == data
    api.delete_repo(repo_id)
    assert httpx2.get(href).status_code == 404


def test_the_access_log_never_shows_a_signature(tmp_path: Path, hf_env: Path) -> None:
    data_dir, port = tmp_path / "hub", free_port()
    token = subprocess.run([sys.executable, "-m", "hubferry.registry", "token", "create", "alice", "--data",
                            str(data_dir)], capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "HUBFERRY_HUB_MULTIPART_THRESHOLD": str(MiB), "HUBFERRY_HUB_CHUNK_SIZE": str(MiB // 2)}
    with open(log_path, "wb") as log:
        command = [sys.executable, "-m", "hubferry.registry", "serve", "--data", str(data_dir), "--port", str(port),
                   "--log-level", "info"]  # fmt: skip
        server = subprocess.Popen(command, stdout=log, stderr=log, env=env)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        _wait_for(endpoint)
        api = HfApi(endpoint=endpoint, token=token)
        api.create_repo("alice/logged")
        data = os.urandom(2 * MiB)  # multipart: part URLs and the completion URL are signed
        api.upload_file(path_or_fileobj=data, path_in_repo="w.bin", repo_id="alice/logged")
        local = hf_hub_download("alice/logged", "w.bin", endpoint=endpoint, token=token)
        assert Path(local).read_bytes() == data
    finally:
        server.terminate()
        server.wait(timeout=10)
    text = log_path.read_text()
    assert "/lfs-storage/" in text and "/lfs-blobs/" in text, text[-2000:]  # the access log is on
    assert "sig=" not in text and "exp=" not in text


def _wait_for(endpoint: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{endpoint}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{endpoint} did not start")


def _start_multipart(registry: RunningRegistry, token: str, repo_id: str) -> tuple[dict, bytes]:
    data = os.urandom(2 * MiB)
    obj = _batch(registry.endpoint, token, repo_id, len(data), hashlib.sha256(data).hexdigest())
    upload = obj["actions"]["upload"]
    assert httpx2.put(upload["header"]["1"], content=data[: 256 * 1024]).status_code == 200
    return upload, data


def test_expired_multipart_parts_are_removed(registry: RunningRegistry, alice_token: str, repo_id: str) -> None:
    upload, data = _start_multipart(registry, alice_token, repo_id)
    upload_id = upload["href"].split("?")[0].rsplit("/", 1)[1]
    parts = registry.data_dir / "blobs" / "multipart" / upload_id
    ctx = build_context(registry.settings)
    try:
        assert clean_expired_uploads(ctx) == 0 and parts.exists()  # still in time: kept
        later = time.time() + 2 * registry.settings.url_ttl_s + 60
        assert clean_expired_uploads(ctx, now=later) >= 1
    finally:
        ctx.engine.dispose()
    assert not parts.exists()
    completion = httpx2.post(upload["href"], json={"oid": hashlib.sha256(data).hexdigest(), "parts": []})
    assert completion.status_code == 400


def test_the_served_app_cleans_up_on_startup_and_in_the_background(tmp_path: Path) -> None:
    from hubferry.registry.settings import RegistrySettings

    app = create_app(RegistrySettings(data_dir=tmp_path, url_ttl_s=60, cleanup_interval_s=0.05))
    stale = tmp_path / "blobs" / "multipart" / ("a" * 32)
    stale.mkdir(parents=True)
    (stale / "00001.part").write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale / "00001.part", (old, old))
    os.utime(stale, (old, old))
    seen: dict[str, Any] = {}

    async def receive_events() -> None:
        events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> dict[str, Any]:
            event = next(events)
            if event["type"] == "lifespan.shutdown":
                await asyncio.sleep(0.3)  # let the janitor run a few rounds
                seen["janitor"] = any(t.name == "registry-janitor" for t in threading.enumerate())
                seen["stale_removed"] = not stale.exists()
            return event

        async def send(message: dict[str, Any]) -> None:
            seen.setdefault("sent", []).append(message["type"])

        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    asyncio.run(receive_events())
    app.registry.engine.dispose()
    assert seen["sent"] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert seen["janitor"] and seen["stale_removed"]
    assert not any(t.name == "registry-janitor" for t in threading.enumerate())
