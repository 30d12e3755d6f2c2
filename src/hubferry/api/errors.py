"""The API's one error shape, ``{"error": {"category", "message", "hint", ...}}``, for every failure.

::

    ApiError(status, message, category=, hint=, field=)   raised by routes: its status, as is
    HTTPException (FastAPI/Starlette)                      same shape, its status and headers kept
    RequestValidationError                                 422 naming the field; the input is never echoed
    HubferryError                                          :func:`from_error`: 422 for ValidationError, the
                                                           error's own 4xx ``status``, 503 if retryable, else 500

Categories come from :data:`hubferry.errors.CATEGORIES`: ``authentication`` for 401/403,
``rate_limit`` for 429, ``service_error`` for 5xx and ``validation`` for the other 4xx (a 404 is
"that is not something you may name").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hubferry.errors import HubferryError, ValidationError
from hubferry.logs import redact

#: Where a request field may come from, as FastAPI names it first in an error's ``loc``.
_SOURCES = frozenset({"body", "query", "path", "header", "cookie"})
_SIGN_IN_HINT = "sign in with POST /api/v1/session, or get an API token: `hubferry users token NAME`"


def category_for(status: int) -> str:
    """The error category of an HTTP status."""
    if status in (401, 403):
        return "authentication"
    if status == 429:
        return "rate_limit"
    return "service_error" if status >= 500 else "validation"


def error_body(category: str, message: str, hint: str = "", **extra: Any) -> dict[str, Any]:
    """The JSON body of an error response."""
    return {"error": {"category": category, "message": message, "hint": hint,
                      **{k: v for k, v in extra.items() if v is not None}}}


def error_response(status: int, message: str, *, category: str | None = None, hint: str = "",
                   headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An error response in the API's shape (``no-store``: errors may name users or endpoints)."""
    return JSONResponse(error_body(category or category_for(status), message, hint, **extra), status_code=status,
                        headers={"Cache-Control": "no-store", **(headers or {})})


class ApiError(Exception):
    """An error a route answers with.

    Args:
        status: the HTTP status.
        message: one sentence saying what went wrong (never a secret).
        category: default from the status.
        hint: what to do next.
        field: the request field at fault (422).
        headers: extra response headers (``WWW-Authenticate``, ``Retry-After``).
    """

    def __init__(self, status: int, message: str, *, category: str | None = None, hint: str = "",
                 field: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.category = category or category_for(status)
        self.hint = hint
        self.field = field
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, category=self.category, hint=self.hint,
                              headers=self.headers, field=self.field)


def not_found(what: str) -> ApiError:
    """404 for anything the user may not see, whether or not it exists."""
    return ApiError(404, f"{what} not found")


def from_error(exc: HubferryError) -> ApiError:
    """A hubferry error as an API error (message and hint redacted)."""
    status = exc.context.get("status")
    if isinstance(exc, ValidationError):
        status = 422
    elif not (isinstance(status, int) and 400 <= status < 500):
        status = 503 if exc.retryable else 500
    headers = {"Retry-After": str(exc.context["retry_after_s"])} if "retry_after_s" in exc.context else None
    field = exc.context.get("field")
    return ApiError(status, redact(exc.message), category=exc.category, hint=redact(exc.hint),
                    field=field if isinstance(field, str) else None, headers=headers)


def field_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """``[{"field", "message"}]`` from pydantic/FastAPI errors, without the offending input."""
    found = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if len(loc) > 1 and loc[0] in _SOURCES:
            loc = loc[1:]
        found.append({"field": ".".join(loc) or "body", "message": str(error.get("msg", "invalid"))})
    return found


def install_error_handlers(app: FastAPI) -> None:
    """Answer :class:`ApiError`, ``HTTPException`` and request validation failures in the API's shape."""

    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        hint = _SIGN_IN_HINT if exc.status_code == 401 else ""
        return error_response(exc.status_code, message, hint=hint, headers=exc.headers)

    async def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        fields = field_errors(exc.errors())
        first = fields[0] if fields else {"field": "body", "message": "invalid"}
        return error_response(422, f"{first['field']}: {first['message']}", field=first["field"], fields=fields,
                              hint="fix the named field and send the request again")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
