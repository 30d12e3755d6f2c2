"""A webhook endpoint for tests: records every POST and answers with scripted statuses."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: str
    status: int
    at: float


@dataclass
class WebhookReceiver:
    """Where webhooks land; ``url`` is the address to give a training as its ``webhook``."""

    url: str
    received: list[Received] = field(default_factory=list)
    #: Statuses to answer, first to last; once used up every request gets 200.
    script: list[int] = field(default_factory=list)
    #: Answer 307 to this location instead (a redirect the sender must not follow).
    redirect_to: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def wait_until(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> list[Received]:
        """Wait until ``predicate(received)`` holds; returns a copy of what was received."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = list(self.received)
            if predicate(seen):
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"webhooks received: {[r.body[:80] for r in seen]}")
            time.sleep(0.01)

    def _answer(self) -> int:
        with self._lock:
            return self.script.pop(0) if self.script else 200


@contextmanager
def running_webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver: WebhookReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            status = 307 if receiver.redirect_to else receiver._answer()
            with receiver._lock:
                receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                                  status, time.time()))
            self.send_response(status)
            if receiver.redirect_to:
                self.send_header("location", receiver.redirect_to)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the stdlib's signature)
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = WebhookReceiver(f"http://127.0.0.1:{server.server_address[1]}/hooks/replicate?customId=123")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
