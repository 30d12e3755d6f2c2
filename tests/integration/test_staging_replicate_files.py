"""Staging through Replicate's Files API with the official client, against an ``httpx.MockTransport``
that implements ``POST /v1/files``, ``GET`` and ``DELETE /v1/files/{id}`` as Replicate answers them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from hubferry import staging
from hubferry.config import Settings
from hubferry.errors import ConfigError, PermanentError
from hubferry.staging.index import StagingIndex
from hubferry.staging.replicate_files import ReplicateFilesStaging

BASE_URL = "http://replicate.fake"
JOB_TOKEN = "r8_jobtoken" + "a" * 29
SETTINGS_TOKEN = "r8_settings" + "b" * 29
TTL_S = 600


@dataclass
class FakeFiles:
    """Replicate's Files API: files per token's owner, 201/204/404/401 as the real service answers."""

    tokens: dict[str, str] = field(default_factory=lambda: {JOB_TOKEN: "alice", SETTINGS_TOKEN: "alice"})
    #: Replicate's own expiry of uploaded files.
    remote_ttl_s: float = 3600.0
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    #: Statuses answered to the next POSTs, one each.
    post_faults: list[int] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        auth = request.headers.get("authorization")
        self.requests.append((request.method, request.url.path, auth))
        if auth not in {f"Bearer {t}" for t in self.tokens}:
            return httpx.Response(401, json={"title": "Unauthenticated", "detail": "You did not pass a valid "
                                             "authentication token", "status": 401})
        path = request.url.path
        if request.method == "POST" and path == "/v1/files":
            if self.post_faults:
                return httpx.Response(self.post_faults.pop(0), json={"detail": "Service Unavailable"})
            return httpx.Response(201, json=self._create(request))
        file_id = path.removeprefix("/v1/files/")
        if file_id not in self.files:
            return httpx.Response(404, json={"detail": "Not found.", "status": 404})
        if request.method == "GET":
            return httpx.Response(200, json=self.files[file_id]["json"])
        if request.method == "DELETE":
            del self.files[file_id]
            return httpx.Response(204)
        return httpx.Response(405)

    def _create(self, request: httpx.Request) -> dict[str, Any]:
        head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
        form = {part.get_param("name", header="content-disposition"): part
                for part in BytesParser(policy=HTTP).parsebytes(head + request.content).iter_parts()}
        content = form["content"]
        data = content.get_payload(decode=True)
        metadata = json.loads(form["metadata"].get_payload(decode=True)) if "metadata" in form else {}
        file_id = base64.b32encode(os.urandom(20)).decode().lower()[:26]
        now = datetime.now(UTC)
        body = {
            "id": file_id, "name": content.get_filename(), "content_type": content.get_content_type(),
            "size": len(data), "etag": hashlib.md5(data).hexdigest(),
            "checksums": {"sha256": hashlib.sha256(data).hexdigest()}, "metadata": metadata,
            "created_at": now.isoformat(),
            "expires_at": datetime.fromtimestamp(now.timestamp() + self.remote_ttl_s, UTC).isoformat(),
            "urls": {"get": f"{BASE_URL}/v1/files/{file_id}"},
        }
        self.files[file_id] = {"json": body, "data": data}
        return body


@pytest.fixture
def fake() -> FakeFiles:
    return FakeFiles()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", replicate_base_url=BASE_URL, staging_ttl_s=TTL_S,
                    max_attempts=3, retry_base_delay=0, retry_max_delay=0)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "dataset.zip"
    path.write_bytes(os.urandom(200_000))
    return path


def test_auto_stages_replicate_datasets_on_replicate_files(settings):
    assert isinstance(staging.for_setting(settings, "replicate"), ReplicateFilesStaging)


def test_the_upload_carries_the_exact_bytes_and_the_trainer_gets_the_file_url(settings, fake, dataset):
    before = time.time()
    staged = ReplicateFilesStaging(settings, transport=fake.transport()).stage(
        dataset, key="job-1/dataset.zip", token=JOB_TOKEN)

    (file_id, stored), = fake.files.items()
    assert stored["data"] == dataset.read_bytes()
    assert stored["json"]["name"] == "dataset.zip" and stored["json"]["content_type"] == "application/zip"
    assert stored["json"]["metadata"]["hubferry_key"] == "job-1/dataset.zip"
    assert fake.requests == [("POST", "/v1/files", f"Bearer {JOB_TOKEN}")]
    assert staged.url == f"{BASE_URL}/v1/files/{file_id}"
    assert staged.ref == f"replicate-files:{file_id}"
    assert before + TTL_S - 2 <= staged.expires_at.timestamp() <= time.time() + TTL_S  # ours: earlier than Replicate's


def test_the_expiry_is_replicates_when_it_comes_first(settings, fake, dataset):
    fake.remote_ttl_s = 120
    staged = ReplicateFilesStaging(settings, transport=fake.transport()).stage(
        dataset, key="job-1/dataset.zip", token=JOB_TOKEN)
    assert abs(staged.expires_at.timestamp() - (time.time() + 120)) < 5


def test_the_settings_token_is_used_when_the_job_has_none(settings, fake, dataset):
    with_token = settings.model_copy(update={"replicate_token": SecretStr(SETTINGS_TOKEN)})
    ReplicateFilesStaging(with_token, transport=fake.transport()).stage(dataset, key="job-1/dataset.zip")
    assert fake.requests == [("POST", "/v1/files", f"Bearer {SETTINGS_TOKEN}")]


def test_no_token_at_all_is_a_config_error_before_any_request(settings, fake, dataset):
    with pytest.raises(ConfigError) as caught:
        ReplicateFilesStaging(settings, transport=fake.transport()).stage(dataset, key="job-1/dataset.zip")
    assert caught.value.setting == "HUBFERRY_REPLICATE_TOKEN"
    assert fake.requests == []


def test_an_unavailable_service_is_retried_and_one_file_is_stored(settings, fake, dataset):
    fake.post_faults = [503, 502]
    staged = ReplicateFilesStaging(settings, transport=fake.transport()).stage(
        dataset, key="job-1/dataset.zip", token=JOB_TOKEN)

    assert [r[0] for r in fake.requests] == ["POST"] * 3
    (file_id, stored), = fake.files.items()
    assert staged.ref == f"replicate-files:{file_id}" and stored["data"] == dataset.read_bytes()


def test_a_refused_token_fails_at_once_with_a_hint_and_without_the_token(settings, fake, dataset):
    with pytest.raises(PermanentError) as caught:
        ReplicateFilesStaging(settings, transport=fake.transport()).stage(
            dataset, key="job-1/dataset.zip", token="r8_" + "z" * 37)

    error = caught.value
    assert error.category == "authentication" and error.status == 401 and error.attempt == 1
    assert error.url == f"{BASE_URL}/v1/files"
    assert "token" in error.hint
    assert "z" * 37 not in str(error)
    assert len(fake.requests) == 1


def test_delete_removes_the_file_on_replicate_and_tolerates_one_already_gone(settings, fake, dataset):
    store = ReplicateFilesStaging(settings, transport=fake.transport())
    staged = store.stage(dataset, key="job-1/dataset.zip", token=JOB_TOKEN)
    file_id = staged.ref.removeprefix("replicate-files:")

    store.delete(staged.ref, token=JOB_TOKEN)

    assert fake.files == {}
    assert fake.requests[-1] == ("DELETE", f"/v1/files/{file_id}", f"Bearer {JOB_TOKEN}")
    assert StagingIndex(settings.home / "staging").get(staged.ref) is None
    store.delete(staged.ref, token=JOB_TOKEN)  # 404 now: nothing to do, no error


def test_cleanup_deletes_expired_files_only(settings, fake, dataset):
    with_token = settings.model_copy(update={"replicate_token": SecretStr(SETTINGS_TOKEN)})
    long_ago = time.time() - TTL_S - 60
    old = ReplicateFilesStaging(with_token, transport=fake.transport(), clock=lambda: long_ago).stage(
        dataset, key="old/dataset.zip", token=JOB_TOKEN)
    store = ReplicateFilesStaging(with_token, transport=fake.transport())
    fresh = store.stage(dataset, key="fresh/dataset.zip", token=JOB_TOKEN)

    assert staging.cleanup(with_token, backends=[store]) == 1

    assert sorted(fake.files) == [fresh.ref.removeprefix("replicate-files:")]
    assert ("DELETE", f"/v1/files/{old.ref.removeprefix('replicate-files:')}", f"Bearer {SETTINGS_TOKEN}") \
        in fake.requests
    assert staging.cleanup(with_token, backends=[store]) == 0


def test_cleanup_without_a_token_forgets_only_files_replicate_has_expired(settings, fake, dataset):
    index = StagingIndex(settings.home / "staging")
    now = time.time()
    index.record("replicate-files:gonealready", now - 100, remote_expires_at=now - 50)
    index.record("replicate-files:stillthere", now - 100, remote_expires_at=now + 3600)
    store = ReplicateFilesStaging(settings, transport=fake.transport())

    assert staging.cleanup(settings, backends=[store]) == 1

    assert index.get("replicate-files:gonealready") is None
    assert index.get("replicate-files:stillthere") is not None  # kept until it can be deleted or expires there
    assert fake.requests == []
