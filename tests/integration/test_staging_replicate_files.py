"""Staging through Replicate's Files API with the official client, against the fake Replicate server
(``fakes.replicate_server``) on 127.0.0.1, reached through ``replicate_base_url`` as in production."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from fakes.replicate_server import FakeReplicate
from hubferry import staging
from hubferry.config import Settings
from hubferry.errors import ConfigError, PermanentError
from hubferry.staging.index import StagingIndex
from hubferry.staging.replicate_files import ReplicateFilesStaging

pytest_plugins = ["fakes.replicate_fixtures"]

SETTINGS_TOKEN = "r8_settings" + "b" * 29
TTL_S = 600


@pytest.fixture
def settings(tmp_path: Path, fake_replicate: FakeReplicate) -> Settings:
    return Settings(home=tmp_path / "home", replicate_base_url=fake_replicate.base_url, staging_ttl_s=TTL_S,
                    max_attempts=3, retry_base_delay=0, retry_max_delay=0)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "bundle-7f3a.zip"  # named by the key on Replicate, not by this file
    path.write_bytes(os.urandom(200_000))
    return path


def _with_token(settings: Settings, token: str) -> Settings:
    return settings.model_copy(update={"replicate_token": SecretStr(token)})


def _file_id(ref: str) -> str:
    return ref.removeprefix("replicate-files:")


def test_the_trainer_gets_a_replicate_file_url_holding_the_exact_bytes(settings, fake_replicate, dataset):
    before = time.time()
    store = staging.for_setting(settings, "replicate")  # auto: Replicate's own Files API
    staged = store.stage(dataset, key="job-1/dataset.zip", token=fake_replicate.token)

    assert isinstance(store, ReplicateFilesStaging)
    file_id = _file_id(staged.ref)
    assert fake_replicate.file_bytes(file_id) == dataset.read_bytes()
    assert staged.url == f"{fake_replicate.base_url}/v1/files/{file_id}"
    described = httpx.get(staged.url, headers={"authorization": f"Bearer {fake_replicate.token}"}).json()
    assert described["name"] == "dataset.zip" and described["content_type"] == "application/zip"
    assert described["metadata"]["hubferry_key"] == "job-1/dataset.zip"
    assert before + TTL_S - 2 <= staged.expires_at.timestamp() <= time.time() + TTL_S  # ours: before Replicate's


def test_the_expiry_is_replicates_when_it_comes_first(settings, fake_replicate, dataset):
    two_days = settings.model_copy(update={"staging_ttl_s": 48 * 3600})
    staged = staging.for_setting(two_days, "replicate").stage(dataset, key="job-1/dataset.zip",
                                                              token=fake_replicate.token)
    assert abs(staged.expires_at.timestamp() - (time.time() + 24 * 3600)) < 60  # the fake keeps files a day


def test_the_settings_token_is_used_when_the_job_has_none(settings, fake_replicate, dataset):
    fake_replicate.add_token(SETTINGS_TOKEN, "bob")
    staged = staging.for_setting(_with_token(settings, SETTINGS_TOKEN), "replicate").stage(
        dataset, key="job-1/dataset.zip")
    assert fake_replicate.visible_file(_file_id(staged.ref), "bob") is not None


def test_no_token_at_all_is_a_config_error_before_any_request(settings, fake_replicate, dataset):
    with pytest.raises(ConfigError) as caught:
        staging.for_setting(settings, "replicate").stage(dataset, key="job-1/dataset.zip")
    assert caught.value.setting == "HUBFERRY_REPLICATE_TOKEN"
    assert fake_replicate.calls() == 0


class _FailingPosts(httpx.BaseTransport):
    """The network path to Replicate, where the first uploads meet a 503 and a 502 from a proxy."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses, self.real = statuses, httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and self.statuses:
            request.read()
            return httpx.Response(self.statuses.pop(0), json={"detail": "Service Unavailable"})
        return self.real.handle_request(request)


def test_an_unavailable_service_is_retried_and_one_file_is_stored(settings, fake_replicate, dataset):
    transport = _FailingPosts([503, 502])
    staged = ReplicateFilesStaging(settings, transport=transport).stage(
        dataset, key="job-1/dataset.zip", token=fake_replicate.token)

    assert transport.statuses == []
    assert [f.id for f in fake_replicate.list_files("alice")] == [_file_id(staged.ref)]
    assert fake_replicate.file_bytes(_file_id(staged.ref)) == dataset.read_bytes()


def test_a_refused_token_fails_at_once_with_a_hint_and_without_the_token(settings, fake_replicate, dataset):
    refused = "r8_" + "z" * 37
    with pytest.raises(PermanentError) as caught:
        staging.for_setting(settings, "replicate").stage(dataset, key="job-1/dataset.zip", token=refused)

    error = caught.value
    assert error.category == "authentication" and error.status == 401 and error.attempt == 1
    assert error.url == f"{fake_replicate.base_url}/v1/files"
    assert "token" in error.hint
    assert refused not in str(error)
    assert fake_replicate.calls(method="POST") == 1


def test_delete_removes_the_file_on_replicate_and_tolerates_one_already_gone(settings, fake_replicate, dataset):
    staged = staging.for_setting(settings, "replicate").stage(dataset, key="job-1/dataset.zip",
                                                              token=fake_replicate.token)

    staging.delete(settings, staged.ref, token=fake_replicate.token)

    assert fake_replicate.list_files("alice") == []
    assert StagingIndex(settings.home / "staging").get(staged.ref) is None
    staging.delete(settings, staged.ref, token=fake_replicate.token)  # 404 now: nothing to do, no error


def test_cleanup_deletes_expired_files_only(settings, fake_replicate, dataset):
    with_token = _with_token(settings, fake_replicate.token)
    long_ago = time.time() - TTL_S - 60
    old = ReplicateFilesStaging(with_token, clock=lambda: long_ago).stage(dataset, key="old/dataset.zip")
    fresh = staging.for_setting(with_token, "replicate").stage(dataset, key="fresh/dataset.zip")

    assert staging.cleanup(with_token) == 1

    assert [f.id for f in fake_replicate.list_files("alice")] == [_file_id(fresh.ref)]
    assert fake_replicate.calls(method="DELETE") == 1
    assert StagingIndex(settings.home / "staging").get(old.ref) is None
    assert staging.cleanup(with_token) == 0


def test_cleanup_without_a_token_forgets_only_files_replicate_has_expired(settings, fake_replicate):
    index = StagingIndex(settings.home / "staging")
    now = time.time()
    index.record("replicate-files:gonealready", now - 100, remote_expires_at=now - 50)
    index.record("replicate-files:stillthere", now - 100, remote_expires_at=now + 3600)

    assert staging.cleanup(settings) == 1

    assert index.get("replicate-files:gonealready") is None
    assert index.get("replicate-files:stillthere") is not None  # kept until it can be deleted or expires there
    assert fake_replicate.calls() == 0
