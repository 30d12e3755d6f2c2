"""Fault injection: a reproducible share of requests fails, so retry and idempotency logic gets tested.

Kinds:

- ``500``, ``503``: an error status, returned without running the request.
- ``429``: rate limited, with ``Retry-After: 0`` and ``RateLimit: "api";r=0;t=0``.
- ``cut``: part of the request body is read, then the connection is dropped.
- ``lost``: the request runs normally (a commit is applied), but the client gets a 503 or a
  dropped connection instead of the response: the "applied but response lost" case.
- ``text429``, ``html502``, ``html503``: what a proxy, CDN or load balancer in front of the Hub
  answers: a ``text/plain`` 429 without ``Retry-After`` (nginx ``limit_req``), and ``text/html``
  502/503 pages, none with ``X-Error-Code`` or a JSON body.

Which request fails is decided by a ``random.Random(seed)`` drawn once per eligible request in
arrival order, so a run with the same seed and the same request sequence fails the same way.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from collections.abc import Sequence
from typing import Any

import structlog

Scope = dict[str, Any]
Message = dict[str, Any]

log = structlog.get_logger("hubferry.registry.faults")

#: Routes that never fail: the HTML pages and the health check.
_EXEMPT = re.compile(r"^/(?:health|favicon\.ico)?$|^/(?:datasets/)?(?!api/|lfs-blobs/|lfs-storage/)[^/]+/[^/]+/?$")


class InjectedDrop(Exception):
    """Raised inside the ASGI app to make the server drop the connection."""


class FaultPlan:
    """The deterministic sequence of fault decisions.

    Args:
        rate: share of eligible requests that fail, 0..1.
        seed: seed of the decision sequence.
        kinds: enabled kinds among ``500 503 429 cut lost text429 html502 html503``.
        paths: optional regular expression; only matching paths are eligible.
    """

    def __init__(self, rate: float, seed: int, kinds: Sequence[str], paths: str | None = None) -> None:
        self.rate = rate
        self.kinds = tuple(kinds)
        self._paths = re.compile(paths) if paths else None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.injected: list[tuple[str, str, str]] = []  #: (kind, method, path) of every fault so far
        self.seen = 0  #: eligible requests so far (each one drew from the sequence)

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and bool(self.kinds)

    def eligible(self, method: str, path: str) -> bool:
        if method == "GET" and _EXEMPT.match(path):
            return False
        return self._paths is None or bool(self._paths.search(path))

    def draw(self, method: str, path: str) -> tuple[str, random.Random] | None:
        """The fault for this request, or ``None``; also returns an rng for the fault's details."""
        if not self.eligible(method, path):
            return None
        with self._lock:
            self.seen += 1
            if not self.enabled or self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(self.kinds)
            detail_rng = random.Random(self._rng.getrandbits(32))
            self.injected.append((kind, method, path))
        return kind, detail_rng


class FaultInjectionMiddleware:
    """Pure ASGI middleware applying a :class:`FaultPlan` (raw ASGI, so it can drop connections)."""

    def __init__(self, app: Any, plan: FaultPlan) -> None:
        self.app = app
        self.plan = plan

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        decision = self.plan.draw(scope["method"], scope["path"])
        if decision is None:
            await self.app(scope, receive, send)
            return
        kind, rng = decision
        log.warning("fault injected", kind=kind, method=scope["method"], path=scope["path"])
        if kind in ("500", "503", "429"):
            await _drain(receive)
            await _send_error(send, int(kind))
        elif kind in PROXY_PAGES:
            await _drain(receive)
            await _send_proxy_page(send, kind)
        elif kind == "cut":
            await _drain(receive, limit=rng.randint(0, 256 * 1024))
            await _drop(send, scope["method"])
        else:  # lost: run the request for real, then lose the answer

            async def discard(_message: Message) -> None:
                return None

            await self.app(scope, receive, discard)
            if rng.random() < 0.5:
                await _send_error(send, 503)
            else:
                await _drop(send, scope["method"])


async def _drain(receive: Any, limit: int | None = None) -> None:
    """Read the request body (up to ``limit`` bytes) so the error reaches the client cleanly."""
    received = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body", False) or (limit is not None and received >= limit):
            return


async def _send_error(send: Any, status: int) -> None:
    message = {
        500: "Injected fault: internal error",
        503: "Injected fault: service unavailable",
        429: "Injected fault: rate limited",
    }[status]
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-error-code", b"InjectedFault"),
        (b"x-error-message", message.encode()),
    ]
    if status == 429:
        headers += [(b"retry-after", b"0"), (b"ratelimit", b'"api";r=0;t=0')]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


#: Proxy answers: status, content type and body, as nginx, an AWS load balancer or a CDN sends them.
PROXY_PAGES: dict[str, tuple[int, str, bytes]] = {
    "text429": (429, "text/plain; charset=utf-8", b"429 Too Many Requests\n"),
    "html502": (
        502, "text/html",
        b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
        b"</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    ),
    "html503": (
        503, "text/html; charset=utf-8",
        b"<!DOCTYPE html><html><head><title>503 Service Temporarily Unavailable</title></head><body>"
        b"<h1>Service Temporarily Unavailable</h1><p>The server is temporarily unable to service your request."
        b"</p></body></html>",
    ),
}


async def _send_proxy_page(send: Any, kind: str) -> None:
    status, content_type, body = PROXY_PAGES[kind]
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drop(send: Any, method: str) -> None:
    """Start a response and fail, so the server closes the socket mid-response.

    A HEAD response has no body to cut (its headers alone would look complete), so HEAD gets a 503.
    """
    if method == "HEAD":
        await _send_error(send, 503)
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1048576")]})
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
    raise InjectedDrop("injected connection drop")


class QuietDrops(logging.Filter):
    """Hides uvicorn's traceback for :class:`InjectedDrop` (the drop itself is already logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedDrop))
