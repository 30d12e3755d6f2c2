"""Staged-file URLs are bearer credentials (an HMAC signature, an S3 presigned query): they reach the
trainer and nothing else, never a log line, an error text or a repr."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from botocore.exceptions import ClientError
from replicate.exceptions import ReplicateError

from hubferry import logs, staging
from hubferry.config import Settings
from hubferry.staging import StagedFile
from hubferry.staging.local import LocalStaging
from hubferry.staging.s3 import S3Staging, classify, make_client
from hubferry.trainers import replicate_api

SIGNATURE_MARKS = ("sig=", "X-Amz-Signature", "X-Amz-Credential")


@pytest.fixture
def log_output(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """hubferry's logging as the worker configures it (to stderr, here a buffer); restored afterwards."""
    saved = structlog.get_config()
    hub_level = logging.getLogger("huggingface_hub").level
    buffer = io.StringIO()
    logs.configure(json=False, verbose=True, stream=buffer)
    try:
        yield buffer.getvalue
    finally:
        structlog.configure(**saved)
        logging.getLogger("huggingface_hub").setLevel(hub_level)


class _NoStore:
    """A real boto3 client (it presigns locally) whose uploads succeed without a store, or fail busy."""

    def __init__(self, settings: Settings, busy: int = 0) -> None:
        self._client, self.busy = make_client(settings), busy

    def put_object(self, **kwargs: Any) -> None:
        if self.busy:
            self.busy -= 1
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce your request rate."},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", public_url="https://hubferry.example.org", s3_bucket="datasets",
                    s3_endpoint_url="https://r2.example.com", s3_region="auto",
                    s3_access_key_id="AKIAEXAMPLEKEY000001", s3_secret_access_key="s3-secret-0123456789abcdef",
                    max_attempts=3, retry_base_delay=0, retry_max_delay=0)


@pytest.fixture
def staged_files(settings: Settings, tmp_path: Path) -> list[StagedFile]:
    dataset = tmp_path / "dataset.zip"
    dataset.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    return [
        LocalStaging(settings).stage(dataset, key="job-1/dataset.zip"),
        S3Staging(settings, client=_NoStore(settings, busy=1)).stage(dataset, key="job-1/dataset.zip"),
    ]


def _assert_clean(text: str) -> None:
    for mark in SIGNATURE_MARKS:
        assert mark not in text, f"{mark!r} leaked in: {text[:500]}"


def test_the_urls_carry_signatures_that_must_not_leak(staged_files):
    assert "sig=" in staged_files[0].url and "X-Amz-Signature" in staged_files[1].url


def test_a_staged_file_shows_no_signature_in_its_repr(staged_files):
    for staged in staged_files:
        shown = f"{staged!r} {staged} {[staged]}"
        _assert_clean(shown)
        assert staged.ref in shown and "?<redacted>" in shown


def test_logging_a_staged_file_or_its_url_prints_no_signature(settings, tmp_path, log_output):
    log = logs.get_logger("hubferry.services.datasets")
    dataset = tmp_path / "dataset.zip"
    dataset.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    # The S3 upload answers 503 once: the retry is logged too.
    found = [LocalStaging(settings).stage(dataset, key="job-2/dataset.zip"),
             S3Staging(settings, client=_NoStore(settings, busy=1)).stage(dataset, key="job-2/dataset.zip")]
    for staged in found:
        log.info("dataset staged", staged=staged, url=staged.url, message=f"fetch {staged.url} now")
        log.info("dataset staged", files=[staged], expires_at=staged.expires_at)

    output = log_output()
    assert "dataset staged" in output and "retrying" in output
    _assert_clean(output)


def test_errors_never_carry_a_signed_url_a_service_echoed(settings, staged_files):
    local, presigned = (s.url for s in staged_files)
    # Stores and Replicate quote the URL they could not use in their error messages.
    errors = [
        classify(ClientError({"Error": {"Code": "AccessDenied", "Message": f"denied: {presigned}"},
                              "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject"), "download", "https://x"),
        classify(ClientError({"Error": {"Code": "InternalError", "Message": f"failed {local}"},
                              "ResponseMetadata": {"HTTPStatusCode": 500}}, "PutObject"), "upload", "https://x"),
        replicate_api.classify(ReplicateError(status=422, detail=f"input_images: cannot fetch {local}"),
                               "upload file", "https://api.replicate.com/v1/files"),
        replicate_api.classify(ReplicateError(status=500, detail=f"cannot fetch {presigned}"),
                               "upload file", "https://api.replicate.com/v1/files"),
    ]
    for error in errors:
        _assert_clean(f"{error} {error!r} {error.to_dict()}")


def test_cleanup_failures_are_logged_without_signatures_or_keys(settings, staged_files, log_output):
    # The S3 store cannot be reached: cleanup logs the skipped backend and carries on with the others.
    unreachable = settings.model_copy(update={"s3_endpoint_url": "http://127.0.0.1:9", "connect_timeout": 1,
                                              "max_attempts": 1})
    assert staging.cleanup(unreachable, now=staged_files[0].expires_at.timestamp() + 1) == 1

    output = log_output()
    assert "staging cleanup skipped a backend" in output and "expired staged files deleted" in output
    _assert_clean(output)
    assert "s3-secret-0123456789abcdef" not in output
