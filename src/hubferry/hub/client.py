"""The one factory for Hub clients: endpoint, token, timeouts, Xet choice, wire metering.

huggingface_hub shares one process-wide ``httpx2.Client``; :func:`make_api` installs ours
(with timeouts, a byte-counting transport and optional request logging) through its public
``set_client_factory`` hook. Tests swap transports here rather than patching globals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.utils import close_session, disable_progress_bars, set_client_factory
from huggingface_hub.utils._http import hf_request_event_hook

from hubferry.config import Settings
from hubferry.logs import get_logger, redact, register_secret

log = get_logger("hubferry.http")
_XET_HOSTS = ("huggingface.co", "hf.co")


class WireMeter:
    """Counts request-body bytes sent for LFS objects whose sha256 appears in the upload URL."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[str, int] = {}
        self.bytes_sent = 0

    def watch(self, sha256s: list[str]) -> None:
        with self._lock:
            for oid in sha256s:
                self._watched[oid] = self._watched.get(oid, 0)

    def matches(self, url: str) -> bool:
        return any(oid in url for oid in self._watched)

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n


_meters: list[WireMeter] = []
_meters_lock = threading.Lock()


class _CountingStream(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, meters: list[WireMeter]) -> None:
        self._inner = inner
        self._meters = meters

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            for meter in self._meters:
                meter.add(len(chunk))
            yield chunk

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class _MeteringTransport(httpx2.BaseTransport):
    """Wraps the real transport; counts PUT bodies of watched LFS objects."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "PUT":
            url = str(request.url)
            with _meters_lock:
                meters = [m for m in _meters if m.matches(url)]
            if meters:
                request.stream = _CountingStream(request.stream, meters)  # type: ignore[arg-type]
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


@dataclass
class _HttpConfig:
    connect: float
    read: float
    verbose: bool


_config = _HttpConfig(connect=10.0, read=120.0, verbose=False)


def _log_request(request: httpx2.Request) -> None:
    request.extensions["hubferry_started"] = time.monotonic()
    log.debug("request", method=request.method, url=redact(str(request.url)))


def _log_response(response: httpx2.Response) -> None:
    started = response.request.extensions.get("hubferry_started", time.monotonic())
    log.debug(
        "response", method=response.request.method, url=redact(str(response.request.url)),
        status=response.status_code, elapsed_ms=round((time.monotonic() - started) * 1000, 1),
    )


def _client_factory() -> httpx2.Client:
    hooks: dict[str, list] = {"request": [hf_request_event_hook], "response": []}
    if _config.verbose:
        hooks["request"].append(_log_request)
        hooks["response"].append(_log_response)
    timeout = httpx2.Timeout(_config.read, connect=_config.connect)
    return httpx2.Client(
        event_hooks=hooks, follow_redirects=True, timeout=timeout,
        transport=_MeteringTransport(httpx2.HTTPTransport()),
    )


def configure_http(settings: Settings, *, verbose: bool = False) -> None:
    """Install hubferry's HTTP client (timeouts, metering, logging) into huggingface_hub."""
    new = _HttpConfig(connect=settings.connect_timeout, read=settings.read_timeout, verbose=verbose)
    global _config
    if new != _config:
        _config = new
        close_session()
    set_client_factory(_client_factory)


def use_xet(settings: Settings, endpoint: str) -> bool:
    """Whether uploads go through Xet storage (huggingface.co) or plain LFS (on-prem, tests)."""
    if settings.xet == "auto":
        return any(endpoint.split("://", 1)[-1].split("/")[0].endswith(host) for host in _XET_HOSTS)
    return settings.xet == "on"


def make_api(settings: Settings, *, endpoint: str, token: str, verbose: bool = False) -> HfApi:
    """An :class:`HfApi` for ``endpoint`` with hubferry's transport; the token is registered for redaction."""
    register_secret(token)
    configure_http(settings, verbose=verbose)
    disable_progress_bars()  # hubferry reports progress itself
    # huggingface_hub reads this constant at call time; it is the documented way to force plain LFS.
    constants.HF_HUB_DISABLE_XET = not use_xet(settings, endpoint)
    return HfApi(endpoint=endpoint, token=token)


def start_metering(meter: WireMeter) -> None:
    with _meters_lock:
        _meters.append(meter)


def stop_metering(meter: WireMeter) -> None:
    with _meters_lock:
        if meter in _meters:
            _meters.remove(meter)
