"""Protections applied to every answer, whatever route produced it.

- :class:`HardenedResponses` (the outermost ASGI layer): ``nosniff``, a Content-Security-Policy
  (sandboxed for content, strict for pages), no referrer and no framing; header values stripped of
  control characters (a CR, LF or NUL that reached a header would split or drop the response); an
  exception that escaped everything else becomes a JSON 500 instead of a dropped connection.
- :class:`RedactSignedUrls`: the access log never shows a signed URL's query string.
"""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

import structlog

from .httperrors import INTERNAL_ERROR, error_response

log = structlog.get_logger("hubferry.registry")

#: For everything that is not one of our pages: nothing may load or run, even if a browser renders it.
CONTENT_POLICY = "default-src 'none'; sandbox; frame-ancestors 'none'"
#: The fixed headers of every answer.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def page_policy(style_hash: str) -> str:
    """The CSP of the HTML pages: their one inline stylesheet (by hash), forms to this origin, no script."""
    return (
        f"default-src 'none'; style-src '{style_hash}'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


class HardenedResponses:
    """ASGI middleware adding the security headers, sanitising header values, and catching escapes."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def hardened_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = dict(message, headers=harden(message.get("headers", [])))
            await send(message)

        try:
            await self.app(scope, receive, hardened_send)
        except Exception:
            if started:  # too late for an answer; the server closes the connection
                raise
            log.exception("unhandled error in the registry", method=scope.get("method"), path=scope.get("path"))
            await error_response(500, INTERNAL_ERROR)(scope, receive, hardened_send)


def harden(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with control characters replaced and the security headers added."""
    out = [(name, _CONTROL.sub(b" ", value)) for name, value in headers]
    names = {name.lower() for name, _ in out}
    out += [(name, value) for name, value in SECURITY_HEADERS if name not in names]
    if b"content-security-policy" not in names:
        out.append((b"content-security-policy", CONTENT_POLICY.encode()))
    return out


_WITH_QUERY = re.compile(r"^([^?\s]*)\?(\S*)$")


class RedactSignedUrls(logging.Filter):
    """Drops the query string of ``/lfs-*`` URLs and of any URL carrying ``sig=`` from log records.

    A signed URL is a bearer credential until it expires; uvicorn's access log would print it whole.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def redact_url(text: str) -> str:
    """``text`` without its query string if it is a signed-URL path (``/lfs-*`` or with ``sig=``)."""
    match = _WITH_QUERY.match(text)
    if match and (text.startswith("/lfs-") or "sig=" in match.group(2)):
        return f"{match.group(1)}?[redacted]"
    return text


#: One instance, so installing it again (one app per test) does not stack filters.
REDACT_SIGNED_URLS = RedactSignedUrls()
