"""failures.classify: what real networks send (proxies, dead servers) becomes a retryable error with context."""

from __future__ import annotations

import json

import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError

from hubferry.errors import PermanentError, TransientError, ValidationError
from hubferry.hub import retry
from hubferry.hub.failures import classify, retry_after_seconds


def _html_error(status: int, title: str) -> HfHubHTTPError:
    request = httpx2.Request("POST", "http://hub.test/api/models/a/b/preupload/main")
    body = f"<html><head><title>{title}</title></head><body><h1>{title}</h1><hr>nginx</body></html>"
    response = httpx2.Response(status, text=body, headers={"Content-Type": "text/html"}, request=request)
    return HfHubHTTPError(f"{status} Server Error", response=response)


def test_an_upload_thread_dying_on_a_dead_server_is_a_network_error_with_url_and_resume_hint():
    request = httpx2.Request("PUT", "http://hub.test/lfs-storage/abc?exp=1&sig=s3cr3t")
    try:
        try:
            raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)
        except httpx2.ConnectError as exc:
            raise RuntimeError("Error while uploading 'w.safetensors' to the Hub.") from exc
    except RuntimeError as wrapped:
        error = classify(wrapped, what="upload LFS files", endpoint="http://hub.test", attempt=3)
    assert type(error) is TransientError and error.category == "network"
    assert error.url == "http://hub.test/lfs-storage/abc?<redacted>" and error.attempt == 3
    assert "re-run to resume" in error.hint and "report it" not in error.hint and "s3cr3t" not in str(error)


def test_a_write_cut_mid_body_is_a_network_error():
    request = httpx2.Request("PUT", "http://hub.test/lfs-storage/abc")
    cut = httpx2.RemoteProtocolError("Server disconnected without sending a response.", request=request)
    wrapped = RuntimeError("Error while uploading 'x' to the Hub.")
    wrapped.__cause__ = cut
    assert classify(wrapped, what="upload", endpoint="http://hub.test").category == "network"


def test_html_proxy_pages_are_transient_and_quoted_by_their_title_not_their_markup():
    for status in (502, 503, 504):
        error = classify(_html_error(status, f"{status} Bad Gateway"), what="upload LFS files", endpoint="e")
        assert type(error) is TransientError and error.category == "service_error" and error.status == status
        assert f"{status} Bad Gateway" in error.message and "<" not in error.message and "text/html" in error.message


def test_a_2xx_answer_that_is_not_json_is_transient():
    def parse() -> None:
        raise json.JSONDecodeError("Expecting value", "<html>", 0)

    with pytest.raises(TransientError) as info:  # through retry.call, as every Hub call goes
        retry.call(parse, what="whoami", endpoint="http://h", policy=retry.RetryPolicy(max_attempts=1))
    error = info.value
    assert error.category == "service_error" and "re-run to resume" in error.hint and error.attempt == 1


def test_readme_metadata_errors_stay_validation_errors_even_when_caused_by_an_http_400():
    request = httpx2.Request("POST", "http://hub.test/api/validate-yaml")
    bad = HfHubHTTPError("400", response=httpx2.Response(400, json={"errors": []}, request=request))
    try:
        try:
            raise bad
        except HfHubHTTPError as exc:
            raise ValueError("Invalid metadata in README.md.\n- license: bad") from exc
    except ValueError as wrapped:
        assert type(classify(wrapped, what="create commit", endpoint="e")) is ValidationError


def test_unknown_failures_stay_permanent_and_ask_for_a_report():
    error = classify(KeyError("commitOid"), what="create commit", endpoint="e")
    assert type(error) is PermanentError and "report it" in error.hint


def test_retry_after_from_headers_mapping_or_response():
    assert retry_after_seconds({"Retry-After": "4"}) == 4.0
    assert retry_after_seconds({"ratelimit": '"api";r=0;t=9'}) == 9.0
    assert retry_after_seconds({"Retry-After": "not a date"}) is None
    assert retry_after_seconds(httpx2.Response(429, headers={"retry-after": "2"})) == 2.0
