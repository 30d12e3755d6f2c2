"""Replicate's webhook deliveries: Standard Webhooks signatures, event filters, throttling, terminal retries.

Per providers.md §3: the body is the training object; ``webhook-id`` is stable across retries of one
message; ``logs``/``output`` go out at most once per ``throttle_s``; ``start`` and ``completed`` always go;
only the ``completed`` message is retried (non-2xx or a network error), with backoff; redirects are
never followed. Every attempt is recorded for assertions.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import os
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

#: What Replicate sends when the training names no ``webhook_events_filter`` (the API reference:
#: "whenever there are new outputs or the prediction has finished").
DEFAULT_EVENTS = ("output", "completed")


def new_secret() -> str:
    """A signing key as ``GET /v1/webhooks/default/secret`` returns it (standard base64: never a ``_``)."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def sign(secret_key: str, webhook_id: str, timestamp: str, body: str) -> str:
    """The ``webhook-signature`` header for one delivery: ``v1,<base64 HMAC-SHA256>``."""
    secret = base64.b64decode(secret_key.split("_", 1)[1])
    digest = hmac.new(secret, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def new_message_id() -> str:
    return "msg_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(27))


@dataclass(frozen=True)
class WebhookAttempt:
    """One POST the fake made (or tried to make) to a training's webhook."""

    training_id: str
    event: str
    webhook_id: str
    #: 1 for the first try of a message, 2 for its first retry, ...
    attempt: int
    url: str
    #: The receiver's HTTP status, or ``None`` when the request failed (``error``).
    status: int | None
    error: str | None
    headers: dict[str, str]
    body: str
    #: When the POST was sent (``time.time()``).
    at: float
    #: The extra copy sent by the ``duplicate_completed`` knob.
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    training_id: str = field(compare=False)
    url: str = field(compare=False)
    event: str = field(compare=False)
    webhook_id: str = field(compare=False)
    #: A fixed body, or ``None``: ask for the training's latest JSON when sending (throttled events).
    body: str | None = field(compare=False)
    attempt: int = field(default=1, compare=False)
    duplicate: bool = field(default=False, compare=False)


class WebhookSender:
    """Delivers webhooks from one background thread, in due order.

    Args:
        secret_key: the ``whsec_…`` signing key.
        latest_body: gives a training's current JSON body, or ``None`` when a throttled event should be
            dropped (the training has ended; its ``completed`` message carries everything).
    """

    def __init__(self, secret_key: str, latest_body: Callable[[str], str | None]) -> None:
        self.secret_key = secret_key
        self.attempts: list[WebhookAttempt] = []
        #: At most one ``logs``/``output`` delivery per training per this many seconds.
        self.throttle_s = 0.5
        #: Waits before each retry of a ``completed`` message (real Replicate: about a minute in all).
        self.retry_delays: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
        #: Send every successfully delivered ``completed`` message a second time (same ``webhook-id``).
        self.duplicate_completed = False
        self.timeout_s = 5.0
        self._latest_body = latest_body
        self._heap: list[_Delivery] = []
        self._pending_throttled: dict[str, _Delivery] = {}
        self._last_throttled: dict[str, float] = {}
        self._seq = itertools.count()
        self._busy = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._client = httpx.Client(follow_redirects=False, timeout=self.timeout_s)
        self._thread = threading.Thread(target=self._run, name="fake-replicate-webhooks", daemon=True)
        self._thread.start()

    def notify(self, training_id: str, url: str, event: str, body: str | None = None) -> None:
        """Queue ``event`` for a training; ``logs``/``output`` are throttled and carry the latest body."""
        with self._cond:
            now = time.monotonic()
            if event in ("logs", "output"):
                if training_id in self._pending_throttled:
                    return  # the queued one will carry the newest logs
                due = max(now, self._last_throttled.get(training_id, -1e9) + self.throttle_s)
                delivery = _Delivery(due, next(self._seq), training_id, url, event, new_message_id(), None)
                self._pending_throttled[training_id] = delivery
            else:
                if event == "completed":  # it carries everything a pending logs message would
                    self._drop_pending(training_id)
                delivery = _Delivery(now, next(self._seq), training_id, url, event, new_message_id(), body)
            heapq.heappush(self._heap, delivery)
            self._cond.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until nothing is queued or in flight (retries included); ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        self._client.close()

    def _drop_pending(self, training_id: str) -> None:
        pending = self._pending_throttled.pop(training_id, None)
        if pending is not None:
            self._heap.remove(pending)
            heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0].due > time.monotonic()):
                    wait = self._heap[0].due - time.monotonic() if self._heap else None
                    self._cond.wait(wait if wait is None else max(wait, 0.001))
                if self._stopped:
                    return
                delivery = heapq.heappop(self._heap)
                if self._pending_throttled.get(delivery.training_id) is delivery:
                    del self._pending_throttled[delivery.training_id]
                    self._last_throttled[delivery.training_id] = time.monotonic()
                self._busy += 1
            try:
                self._deliver(delivery)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _deliver(self, delivery: _Delivery) -> None:
        body = delivery.body if delivery.body is not None else self._latest_body(delivery.training_id)
        if body is None:
            return
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "user-agent": "Replicate-Webhooks/1.0",
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": sign(self.secret_key, delivery.webhook_id, timestamp, body),
        }
        status: int | None = None
        error: str | None = None
        sent_at = time.time()
        try:
            status = self._client.post(delivery.url, content=body.encode(), headers=headers).status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        attempt = WebhookAttempt(delivery.training_id, delivery.event, delivery.webhook_id, delivery.attempt,
                                 delivery.url, status, error, headers, body, sent_at, delivery.duplicate)
        with self._cond:
            self.attempts.append(attempt)
            if delivery.event != "completed":
                return  # only the terminal message is retried
            if not attempt.ok and delivery.attempt <= len(self.retry_delays):
                self._push_again(delivery, self.retry_delays[delivery.attempt - 1], body, delivery.attempt + 1)
            elif attempt.ok and self.duplicate_completed and not delivery.duplicate:
                self._push_again(delivery, 0.0, body, 1, duplicate=True)

    def _push_again(self, delivery: _Delivery, delay: float, body: str, attempt: int, duplicate: bool = False) -> None:
        again = _Delivery(time.monotonic() + delay, next(self._seq), delivery.training_id, delivery.url,
                          delivery.event, delivery.webhook_id, body, attempt, duplicate or delivery.duplicate)
        heapq.heappush(self._heap, again)
        self._cond.notify_all()
