"""``/api/v1/session`` (sign in, who am I, sign out) and ``/api/v1/tokens`` (your API tokens).

- ``POST /api/v1/session`` with ``{"username", "password"}`` as JSON or a url-encoded form: sets the
  session cookies; JSON gets ``{"user", "via", "csrf_token", "expires_at"}``, a form a 303 to ``/``.
  401 for a wrong name or password (the same answer for both), 429 with ``Retry-After`` after
  repeated failures.
- ``GET /api/v1/session``: the caller (session or API token); 401 when signed out.
- ``DELETE /api/v1/session``: ends the session and clears the cookies (204).
- ``GET /api/v1/tokens``, ``POST /api/v1/tokens`` ``{"label"}`` (201, the token shown this once),
  ``DELETE /api/v1/tokens/{id}`` (204; 404 for a token that is not yours).
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import parse_qsl

import pydantic
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from hubferry.api.auth import Authenticator
from hubferry.api.errors import ApiError, from_error, not_found
from hubferry.api.principal import Principal, current_principal
from hubferry.errors import HubferryError

#: Largest sign-in body read.
MAX_SIGN_IN_BYTES = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store"}
#: A route parameter of this type is the authenticated caller (401 without one).
Caller = Annotated[Principal, Depends(current_principal)]


class SignIn(BaseModel):
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)


class NewTokenRequest(BaseModel):
    label: str = Field("", max_length=100, description="What the token is for, e.g. 'laptop' or 'CI'.")


def _user_view(principal: Principal) -> dict[str, Any]:
    return {"name": principal.name, "is_admin": principal.is_admin}


async def _sign_in_fields(request: Request) -> tuple[SignIn, bool]:
    """The sign-in credentials of a JSON or url-encoded body, and whether it was a form."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SIGN_IN_BYTES:
            raise ApiError(413, f"the sign-in body is larger than {MAX_SIGN_IN_BYTES} bytes", field="body")
    is_form = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
    try:
        raw: Any = dict(parse_qsl(body.decode("utf-8"), max_num_fields=20)) if is_form else json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(422, "the body is neither JSON nor a url-encoded form", field="body",
                       hint='send {"username": ..., "password": ...} as application/json') from None
    try:
        return SignIn.model_validate(raw), is_form
    except pydantic.ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


def session_router(auth: Authenticator) -> APIRouter:
    """The session and token routes over ``auth``'s accounts."""
    router = APIRouter(prefix="/api/v1", tags=["session"])
    accounts = auth.accounts

    @router.post("/session", summary="Sign in", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": SignIn.model_json_schema()},
        "application/x-www-form-urlencoded": {"schema": SignIn.model_json_schema()}}}})
    async def sign_in(request: Request) -> Response:
        credentials, is_form = await _sign_in_fields(request)
        address = request.client.host if request.client else "unknown"
        try:
            session = await run_in_threadpool(accounts.sign_in, credentials.username, credentials.password, address)
        except HubferryError as exc:
            raise from_error(exc) from None
        principal = Principal(session.user.name, session.user.is_admin, via="session")
        response: Response = RedirectResponse("/", status_code=303, headers=_NO_STORE) if is_form else JSONResponse(
            {"user": _user_view(principal), "via": "session", "expires_at": session.expires_at.isoformat(),
             "csrf_token": auth.signer.csrf_token(session.secret)}, headers=_NO_STORE)
        auth.set_cookies(request, response, session)
        return response

    @router.get("/session", summary="Who am I")
    def who_am_i(request: Request, principal: Caller) -> JSONResponse:
        view: dict[str, Any] = {"user": _user_view(principal), "via": principal.via}
        if principal.via == "session" and (session_id := auth.session_id(request)):
            view["csrf_token"] = auth.signer.csrf_token(session_id)
        return JSONResponse(view, headers=_NO_STORE)

    @router.delete("/session", status_code=204, summary="Sign out")
    def sign_out(request: Request) -> Response:
        response = Response(status_code=204)
        if session_id := auth.session_id(request):
            accounts.sign_out(session_id)
        auth.clear_cookies(request, response)
        return response

    @router.get("/tokens", summary="Your API tokens")
    def list_tokens(principal: Caller) -> dict[str, Any]:
        return {"tokens": [t.to_dict() for t in accounts.tokens(principal.name)]}

    @router.post("/tokens", status_code=201, summary="Create an API token (shown once)")
    def create_token(principal: Caller, body: NewTokenRequest | None = None) -> JSONResponse:
        try:
            created = accounts.create_token(principal.name, (body or NewTokenRequest()).label)
        except HubferryError as exc:
            raise from_error(exc) from None
        return JSONResponse({**created.record.to_dict(), "token": created.secret}, status_code=201,
                            headers=_NO_STORE)

    @router.delete("/tokens/{token_id}", status_code=204, summary="Revoke one of your API tokens")
    def revoke_token(token_id: str, principal: Caller) -> Response:
        if not accounts.revoke_token(principal.name, token_id):
            raise not_found(f"token {token_id[:40]!r}")
        return Response(status_code=204)

    return router
