"""How the dashboard answers: autoescaped Jinja pages with a strict CSP, and its static files.

Every page and fragment goes through :func:`render`, which sets the security headers: scripts only
from this server (no inline script, no ``eval``: htmx is configured by a meta tag), styles only from
this server, no framing, ``nosniff``. Static files come from the package (``web/static``): nothing is
loaded from a CDN, so the dashboard works offline.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATE_DIR = HERE / "templates"

#: The Content-Security-Policy of every dashboard answer.
CSP = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
    "font-src 'self'", "object-src 'none'", "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
#: Static files the dashboard serves, by suffix.
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".txt": "text/plain",
                ".ico": "image/x-icon", ".png": "image/png"}


def _duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    total = int(round(seconds))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    return f"{total // 3600} h {total % 3600 // 60:02d} min"


def _size(value: int | float | None) -> str:
    """``812 B``, ``256 KB``, ``1.4 GB`` (powers of 1000, as the Hub shows sizes)."""
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" or size >= 100 else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover - the loop returns at GB


def _when(value: datetime | str | None) -> str:
    """A timestamp as ``2024-05-01 12:03:04 UTC``."""
    if value is None:
        return "-"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}"


def make_environment() -> Environment:
    """The dashboard's Jinja environment: every ``{{ }}`` is HTML-escaped."""
    env = Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(duration=_duration, size=_size, when=_when, number=_number)
    return env


class Renderer:
    """Renders the dashboard's templates into answers carrying :data:`SECURITY_HEADERS`."""

    def __init__(self) -> None:
        self.env = make_environment()

    def render(self, request: Request, template: str, context: dict[str, Any], *, status: int = 200,
               headers: dict[str, str] | None = None) -> HTMLResponse:
        html = self.env.get_template(template).render(request=request, **context)
        return HTMLResponse(html, status_code=status, headers={
            **SECURITY_HEADERS, "Cache-Control": "no-store", **(headers or {})})


def with_security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def static_file(path: str) -> Response:
    """A file under ``web/static`` (404 for anything else, ``..`` and unknown types included)."""
    target = (STATIC_DIR / path).resolve()
    media_type = STATIC_TYPES.get(target.suffix)
    if media_type is None or not target.is_relative_to(STATIC_DIR.resolve()) or not target.is_file():
        return with_security_headers(Response("not found", status_code=404, media_type="text/plain"))
    return with_security_headers(FileResponse(target, media_type=media_type,
                                              headers={"Cache-Control": "public, max-age=300"}))
