"""S3 staging against moto's S3 server (a real HTTP endpoint on 127.0.0.1): what a trainer downloads
with the presigned URL, when it expires, deletion, cleanup and credentials the store refuses."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from botocore.exceptions import ClientError

from hubferry import staging
from hubferry.config import Settings
from hubferry.errors import ConfigError, PermanentError, TransientError
from hubferry.staging.s3 import EXPIRES_META, S3Staging, make_client

TTL_S = 600


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # its access log prints every presigned URL
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, s3_endpoint: str) -> Settings:
    """Settings for a fresh bucket on the moto server."""
    bucket = f"staging-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        home=tmp_path / "home", staging="s3", s3_bucket=bucket, s3_endpoint_url=s3_endpoint, s3_region="us-east-1",
        s3_access_key_id="AKIAEXAMPLEKEY000001", s3_secret_access_key="s3-secret-" + uuid.uuid4().hex,
        staging_ttl_s=TTL_S, max_attempts=3, retry_base_delay=0, retry_max_delay=0,
    )
    make_client(settings).create_bucket(Bucket=bucket)
    return settings


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "dataset.zip"
    path.write_bytes(os.urandom(300_000))
    return path


def _objects(settings: Settings) -> list[str]:
    listed = make_client(settings).list_objects_v2(Bucket=settings.s3_bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_a_trainer_downloads_the_exact_bytes_with_the_presigned_url_alone(settings, dataset):
    store = staging.for_setting(settings, "runpod")
    staged = store.stage(dataset, key="job-1/dataset.zip")

    assert store.kind == "s3"
    assert staged.ref == f"s3:{settings.s3_bucket}/hubferry/staging/job-1/dataset.zip"
    response = httpx.get(staged.url)  # no credentials but the URL's own
    assert response.status_code == 200
    assert response.content == dataset.read_bytes()
    assert response.headers["content-type"] == "application/zip"
    assert "X-Amz-Signature" in staged.url and settings.s3_access_key_id in staged.url


def test_the_presigned_url_and_the_object_expire_after_the_ttl(settings, dataset):
    before = time.time()
    staged = staging.for_setting(settings, "runpod").stage(dataset, key="job-2/dataset.zip")

    query = parse_qs(urlsplit(staged.url).query)
    assert query["X-Amz-Expires"] == [str(TTL_S)]  # signed into the URL: the store refuses it afterwards
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    assert before - 2 <= signed_at <= time.time() + 1
    assert abs(staged.expires_at.timestamp() - (signed_at + TTL_S)) <= 2
    head = make_client(settings).head_object(Bucket=settings.s3_bucket, Key="hubferry/staging/job-2/dataset.zip")
    assert int(head["Metadata"][EXPIRES_META]) == int(staged.expires_at.timestamp())


def test_delete_removes_the_object_and_tolerates_one_already_gone(settings, dataset):
    staged = staging.for_setting(settings, "runpod").stage(dataset, key="job-3/dataset.zip")

    staging.delete(settings, staged.ref)

    assert _objects(settings) == []
    assert httpx.get(staged.url).status_code == 404
    staging.delete(settings, staged.ref)  # again: nothing to do, no error


def test_deleting_from_a_bucket_removed_meanwhile_is_not_an_error(settings, dataset):
    staged = staging.for_setting(settings, "runpod").stage(dataset, key="job-3/dataset.zip")
    client = make_client(settings)
    client.delete_object(Bucket=settings.s3_bucket, Key="hubferry/staging/job-3/dataset.zip")
    client.delete_bucket(Bucket=settings.s3_bucket)

    staging.delete(settings, staged.ref)


def test_cleanup_deletes_expired_staged_objects_only(settings, dataset):
    long_ago = time.time() - TTL_S - 60
    old = S3Staging(settings, clock=lambda: long_ago).stage(dataset, key="old/dataset.zip")
    fresh = S3Staging(settings).stage(dataset, key="fresh/dataset.zip")
    # Someone else's object under the same prefix, with no hubferry expiry: never touched.
    make_client(settings).put_object(Bucket=settings.s3_bucket, Key="hubferry/staging/notes.txt", Body=b"mine")

    assert staging.cleanup(settings) == 1

    assert _objects(settings) == ["hubferry/staging/fresh/dataset.zip", "hubferry/staging/notes.txt"]
    assert httpx.get(old.url).status_code == 404
    assert httpx.get(fresh.url).content == dataset.read_bytes()
    assert staging.cleanup(settings) == 0


def test_credentials_the_store_refuses_give_a_clear_error_without_retrying(settings, dataset, s3_endpoint):
    httpx.post(f"{s3_endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()  # moto checks keys now
    try:
        with pytest.raises(PermanentError) as caught:
            staging.for_setting(settings, "runpod").stage(dataset, key="job-4/dataset.zip")
    finally:
        httpx.post(f"{s3_endpoint}/moto-api/reset-auth", content=b"inf").raise_for_status()

    error = caught.value
    assert error.category == "authentication"
    assert error.status == 403 and error.code == "InvalidAccessKeyId"
    assert error.attempt == 1
    assert error.url == f"{s3_endpoint}/{settings.s3_bucket}/hubferry/staging/job-4/dataset.zip"
    assert "HUBFERRY_S3_ACCESS_KEY_ID" in error.hint and "HUBFERRY_S3_SECRET_ACCESS_KEY" in error.hint
    assert settings.s3_secret_access_key.get_secret_value() not in str(error) + repr(error.to_dict())


def test_half_of_a_key_pair_is_a_config_error_naming_the_missing_setting(settings):
    with pytest.raises(ConfigError) as caught:
        staging.for_setting(settings.model_copy(update={"s3_secret_access_key": None}), "runpod")
    assert caught.value.setting == "HUBFERRY_S3_SECRET_ACCESS_KEY"


class _Flaky:
    """An S3 client whose first ``failures`` uploads answer 503 SlowDown, as a busy store does."""

    def __init__(self, client: Any, failures: int) -> None:
        self._client, self.failures, self.puts = client, failures, 0

    def put_object(self, **kwargs: Any) -> Any:
        self.puts += 1
        if self.puts <= self.failures:
            kwargs["Body"].read()  # the request body went out before the answer came back
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce your request rate."},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")
        return self._client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_busy_store_is_retried_with_the_whole_file_resent(settings, dataset):
    flaky = _Flaky(make_client(settings), failures=2)

    staged = S3Staging(settings, client=flaky).stage(dataset, key="job-5/dataset.zip")

    assert flaky.puts == 3
    assert httpx.get(staged.url).content == dataset.read_bytes()


def test_a_store_busy_for_every_attempt_gives_up_with_the_attempts_counted(settings, dataset):
    flaky = _Flaky(make_client(settings), failures=10)

    with pytest.raises(TransientError) as caught:
        S3Staging(settings, client=flaky).stage(dataset, key="job-6/dataset.zip")

    assert flaky.puts == settings.max_attempts
    assert caught.value.attempt == settings.max_attempts and caught.value.status == 503
    assert caught.value.category == "rate_limit" and "gave up after 3 attempts" in caught.value.hint


def test_an_unreachable_endpoint_is_a_network_error_after_the_retries(settings, dataset):
    unreachable = settings.model_copy(update={"s3_endpoint_url": "http://127.0.0.1:9", "connect_timeout": 2})

    with pytest.raises(TransientError) as caught:
        S3Staging(unreachable).stage(dataset, key="job-7/dataset.zip")

    assert caught.value.category == "network" and caught.value.attempt == settings.max_attempts
    assert caught.value.url.startswith("http://127.0.0.1:9/")
