"""The one place where Hub client exceptions become hubferry errors with context and a hint.

Anything that shows the Hub (or a proxy, CDN or load balancer in front of it) is briefly unwell is a
:class:`TransientError`: network errors, timeouts, 408/429/5xx whatever their body, and answers that
are not the JSON the client expected (a proxy's text or HTML page). huggingface_hub wraps failures of
its upload threads in ``RuntimeError("Error while uploading ...")``; the cause is classified instead.
"""

from __future__ import annotations

import email.utils
import html
import json
import re
import time
from collections.abc import Mapping
from typing import Any, cast

import httpx2
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError

from hubferry.errors import HubferryError, PermanentError, TransientError, ValidationError
from hubferry.hub.client import last_answer
from hubferry.logs import redact

_BODY_LIMIT = 1024
_RATE_LIMIT_T = re.compile(r"\bt=(\d+(?:\.\d+)?)")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")
_RESUME = "re-run to resume: the push continues where it stopped"
#: Exceptions meaning the connection, not the request, failed.
_NETWORK = (httpx2.TransportError, ConnectionError)


def retry_after_seconds(source: httpx2.Response | Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait (``RateLimit: ...;t=N`` or ``Retry-After``), if any."""
    if source is None:
        return None
    headers = source.headers if isinstance(source, httpx2.Response) else httpx2.Headers(dict(source))
    rate_limit = headers.get("RateLimit")
    if rate_limit and (match := _RATE_LIMIT_T.search(rate_limit)):
        return float(match.group(1))
    value = headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


def _body(response: httpx2.Response) -> str | None:
    try:
        return redact(response.text[:_BODY_LIMIT]) or None
    except (httpx2.ResponseNotRead, httpx2.StreamError, UnicodeDecodeError):
        return None


def _is_json(content_type: str) -> bool:
    return "json" in content_type.lower()


def _gist(response: httpx2.Response) -> str:
    """A short sentence for a non-JSON error body: an HTML page's title, or a text body's first line."""
    text = _body(response) or ""
    if "html" in response.headers.get("content-type", "").lower() or text.lstrip().startswith("<"):
        title = _TITLE.search(text)
        text = title.group(1) if title else _TAGS.sub(" ", text)
    line = " ".join(html.unescape(text).split())[:160]
    return line or "empty body"


def _http_error(exc: HfHubHTTPError, what: str, endpoint: str, **context: object) -> HubferryError:
    response = exc.response
    status = response.status_code
    url = redact(str(response.request.url)) if response.request is not None else None
    content_type = response.headers.get("content-type", "")
    if _is_json(content_type) or response.headers.get("X-Error-Message"):
        server = redact(exc.server_message or "") or redact(str(exc).splitlines()[0])
    else:  # a proxy's page: say so, instead of quoting HTML
        server = f"{_gist(response)} (a {content_type.split(';')[0] or 'non-JSON'} answer, likely from a proxy)"
    base = dict(status=status, url=url, body=_body(response), request_id=exc.request_id, **context)
    message = f"{what} failed: HTTP {status}: {server}"
    if status == 401:
        return PermanentError(
            message, category="authentication", **base,
            hint=f"the token is invalid or expired: create a write token at {endpoint}/settings/tokens "
            "and pass it with --token or HF_TOKEN",
        )
    if status == 403:
        return PermanentError(
            message, category="authentication", **base,
            hint="the token cannot write here: use a write token of the repo's owner or of a member of its org",
        )
    if status == 404 or isinstance(exc, RepositoryNotFoundError):
        return PermanentError(
            message, category="validation", **base,
            hint="check the repo id and revision; private repos of others answer 404",
        )
    if status == 429:
        return TransientError(
            message, category="rate_limit", retry_after=retry_after_seconds(response), **base,
            hint=f"the Hub is rate-limiting this token: wait and {_RESUME}",
        )
    if status == 408:
        return TransientError(message, category="timeout", **base, hint=f"the Hub timed out; {_RESUME}")
    if status == 412:
        return TransientError(
            message, category="service_error", **base,
            hint="someone else committed to this branch meanwhile; re-run to re-plan on the new head",
        )
    if status == 413:
        return PermanentError(
            message, category="validation", **base,
            hint="the commit is too large: lower HUBFERRY_COMMIT_MAX_FILES or HUBFERRY_COMMIT_MAX_REGULAR_BYTES",
        )
    if status >= 500:
        return TransientError(
            message, category="service_error", retry_after=retry_after_seconds(response), **base,
            hint=f"the Hub had a server error; {_RESUME}",
        )
    return PermanentError(message, category="validation", **base, hint="the Hub refused the request: read its message")


def _cause(exc: BaseException) -> BaseException:
    """The exception to classify: the first HTTP, network or parse failure in ``exc``'s cause chain.

    huggingface_hub re-raises failures of its upload threads as ``RuntimeError("Error while
    uploading ...")`` from the real error; classifying the wrapper would call a dead server a bug.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (HubferryError, HfHubHTTPError, *_NETWORK, json.JSONDecodeError, httpx2.DecodingError)):
            return current
        current = current.__cause__ or current.__context__
    return exc


def _request_url(exc: BaseException, endpoint: str) -> str:
    try:
        return redact(str(exc.request.url))  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # httpx2 raises RuntimeError when no request is attached
        return endpoint


def _not_json(what: str, endpoint: str, exc: BaseException, **context: object) -> TransientError:
    """The client could not parse an answer: a proxy, CDN or load balancer answered instead of the Hub."""
    answer = last_answer()
    if answer is not None and not _is_json(answer.content_type):
        kind = answer.content_type.split(";")[0] or "non-JSON"
        return TransientError(
            f"{what} failed: HTTP {answer.status} with a {kind} body instead of JSON (a proxy or load balancer "
            "in front of the Hub answered)", category="rate_limit" if answer.status == 429 else "service_error",
            status=answer.status, url=answer.url, retry_after=retry_after_seconds(answer.headers),
            request_id=answer.headers.get("x-request-id"), **context, hint=f"a transient failure; {_RESUME}",
        )
    return TransientError(
        f"{what} failed: the answer could not be parsed ({type(exc).__name__}: {redact(str(exc))})",
        category="service_error", url=answer.url if answer else endpoint, status=answer.status if answer else None,
        **context, hint=f"the Hub or a proxy in front of it sent a broken answer; {_RESUME}",
    )


def classify(exc: BaseException, *, what: str, endpoint: str, **context: object) -> HubferryError:
    """Turn any exception raised by a Hub call into a :class:`HubferryError`.

    Args:
        exc: what the call raised.
        what: the operation, for the message (``"create commit"``).
        endpoint: the Hub endpoint, for hints.
        **context: ``attempt``, ``elapsed_s``, ``repo_id`` ... kept on the error.
    """
    if isinstance(exc, HFValidationError):
        return ValidationError(f"{what}: {exc}", hint="fix the repo id (letters, digits, - _ .)",
                               **cast(dict[str, Any], context))
    if isinstance(exc, ValueError) and "README.md" in str(exc):
        return ValidationError(
            f"{what}: {redact(str(exc))}", hint="fix the YAML metadata block of README.md",
            **cast(dict[str, Any], context),
        )
    cause = _cause(exc)
    if isinstance(cause, HubferryError):
        return cause
    if isinstance(cause, HfHubHTTPError) and cause.response is not None:
        return _http_error(cause, what, endpoint, **context)
    if isinstance(cause, httpx2.TimeoutException):
        return TransientError(
            f"{what} timed out: {redact(str(cause)) or type(cause).__name__}", category="timeout",
            url=_request_url(cause, endpoint), **context,
            hint=f"the network or the Hub is slow; {_RESUME}, or raise HUBFERRY_READ_TIMEOUT",
        )
    if isinstance(cause, _NETWORK):
        return TransientError(
            f"{what} failed: network error: {redact(str(cause)) or type(cause).__name__}", category="network",
            url=_request_url(cause, endpoint), **context,
            hint=f"the connection to {endpoint} failed; check that it is reachable, then {_RESUME}",
        )
    if isinstance(cause, (json.JSONDecodeError, httpx2.DecodingError)):
        return _not_json(what, endpoint, cause, **context)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return PermanentError(
            f"{what}: cannot read {exc.filename}: {exc.strerror}", category="file_error", path=exc.filename,
            **context, hint="the folder changed during the push; check it and re-run",
        )
    if isinstance(exc, RuntimeError) and "xet" in str(exc).lower():
        return TransientError(
            f"{what} failed in Xet storage: {redact(str(exc))}", category="network", url=endpoint, **context,
            hint=f"{_RESUME}; set HUBFERRY_XET=off to use plain LFS",
        )
    return PermanentError(
        f"{what} failed: {type(exc).__name__}: {redact(str(exc))}", category="service_error", url=endpoint,
        **context, hint="unexpected answer from the Hub; re-run with --verbose and report it",
    )
