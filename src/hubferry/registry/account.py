"""Pages for people: sign in with a token, sign out, and manage one's tokens at ``/settings/tokens``.

Every form POST is checked for forgery (:func:`hubferry.registry.session.forgery`) before it acts.
A token is shown in full once, on the page that created it; afterwards only its prefix.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .api import iso
from .auth import create_token, list_tokens, principal_for_token, revoke_token
from .page import message, render
from .session import PageState, close_session, forgery, form_body, open_session, page_state

router = APIRouter()

#: Longest token name.
MAX_TOKEN_NAME = 100
_TOKEN_NAME = re.compile(r"^[^\x00-\x1f\x7f]+$")

Form = Annotated[dict[str, str], Depends(form_body)]


def _see_other(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    state = page_state(request)
    if state.principal.user:
        return _see_other("/")
    return _login(state)


def _login(state: PageState, error: str = "", status: int = 200) -> HTMLResponse:
    hours = state.ctx.settings.session_ttl_s // 3600
    return render(state, "login.html", "Sign in", status, error=error, session_hours=hours)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, form: Form) -> Response:
    state = page_state(request)
    refused = forgery(request, state, form)
    if refused:
        return _login(state, refused, 403)
    principal = principal_for_token(state.ctx.engine, form.get("token", "").strip())
    if principal is None:
        return _login(state, "That token is not valid here. Check that you pasted the whole token (hf_...).", 401)
    response = _see_other("/")
    open_session(state, response, principal)
    return response


@router.post("/logout", response_class=HTMLResponse)
def logout(request: Request, form: Form) -> Response:
    state = page_state(request)
    refused = forgery(request, state, form)
    if refused:
        return message(state, 403, refused)
    response = _see_other("/")
    close_session(state, response)
    return response


def _tokens_page(state: PageState, status: int = 200, **values: object) -> HTMLResponse:
    user = state.principal.user or ""
    tokens = [
        {
            "id": info.id,
            "name": info.name,
            "role": info.role,
            "prefix": info.prefix,
            "created": iso(info.created_at),
            "last_used": iso(info.last_used_at) if info.last_used_at else "never",
        }
        for info in list_tokens(state.ctx.engine, user)
    ]
    values = {"error": "", "created": None, **values}
    return render(state, "tokens.html", f"Access tokens of {user}", status, tokens=tokens,
                  max_name=MAX_TOKEN_NAME, **values)  # fmt: skip


@router.get("/settings/tokens", response_class=HTMLResponse)
def tokens(request: Request) -> Response:
    state = page_state(request)
    if not state.principal.user:
        return _see_other("/login")
    return _tokens_page(state)


def _token_form(request: Request, form: dict[str, str]) -> tuple[PageState, Response | None]:
    """The state of a POST to the tokens page, and the answer if it must stop here (signed out, forged)."""
    state = page_state(request)
    if not state.principal.user:
        return state, _see_other("/login")
    refused = forgery(request, state, form)
    return state, (_tokens_page(state, 403, error=refused) if refused else None)


@router.post("/settings/tokens", response_class=HTMLResponse)
def new_token(request: Request, form: Form) -> Response:
    state, stop = _token_form(request, form)
    if stop:
        return stop
    name, role = form.get("name", "").strip(), form.get("role", "read")
    if not (0 < len(name) <= MAX_TOKEN_NAME and _TOKEN_NAME.match(name)):
        return _tokens_page(state, 400, error=f"Give the token a name of 1 to {MAX_TOKEN_NAME} printable characters.")
    if role not in ("read", "write"):
        return _tokens_page(state, 400, error="The role must be read or write.")
    if role == "write" and state.principal.role != "write":
        # A session opened with a read-only token must not mint a token with more rights than its own.
        return _tokens_page(state, 403, error="You signed in with a read-only token: sign in with a write token first.")
    user = state.principal.user or ""  # signed in: checked by _token_form
    token = create_token(state.ctx.engine, user, read_only=role == "read", display_name=name)
    return _tokens_page(state, created={"name": name, "role": role, "token": token})


@router.post("/settings/tokens/{token_id}/revoke", response_class=HTMLResponse)
def revoke(request: Request, token_id: int, form: Form) -> Response:
    state, stop = _token_form(request, form)
    if stop:
        return stop
    own = {info.id for info in list_tokens(state.ctx.engine, state.principal.user)}
    if token_id not in own:
        return _tokens_page(state, 404, error="No such token among yours.")
    revoke_token(state.ctx.engine, token_id)
    if token_id == state.principal.token_id:  # this session's own token: the session ends with it
        response = _see_other("/login")
        close_session(state, response)
        return response
    return _see_other("/settings/tokens")
