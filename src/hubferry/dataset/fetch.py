"""Downloading dataset images from URLs someone handed us, without trusting the URL or the server.

Each hop (the URL and every redirect, followed by hand) is resolved and checked by
:mod:`hubferry.dataset.addresses`, then connected to by the checked address (the URL's host is kept in
the ``Host`` header and TLS server name, so certificates are still verified against it). Bodies are
capped in size and time, the content type must be an image's, and network failures, 408, 429 and 5xx
are retried with backoff. Proxies from the environment are ignored: a proxy would resolve the name
itself, out of the guard's sight.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2

from hubferry.config import Settings
from hubferry.dataset.addresses import AllowList, Resolver, choose_address, system_resolve
from hubferry.errors import HubferryError, TransientError, ValidationError

#: One image may be this large; the whole dataset is capped separately by ``dataset_max_bytes``.
FETCH_MAX_FILE_BYTES = 64 * 1024 * 1024
#: Seconds to wait for each read of a response; the connect timeout is the ``connect_timeout`` setting.
FETCH_READ_TIMEOUT_S = 30.0
#: A whole download (all hops and the body) must finish within this, so a trickling server cannot hold us.
FETCH_DEADLINE_S = 120.0
#: Redirects followed for one URL.
FETCH_MAX_REDIRECTS = 5
#: Attempts per URL (network errors, 408, 429, 5xx) and the backoff between them (seconds, doubled each time).
FETCH_ATTEMPTS = 3
FETCH_BACKOFF_S = 0.5
#: Longest Retry-After honoured between two attempts.
FETCH_RETRY_AFTER_CAP_S = 30.0

#: Content types accepted for an image (the bytes are decoded and checked afterwards anyway). Object
#: stores often serve uploads without a type, hence the octet-streams.
IMAGE_CONTENT_TYPES = frozenset({
    "image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp", "image/heic", "image/heif",
    "application/octet-stream", "binary/octet-stream",
})

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "hubferry-dataset/1"


def display_url(url: str) -> str:
    """``url`` without credentials, query or fragment (signed URLs carry secrets there), for reports."""
    try:
        parsed = httpx2.URL(url)
    except (httpx2.InvalidURL, TypeError, ValueError):
        return url.split("?", 1)[0].split("#", 1)[0]
    shown = parsed.copy_with(userinfo=b"", query=None, fragment=None)
    return str(shown) + ("?…" if parsed.query else "")


@dataclass(frozen=True)
class Fetched:
    """A downloaded file: where the bytes are and what the server said they were."""

    url: str
    final_url: str
    path: Path
    size: int
    content_type: str


class Fetcher:
    """Downloads single files safely; one instance may be used from several threads.

    Args:
        settings: ``fetch_allow_hosts`` and ``connect_timeout`` are read.
        transport: an httpx2 transport (tests pass ``httpx2.MockTransport``); default: plain HTTP(S).
        resolve: ``(host, port) -> addresses``; default: the system resolver.
        sleep: waits between attempts (tests make it instant).
        clock: monotonic seconds, for the per-download deadline.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx2.BaseTransport | None = None,
        resolve: Resolver = system_resolve,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._allow = AllowList.parse(settings.fetch_allow_hosts)
        self._resolve = resolve
        self._sleep = sleep
        self._clock = clock
        self._client = httpx2.Client(
            transport=transport or httpx2.HTTPTransport(trust_env=False, retries=0),
            trust_env=False,
            follow_redirects=False,
            timeout=httpx2.Timeout(FETCH_READ_TIMEOUT_S, connect=settings.connect_timeout),
            headers={"User-Agent": _USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, url: str, dest: Path, *, max_bytes: int = FETCH_MAX_FILE_BYTES) -> Fetched:
        """Download ``url`` into ``dest``, retrying transient failures.

        Raises:
            ValidationError: the URL is refused (scheme, credentials, forbidden address, content type,
                size, a 4xx answer, too many redirects); ``context["code"]`` names the kind of refusal.
            TransientError: the server or network kept failing after every attempt.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._fetch_once(url, dest, max_bytes)
            except TransientError as error:
                error.context.update(attempt=attempt)
                if attempt >= FETCH_ATTEMPTS:
                    raise
                self._sleep(self._delay(attempt, error))

    @staticmethod
    def _delay(attempt: int, error: HubferryError) -> float:
        retry_after = error.context.get("retry_after")
        if retry_after is not None:
            return min(float(retry_after), FETCH_RETRY_AFTER_CAP_S)
        ceiling = FETCH_BACKOFF_S * 2 ** (attempt - 1)
        return random.uniform(ceiling / 2, ceiling)

    def _fetch_once(self, url: str, dest: Path, max_bytes: int) -> Fetched:
        deadline = self._clock() + FETCH_DEADLINE_S
        current = _parse(url, url)
        for _hop in range(FETCH_MAX_REDIRECTS + 1):
            request = self._pinned_request(current, url)
            try:
                response = self._client.send(request, stream=True)
                try:
                    if response.status_code in _REDIRECTS:
                        current = _redirect_target(current, response, url)
                        continue
                    _check_status(response, url)
                    content_type = _check_content_type(response, url)
                    size = self._save(response, dest, max_bytes, deadline, url)
                    return Fetched(url, str(current), dest, size, content_type)
                finally:
                    response.close()
            except httpx2.TimeoutException as exc:
                raise TransientError(f"timed out fetching {display_url(url)}: {type(exc).__name__}",
                                     category="timeout", url=display_url(url), code="fetch",
                                     hint="check that the server is up, or host the image elsewhere") from None
            except httpx2.TransportError as exc:
                raise TransientError(f"cannot fetch {display_url(url)}: {exc or type(exc).__name__}",
                                     url=display_url(url), code="fetch",
                                     hint="check the URL and your network") from None
        raise ValidationError(f"more than {FETCH_MAX_REDIRECTS} redirects fetching {display_url(url)}",
                              url=display_url(url), code="fetch", hint="link to the image itself")

    def _pinned_request(self, target: httpx2.URL, original: str) -> httpx2.Request:
        """A GET of ``target`` sent to the address the guard approved, with the real host name kept."""
        host = target.host
        port = target.port or (443 if target.scheme == "https" else 80)
        address = choose_address(host, port, self._allow, self._resolve, url=display_url(original))
        host_header = target.netloc.decode("ascii")
        extensions = {"sni_hostname": host} if target.scheme == "https" else {}
        return self._client.build_request("GET", target.copy_with(host=address), headers={"Host": host_header},
                                          extensions=extensions)

    def _save(self, response: httpx2.Response, dest: Path, max_bytes: int, deadline: float, url: str) -> int:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(url, max_bytes)
        size = 0
        with open(dest, "wb") as out:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(url, max_bytes)
                if self._clock() > deadline:
                    raise ValidationError(
                        f"fetching {display_url(url)} took longer than {FETCH_DEADLINE_S:.0f} s",
                        category="timeout", url=display_url(url), code="fetch",
                        hint="host the image somewhere faster, or put it in a zip")
                out.write(chunk)
        return size


def _parse(raw: str, original: str) -> httpx2.URL:
    try:
        parsed = httpx2.URL(raw)
    except (httpx2.InvalidURL, TypeError, ValueError) as exc:
        raise ValidationError(f"not a valid URL: {exc}", url=display_url(original), code="fetch",
                              hint="write one http(s) URL per line") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValidationError(f"only http and https URLs are fetched, not {display_url(raw)}",
                              url=display_url(original), code="fetch", hint="write one http(s) URL per line")
    if parsed.userinfo:
        raise ValidationError("URLs with a user name or password are not fetched", url=display_url(original),
                              code="fetch", hint="use a URL that needs no credentials (e.g. a signed URL)")
    return parsed


def _redirect_target(current: httpx2.URL, response: httpx2.Response, original: str) -> httpx2.URL:
    location = response.headers.get("Location")
    if not location:
        raise ValidationError(f"HTTP {response.status_code} redirect without a Location fetching "
                              f"{display_url(original)}", url=display_url(original), code="fetch",
                              hint="link to the image itself")
    try:
        joined = current.join(location)
    except (httpx2.InvalidURL, ValueError) as exc:
        raise ValidationError(f"bad redirect fetching {display_url(original)}: {exc}", url=display_url(original),
                              code="fetch", hint="link to the image itself") from None
    return _parse(str(joined), original)


def _check_status(response: httpx2.Response, url: str) -> None:
    status = response.status_code
    if status == 200:
        return
    shown = display_url(url)
    if status in (408, 429) or status >= 500:
        retry_after = response.headers.get("Retry-After", "")
        raise TransientError(f"HTTP {status} fetching {shown}", category="rate_limit" if status == 429 else "network",
                             status=status, url=shown, code="fetch",
                             retry_after=float(retry_after) if retry_after.isdigit() else None,
                             hint="the server is struggling: try again later")
    raise ValidationError(f"HTTP {status} {response.reason_phrase} fetching {shown}", status=status, url=shown,
                          code="fetch", hint="check that the URL opens the image in a browser without logging in")


def _check_content_type(response: httpx2.Response, url: str) -> str:
    content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if content_type not in IMAGE_CONTENT_TYPES:
        raise ValidationError(
            f"{display_url(url)} is {content_type or 'of no stated type'}, not an image",
            url=display_url(url), code="content_type",
            hint="link to the image file itself, not to a page showing it")
    return content_type


def _too_large(url: str, max_bytes: int) -> ValidationError:
    return ValidationError(f"{display_url(url)} is larger than {max_bytes // (1024 * 1024)} MiB",
                           url=display_url(url), code="too_large", hint="use a smaller image (1-2 MP is plenty)")
