"""The one place where Hub client exceptions become hubferry errors with context and a hint."""

from __future__ import annotations

import email.utils
import re
import time

import httpx2
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError

from hubferry.errors import HubferryError, PermanentError, TransientError, ValidationError
from hubferry.logs import redact

_BODY_LIMIT = 1024
_RATE_LIMIT_T = re.compile(r"\bt=(\d+(?:\.\d+)?)")


def retry_after_seconds(response: httpx2.Response | None) -> float | None:
    """Seconds the server asked us to wait (``RateLimit: ...;t=N`` or ``Retry-After``), if any."""
    if response is None:
        return None
    rate_limit = response.headers.get("RateLimit")
    if rate_limit and (match := _RATE_LIMIT_T.search(rate_limit)):
        return float(match.group(1))
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    parsed = email.utils.parsedate_to_datetime(value) if value else None
    return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _body(response: httpx2.Response) -> str | None:
    try:
        return redact(response.text[:_BODY_LIMIT]) or None
    except (httpx2.ResponseNotRead, httpx2.StreamError, UnicodeDecodeError):
        return None


def _http_error(exc: HfHubHTTPError, what: str, endpoint: str, **context: object) -> HubferryError:
    response = exc.response
    status = response.status_code
    url = redact(str(response.request.url)) if response.request is not None else None
    server = redact(exc.server_message or "") or redact(str(exc).splitlines()[0])
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
            hint="the Hub is rate-limiting this token: wait and re-run; the push resumes where it stopped",
        )
    if status == 408:
        return TransientError(message, category="timeout", **base, hint="the Hub timed out; re-run to resume")
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
            hint="the Hub had a server error; re-run later to resume",
        )
    return PermanentError(message, category="validation", **base, hint="the Hub refused the request: read its message")


def classify(exc: BaseException, *, what: str, endpoint: str, **context: object) -> HubferryError:
    """Turn any exception raised by a Hub call into a :class:`HubferryError`.

    Args:
        exc: what the call raised.
        what: the operation, for the message (``"create commit"``).
        endpoint: the Hub endpoint, for hints.
        **context: ``attempt``, ``elapsed_s``, ``repo_id`` ... kept on the error.
    """
    if isinstance(exc, HubferryError):
        return exc
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return _http_error(exc, what, endpoint, **context)
    if isinstance(exc, httpx2.TimeoutException):
        return TransientError(
            f"{what} timed out: {redact(str(exc)) or type(exc).__name__}", category="timeout",
            url=endpoint, **context, hint="the network or the Hub is slow; re-run to resume, or raise "
            "HUBFERRY_READ_TIMEOUT",
        )
    if isinstance(exc, (httpx2.NetworkError, httpx2.RemoteProtocolError, ConnectionError)):
        return TransientError(
            f"{what} failed: network error: {redact(str(exc)) or type(exc).__name__}", category="network",
            url=endpoint, **context, hint=f"check that {endpoint} is reachable; re-run to resume",
        )
    if isinstance(exc, HFValidationError):
        return ValidationError(f"{what}: {exc}", **context, hint="fix the repo id (letters, digits, - _ .)")
    if isinstance(exc, ValueError) and "README.md" in str(exc):
        return ValidationError(
            f"{what}: {redact(str(exc))}", **context, hint="fix the YAML metadata block of README.md",
        )
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return PermanentError(
            f"{what}: cannot read {exc.filename}: {exc.strerror}", category="file_error", path=exc.filename,
            **context, hint="the folder changed during the push; check it and re-run",
        )
    if isinstance(exc, RuntimeError) and "xet" in str(exc).lower():
        return TransientError(
            f"{what} failed in Xet storage: {redact(str(exc))}", category="network", url=endpoint, **context,
            hint="re-run to resume; set HUBFERRY_XET=off to use plain LFS",
        )
    return PermanentError(
        f"{what} failed: {type(exc).__name__}: {redact(str(exc))}", category="service_error", url=endpoint,
        **context, hint="unexpected answer from the Hub; re-run with --verbose and report it",
    )
