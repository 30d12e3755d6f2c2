"""Sign-in for the HTML pages: a session cookie bound to a registry token, and CSRF checks for forms.

- The session cookie holds ``<token id>.<expiry>.<mac>`` (HMAC with the registry's signing key). It
  is HttpOnly and SameSite=Strict, and dies with its expiry or with the token it was opened with,
  so revoking a token also signs out every browser that used it.
- Every form carries a CSRF token: a MAC over a random nonce (kept in its own HttpOnly, Strict
  cookie) and the session's token id. A POST must bring the matching token, and its ``Origin``
  (or ``Referer``) must be the registry's own origin.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from fastapi import Request, Response

from .auth import ANONYMOUS, Principal, principal_for_token_id
from .context import RegistryContext, base_url, context
from .httperrors import HubHTTPError
from .limits import MAX_FORM_BYTES, read_body

SESSION_COOKIE = "hubferry_session"
CSRF_COOKIE = "hubferry_csrf"
#: Lifetime of the CSRF nonce cookie (it carries no authority by itself).
CSRF_COOKIE_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class PageState:
    """Who is looking at a page, and the CSRF token their forms must carry."""

    ctx: RegistryContext
    principal: Principal
    nonce: str
    new_nonce: bool
    secure: bool

    @property
    def csrf(self) -> str:
        return self.ctx.signer.tag("csrf", self.nonce, self.principal.token_id or "")


def page_state(request: Request) -> PageState:
    """The session of this request (anonymous without a valid cookie) and its CSRF nonce."""
    ctx = context(request)
    nonce = request.cookies.get(CSRF_COOKIE, "")
    new_nonce = not (16 <= len(nonce) <= 64 and nonce.isalnum())
    if new_nonce:
        nonce = secrets.token_hex(16)
    secure = base_url(request).startswith("https://")
    return PageState(ctx, _session_principal(ctx, request.cookies.get(SESSION_COOKIE, "")), nonce, new_nonce, secure)


def _session_principal(ctx: RegistryContext, cookie: str) -> Principal:
    token_id, _, rest = cookie.partition(".")
    expires, _, mac = rest.partition(".")
    if not (token_id.isdecimal() and expires.isdecimal() and len(token_id) < 19 and len(expires) < 19):
        return ANONYMOUS
    if not _same(mac, ctx.signer.tag("session", token_id, expires)) or int(expires) < time.time():
        return ANONYMOUS
    return principal_for_token_id(ctx.engine, int(token_id)) or ANONYMOUS


def _same(sent: str, expected: str) -> bool:
    # Bytes: compare_digest refuses non-ASCII str, and what was sent is attacker-controlled.
    return hmac.compare_digest(sent.encode(), expected.encode())


def open_session(state: PageState, response: Response, principal: Principal) -> None:
    """Set the session cookie for ``principal`` (signed in with token ``principal.token_id``)."""
    ttl = state.ctx.settings.session_ttl_s
    expires = str(int(time.time()) + ttl)
    value = f"{principal.token_id}.{expires}.{state.ctx.signer.tag('session', str(principal.token_id), expires)}"
    _set(response, SESSION_COOKIE, value, ttl, state.secure)


def close_session(state: PageState, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=state.secure, httponly=True, samesite="strict")


def keep_nonce(state: PageState, response: Response) -> None:
    """Set the CSRF nonce cookie if this request had none."""
    if state.new_nonce:
        _set(response, CSRF_COOKIE, state.nonce, CSRF_COOKIE_TTL_S, state.secure)


def _set(response: Response, name: str, value: str, max_age: int, secure: bool) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=secure, httponly=True, samesite="strict")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:
        return "invalid"
    host = (parts.hostname or "").lower()
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default_port else "")


async def form_body(request: Request) -> dict[str, str]:
    """A small url-encoded form (last value wins); 400 for anything else."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise HubHTTPError(400, "Expected a form (application/x-www-form-urlencoded)")
    raw = await read_body(request, MAX_FORM_BYTES, "The form")
    try:
        return dict(parse_qsl(raw.decode("utf-8"), max_num_fields=50))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HubHTTPError(400, f"Invalid form: {exc}") from None


def forgery(request: Request, state: PageState, form: dict[str, str]) -> str | None:
    """Why this form POST may be forged (``None`` if it passes the origin and CSRF-token checks)."""
    sent_origin = request.headers.get("origin") or request.headers.get("referer")
    if sent_origin is not None and _origin(sent_origin) != _origin(base_url(request)):
        return (
            f"This form was sent from {_origin(sent_origin)}, not from this registry ({_origin(base_url(request))}). "
            "If that is this registry's address, start the registry with --public-url set to it."
        )
    if state.new_nonce or not _same(form.get("csrf", ""), state.csrf):
        return "The form has expired or did not come from this registry's pages: reload the page and try again."
    return None
