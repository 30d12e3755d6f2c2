"""Hub-shaped error responses: ``X-Error-Code``, ``X-Error-Message`` and a JSON ``{"error"}`` body.

huggingface_hub maps ``X-Error-Code`` to typed exceptions (``RepoNotFound`` ->
``RepositoryNotFoundError`` ...), and on a plain-http endpoint that header is the only thing that
does it, so every error the registry returns goes through :func:`error_response`.
"""

from __future__ import annotations

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


def _header_safe(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii").replace("\r", " ").replace("\n", " ")[:1000]


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> JSONResponse:
    """The one place error responses are built."""
    code = code or _DEFAULT_CODES.get(status, "Error")
    all_headers = {"X-Error-Code": code, "X-Error-Message": _header_safe(message), **(headers or {})}
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
        details = "; ".join(f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}" for err in exc.errors())
        return error_response(422, f"Invalid request: {details}")
