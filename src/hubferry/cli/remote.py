"""The CLI's client of a running ``hubferry serve`` (``HUBFERRY_URL`` + ``HUBFERRY_API_TOKEN``).

Every answer that is not a success becomes an error of :mod:`hubferry.errors`, so the CLI's one error
boundary prints it exactly as a local one::

    401                                  PermanentError   (authentication) the token is wrong or revoked
    400 404 409 413 415 422              ValidationError  the API's category, message, hint and field (exit 2)
    403                                  PermanentError   (authentication) the API's message
    408 429 502 503 504                  TransientError   the API's message, or the status when it gave none
    other 5xx, anything else             PermanentError   (service_error)
    no answer (refused, DNS, timeout)    TransientError   (network/timeout) naming the URL and what to check

The API token is sent only as the ``Authorization`` header; it is never part of a URL, a message or a log line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from hubferry.errors import CATEGORIES, HubferryError, PermanentError, TransientError, ValidationError
from hubferry.logs import redact, register_secret

#: Seconds to wait for a connection, and for an ordinary answer (creating a job checks the Hub first).
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0
#: An event stream sends a heartbeat every 15 s: silence for this long means the connection is dead.
STREAM_READ_TIMEOUT_S = 45.0
#: Statuses whose error bodies describe bad input (exit 2, nothing changed).
_INPUT_STATUSES = frozenset({400, 404, 405, 409, 413, 415, 422})
_TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})
_CHECK_SERVICE = "check HUBFERRY_URL, and that `hubferry serve` runs there"
_NOT_A_SERVICE = "check that HUBFERRY_URL is the address of `hubferry serve`, not of another server"


@dataclass(frozen=True)
class Sse:
    """One Server-Sent Event."""

    event: str
    id: str | None
    data: Any


class ServiceClient:
    """Requests to one hubferry service as the owner of one API token.

    Args:
        url: the service's base URL (``HUBFERRY_URL``).
        token: the API token (``HUBFERRY_API_TOKEN``); sent as ``Authorization: Bearer``.
        transport: an httpx transport (tests pass a mock one); default: the network.
    """

    def __init__(self, url: str, token: str, *, transport: httpx.BaseTransport | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_S, read_timeout: float = READ_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        register_secret(token)  # any log line that somehow held it is redacted
        self._http = httpx.Client(
            base_url=self.url, transport=transport, follow_redirects=False,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                     "User-Agent": "hubferry-cli"},
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        )

    def __repr__(self) -> str:  # never the token
        return f"ServiceClient({self.url!r})"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; a success is returned, anything else raised as a hubferry error."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc, method, path) from None
        if response.status_code >= 400:
            raise error_from_response(response, self.url)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON body of a successful answer."""
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise PermanentError(f"the service at {self.url} answered {method} {path} with something that is not "
                                 "JSON", category="service_error", hint=_NOT_A_SERVICE,
                                 status=response.status_code, url=f"{self.url}{path}") from None

    @contextmanager
    def stream(self, path: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        """A streamed GET (an event stream); its errors are raised like :meth:`request`'s."""
        timeout = httpx.Timeout(STREAM_READ_TIMEOUT_S, connect=self._http.timeout.connect)
        try:
            with self._http.stream("GET", path, headers={"Accept": "text/event-stream", **headers},
                                   timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response, self.url)
                yield response
        except httpx.HTTPError as exc:
            raise self._unreachable(exc, "GET", path) from None

    def close(self) -> None:
        self._http.close()

    def _unreachable(self, exc: httpx.HTTPError, method: str, path: str) -> HubferryError:
        reason = redact(str(exc) or type(exc).__name__)
        if isinstance(exc, httpx.TimeoutException):
            return TransientError(f"the hubferry service at {self.url} did not answer {method} {path} in time "
                                  f"({reason})", category="timeout", hint=_CHECK_SERVICE, url=self.url)
        if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
            return PermanentError(f"HUBFERRY_URL {self.url} is not a URL the CLI can use ({reason})",
                                  category="network", hint="set HUBFERRY_URL to e.g. http://127.0.0.1:8470")
        return TransientError(f"cannot reach the hubferry service at {self.url} ({reason})", category="network",
                              hint=_CHECK_SERVICE, url=self.url)


def error_from_response(response: httpx.Response, base_url: str) -> HubferryError:
    """The hubferry error an API error answer stands for (see the module's table)."""
    status = response.status_code
    where = f"{response.request.method} {response.request.url.path}"
    if status == 401:
        return PermanentError(
            f"the hubferry service at {base_url} did not accept HUBFERRY_API_TOKEN: it is wrong or was revoked",
            category="authentication", status=status,
            hint="make a new one on the service's machine with `hubferry users token NAME` and set "
                 "HUBFERRY_API_TOKEN to it (and check that HUBFERRY_URL is the address of `hubferry serve`)")
    detail = _error_detail(response)
    if detail is None:  # not the API's shape: a proxy, another server, or a crash
        message = f"the service at {base_url} answered {status} to {where} without an error description"
        hint = _NOT_A_SERVICE
        body = redact(response.text[:300]) if response.text else None
        if status in _TRANSIENT_STATUSES or status >= 500:
            return TransientError(message, category="service_error", hint="try again shortly; " + hint,
                                  status=status, url=base_url, body=body)
        if status == 404:
            return ValidationError(message, category="validation", hint=hint, status=status, url=base_url)
        return PermanentError(message, category="service_error", hint=hint, status=status, url=base_url, body=body)
    message = redact(str(detail.get("message") or f"the service refused {where} ({status})"))
    hint = redact(str(detail.get("hint") or ""))
    category = str(detail.get("category") or "")
    field = detail.get("field") if isinstance(detail.get("field"), str) else None
    if status in _INPUT_STATUSES:
        return ValidationError(message, category=category if category in CATEGORIES else "validation", hint=hint,
                               field=field)
    if status == 403:
        return PermanentError(message, category="authentication", hint=hint, field=field)
    if status in _TRANSIENT_STATUSES:
        return TransientError(message, category=category if category in CATEGORIES else "service_error",
                              hint=hint, status=status)
    return PermanentError(message, category=category if category in CATEGORIES else "service_error", hint=hint,
                          status=status if status >= 500 else None)


def _error_detail(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    detail = body.get("error") if isinstance(body, dict) else None
    return detail if isinstance(detail, dict) and "message" in detail else None


def parse_sse(lines: Iterator[str]) -> Iterator[Sse | int]:
    """Events of an SSE stream given as its lines; a ``retry:`` field comes out as its milliseconds."""
    event, event_id, data = "message", None, list[str]()
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    payload: Any = json.loads(text)
                except ValueError:
                    payload = text
                yield Sse(event, event_id, payload)
            event, event_id, data = "message", None, list[str]()
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "event":
            event = value
        elif key == "id":
            event_id = value
        elif key == "data":
            data.append(value)
        elif key == "retry" and value.isdigit():
            yield int(value)


#: Reconnections of an event stream in a row, without any event arriving, before giving up.
MAX_RECONNECTS = 8
#: Wait before reconnecting when the stream did not say (``retry:``), in seconds.
DEFAULT_RETRY_S = 2.0


def job_events(client: ServiceClient, job_id: str, *, sleep: Any = time.sleep) -> Iterator[Sse]:
    """A job's events, live, across reconnections: each reconnection sends ``Last-Event-ID`` (the last event
    received), so no timeline entry is missed or repeated. Ends when the stream says ``end``, or answers 204
    to a reconnection (the job ended and everything was sent).

    Raises:
        TransientError: the service stayed unreachable for :data:`MAX_RECONNECTS` attempts.
    """
    last_id: str | None = None
    retry_s = DEFAULT_RETRY_S
    failures = 0
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with client.stream(f"/api/v1/jobs/{job_id}/events", headers) as response:
                if response.status_code == 204:
                    return
                for item in parse_sse(response.iter_lines()):
                    if isinstance(item, int):
                        retry_s = item / 1000
                        continue
                    failures = 0
                    if item.id:
                        last_id = item.id
                    if item.event == "end":
                        return
                    yield item
        except TransientError:
            failures += 1
            if failures >= MAX_RECONNECTS:
                raise
        except httpx.HTTPError:  # the connection broke mid-stream
            failures += 1
            if failures >= MAX_RECONNECTS:
                raise TransientError(f"the event stream of job {job_id} from {client.url} kept breaking",
                                     category="network", hint=_CHECK_SERVICE, url=client.url) from None
        sleep(min(retry_s, 10.0))
