"""Hub-shaped error responses: ``X-Error-Code``, ``X-Error-Message`` and a JSON ``{"error"}`` body.

huggingface_hub maps ``X-Error-Code`` to typed exceptions (``RepoNotFound`` ->
``RepositoryNotFoundError`` ...), and on a plain-http endpoint that header is the only thing that
does it, so every error the registry returns goes through :func:`error_response`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hubferry.errors import ValidationError

_DEFAULT_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    412: "PreconditionFailed",
    413: "PayloadTooLarge",
    416: "RangeNotSatisfiable",
    422: "UnprocessableEntity",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


#: What a client learns of an unexpected error (the details go to the server log only).
INTERNAL_ERROR = "Internal error in the registry; the server log has the details"


class HubHTTPError(Exception):
    """An error the registry answers with.

    Args:
        status: HTTP status.
        message: the ``error`` text.
        code: ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound`` ...).
        headers: extra response headers (for example ``X-Repo-Commit``).
        body: extra JSON fields (for example ``url`` on a 409 from ``repos/create``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _DEFAULT_CODES.get(status, "Error")
        self.headers = headers or {}
        self.body = body or {}


def repo_not_found(repo_id: str) -> HubHTTPError:
    return HubHTTPError(404, f"Repository Not Found for {repo_id}.", code="RepoNotFound")


def revision_not_found(repo_id: str, revision: str) -> HubHTTPError:
    return HubHTTPError(404, f"Invalid rev id: {revision} in {repo_id}", code="RevisionNotFound")


def entry_not_found(path: str, commit: str | None = None) -> HubHTTPError:
    headers = {"X-Repo-Commit": commit} if commit else {}
    return HubHTTPError(404, f"Entry not found: {path}", code="EntryNotFound", headers=headers)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def header_safe(text: str, limit: int = 1000) -> str:
    """``text`` fit for a response header: ASCII, no control characters (CR/LF/NUL would split or
    break the response), at most ``limit`` characters."""
    return _CONTROL.sub(" ", text.encode("ascii", "backslashreplace").decode("ascii"))[:limit]


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> JSONResponse:
    """The one place error responses are built."""
    code = code or _DEFAULT_CODES.get(status, "Error")
    all_headers = {"X-Error-Code": code, "X-Error-Message": header_safe(message), **(headers or {})}
    return JSONResponse({"error": message, **(body or {})}, status_code=status, headers=all_headers)


def install_handlers(app: FastAPI) -> None:
    """Route every exception the app can raise to :func:`error_response`."""

    @app.exception_handler(HubHTTPError)
    async def _hub_error(_request: Request, exc: HubHTTPError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.headers, exc.body)

    @app.exception_handler(ValidationError)
    async def _validation(_request: Request, exc: ValidationError) -> JSONResponse:
        return error_response(400, exc.message, "BadRequest")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, f"Invalid request: {describe_errors(exc.errors())}")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
        # Starlette still re-raises after this answer, so the traceback reaches the server log.
        return error_response(500, INTERNAL_ERROR)


def describe_errors(errors: Sequence[Any], limit: int = 3) -> str:
    """Pydantic/FastAPI validation errors as ``where: what`` phrases (the first ``limit``)."""
    phrases = []
    for err in list(errors)[:limit]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")) or "value"
        phrases.append(f"{where}: {err.get('msg')}")
    more = len(errors) - limit
    return "; ".join(phrases) + (f" (and {more} more)" if more > 0 else "")
