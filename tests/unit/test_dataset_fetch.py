"""Fetching dataset URLs through a mock transport: pinned addresses, redirects, limits and retries."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest

from hubferry.config import load_settings
from hubferry.dataset import fetch
from hubferry.dataset.fetch import Fetcher, display_url
from hubferry.dataset.testing import static_resolver
from hubferry.errors import TransientError, ValidationError

JPEG = b"\xff\xd8\xff\xe0fake jpeg bytes"
PUBLIC = {"photos.example": ["93.184.216.34"], "cdn.example": ["151.101.1.1"]}

Handler = Callable[[httpx2.Request], httpx2.Response]


class Recorder:
    """A mock transport that records every request it is sent."""

    def __init__(self, handler: Handler) -> None:
        self.requests: list[httpx2.Request] = []
        self._handler = handler
        self.transport = httpx2.MockTransport(self._handle)

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return self._handler(request)


def _fetcher(handler: Handler, *, table=PUBLIC, sleeps: list[float] | None = None, clock=None,
             resolve=None) -> tuple[Fetcher, Recorder]:
    recorder = Recorder(handler)
    extra = {"clock": clock} if clock else {}
    fetcher = Fetcher(load_settings(), transport=recorder.transport, resolve=resolve or static_resolver(table),
                      sleep=(sleeps.append if sleeps is not None else lambda _s: None), **extra)
    return fetcher, recorder


def _image(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, content=JPEG, headers={"Content-Type": "image/jpeg"})


def test_the_request_goes_to_the_checked_address_with_the_real_host_name(tmp_path: Path):
    fetcher, recorder = _fetcher(_image)
    fetched = fetcher.fetch("https://photos.example/a/dog.jpg?sig=secret", tmp_path / "f")
    assert fetched.size == len(JPEG) and (tmp_path / "f").read_bytes() == JPEG
    [request] = recorder.requests
    assert request.url.host == "93.184.216.34"
    assert request.headers["Host"] == "photos.example"
    assert request.extensions["sni_hostname"] == "photos.example"  # TLS is verified against the name
    assert request.url.path == "/a/dog.jpg" and request.url.query == b"sig=secret"


def test_a_name_is_resolved_once_per_hop_so_a_rebinding_dns_cannot_swap_the_address(tmp_path: Path):
    answers = itertools.chain([["93.184.216.34"]], itertools.repeat(["127.0.0.1"]))
    lookups: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return next(answers)

    fetcher, recorder = _fetcher(_image, resolve=rebinding)
    fetcher.fetch("http://photos.example/dog.jpg", tmp_path / "f")
    assert lookups == ["photos.example"]
    assert [r.url.host for r in recorder.requests] == ["93.184.216.34"]


def test_each_redirect_is_checked_again_and_a_private_target_is_never_contacted(tmp_path: Path):
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(302, headers={"Location": "http://10.0.0.7/admin"})

    fetcher, recorder = _fetcher(handler)
    with pytest.raises(ValidationError) as caught:
        fetcher.fetch("http://photos.example/dog.jpg", tmp_path / "f")
    assert caught.value.context["code"] == "refused_address"
    assert "10.0.0.7" in caught.value.message and "private" in caught.value.message
    assert len(recorder.requests) == 1
    assert not (tmp_path / "f").exists()


def test_redirects_to_other_public_hosts_are_followed_relative_or_absolute(tmp_path: Path):
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.headers["Host"] == "photos.example":
            return httpx2.Response(301, headers={"Location": "https://cdn.example/store/dog.jpg"})
        if request.url.path == "/store/dog.jpg":
            return httpx2.Response(307, headers={"Location": "/final/dog.jpg"})
        return _image(request)

    fetcher, recorder = _fetcher(handler)
    fetched = fetcher.fetch("http://photos.example/dog.jpg", tmp_path / "f")
    assert fetched.final_url == "https://cdn.example/final/dog.jpg"
    assert [(r.url.host, r.headers["Host"]) for r in recorder.requests] == [
        ("93.184.216.34", "photos.example"), ("151.101.1.1", "cdn.example"), ("151.101.1.1", "cdn.example")]


def test_a_redirect_loop_stops_after_the_limit(tmp_path: Path):
    fetcher, recorder = _fetcher(lambda r: httpx2.Response(302, headers={"Location": "/again"}))
    with pytest.raises(ValidationError, match=f"more than {fetch.FETCH_MAX_REDIRECTS} redirects"):
        fetcher.fetch("http://photos.example/start", tmp_path / "f")
    assert len(recorder.requests) == fetch.FETCH_MAX_REDIRECTS + 1


def test_a_web_page_instead_of_an_image_is_refused_by_its_content_type(tmp_path: Path):
    fetcher, _ = _fetcher(lambda r: httpx2.Response(200, text="<html>login</html>",
                                                    headers={"Content-Type": "text/html; charset=utf-8"}))
    with pytest.raises(ValidationError) as caught:
        fetcher.fetch("http://photos.example/share/123", tmp_path / "f")
    assert caught.value.context["code"] == "content_type"
    assert "text/html" in caught.value.message and "not an image" in caught.value.message


def test_too_large_is_refused_by_declared_length_and_by_counting_a_stream(tmp_path: Path):
    declared, _ = _fetcher(lambda r: httpx2.Response(200, content=b"x" * 5000, headers={"Content-Type": "image/png"}))
    with pytest.raises(ValidationError) as caught:
        declared.fetch("http://photos.example/big.png", tmp_path / "a", max_bytes=4096)
    assert caught.value.context["code"] == "too_large"

    streamed, _ = _fetcher(lambda r: httpx2.Response(200, content=iter([b"x" * 1000] * 10),
                                                     headers={"Content-Type": "image/png"}))
    with pytest.raises(ValidationError) as caught:
        streamed.fetch("http://photos.example/big.png", tmp_path / "b", max_bytes=4096)
    assert caught.value.context["code"] == "too_large"


def test_server_errors_are_retried_with_backoff_and_retry_after(tmp_path: Path):
    answers = iter([httpx2.Response(503), httpx2.Response(429, headers={"Retry-After": "7"})])

    def handler(request: httpx2.Request) -> httpx2.Response:
        return next(answers, None) or _image(request)

    sleeps: list[float] = []
    fetcher, recorder = _fetcher(handler, sleeps=sleeps)
    assert fetcher.fetch("http://photos.example/dog.jpg", tmp_path / "f").size == len(JPEG)
    assert len(recorder.requests) == 3
    assert 0 < sleeps[0] <= fetch.FETCH_BACKOFF_S and sleeps[1] == 7.0


def test_network_failures_give_up_after_the_attempts_with_a_transient_error(tmp_path: Path):
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused")

    fetcher, recorder = _fetcher(handler)
    with pytest.raises(TransientError) as caught:
        fetcher.fetch("http://photos.example/dog.jpg", tmp_path / "f")
    assert caught.value.context["attempt"] == fetch.FETCH_ATTEMPTS == len(recorder.requests)


def test_a_404_is_not_retried(tmp_path: Path):
    fetcher, recorder = _fetcher(lambda r: httpx2.Response(404))
    with pytest.raises(ValidationError) as caught:
        fetcher.fetch("http://photos.example/gone.jpg", tmp_path / "f")
    assert caught.value.context["status"] == 404 and len(recorder.requests) == 1


def test_a_trickling_server_is_cut_off_at_the_deadline(tmp_path: Path):
    ticks = itertools.count(0, fetch.FETCH_DEADLINE_S / 3)
    trickle = iter([b"x"] * 10)
    fetcher, _ = _fetcher(lambda r: httpx2.Response(200, content=trickle, headers={"Content-Type": "image/png"}),
                          clock=lambda: next(ticks))
    with pytest.raises(ValidationError, match="took longer than"):
        fetcher.fetch("http://photos.example/slow.png", tmp_path / "f")


@pytest.mark.parametrize(("url", "problem"), [
    ("ftp://photos.example/a.jpg", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("http://user:pw@photos.example/a.jpg", "user name or password"),
])
def test_other_schemes_and_credentials_in_urls_are_refused(tmp_path: Path, url, problem):
    fetcher, recorder = _fetcher(_image)
    with pytest.raises(ValidationError, match=problem):
        fetcher.fetch(url, tmp_path / "f")
    assert recorder.requests == []


def test_urls_are_shown_without_credentials_or_query():
    assert display_url("https://u:p@cdn.example/a.jpg?X-Amz-Signature=abc#frag") == "https://cdn.example/a.jpg?…"
    assert display_url("https://cdn.example/a.jpg") == "https://cdn.example/a.jpg"
