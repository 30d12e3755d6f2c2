"""Who is calling ``hubferry serve``: API tokens and dashboard sessions, and the guard against forged requests.

The contract, for every route that takes a :class:`~hubferry.api.principal.Principal`:

- ``Authorization: Bearer hfy_...`` (an API token) authenticates alone. When the header is present
  the cookie is ignored, so a bad token is a 401 even in a signed-in browser.
- Otherwise the session cookie (``hubferry_session``: ``<session id>.<HMAC>``, HttpOnly,
  SameSite=Lax, Secure under an https public URL, 12 hours) authenticates, and every state-changing
  request it authenticates must carry the session's CSRF token in ``X-CSRF-Token`` (or a
  ``csrf_token`` field of a url-encoded form). The token is an HMAC of the session id: the sign-in
  answer and ``GET /api/v1/session`` return it, and the readable ``hubferry_csrf`` cookie holds it.
- Every state-changing request (POST, PUT, PATCH, DELETE ...), however authenticated, is refused
  (403) when a browser says it comes from another site: an ``Origin`` (else ``Referer``) that is
  neither the public URL nor the ``Host`` it was sent to, ``Origin: null``, or ``Sec-Fetch-Site:
  cross-site``/``same-site`` without either. Clients that send none of these (curl, SDKs,
  webhooks) pass.

The session cookie's HMAC key lives in the vault (owner ``hubferry:server``), so it is encrypted at
rest, follows ``hubferry secrets rotate``, and is shared by servers sharing a home.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hubferry.accounts import Accounts, validate_username
from hubferry.api.errors import ApiError, error_response, install_error_handlers
from hubferry.api.principal import Principal
from hubferry.config import Settings
from hubferry.errors import ValidationError
from hubferry.logs import get_logger
from hubferry.secrets.vault import Vault
from hubferry.services.identity import default_owner

if TYPE_CHECKING:
    from hubferry.accounts import NewSession
    from hubferry.services.context import Context

SESSION_COOKIE = "hubferry_session"
CSRF_COOKIE = "hubferry_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
#: The sign-in route: the only state-changing route that needs no CSRF token (it uses no session).
SIGN_IN_PATH = "/api/v1/session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Largest url-encoded form body the guard reads to find a ``csrf_token`` field.
MAX_FORM_BYTES = 64 * 1024

#: Vault owner of the server's own secrets (a user name cannot contain ':').
SERVER_OWNER = "hubferry:server"
_SESSION_KEY = "session_key"
#: Set in the request scope's state by :class:`RequestGuard` once the CSRF token matched: the session id.
_CSRF_PASSED = "hubferry_csrf_session"

log = get_logger(__name__)


class CookieSigner:
    """HMACs that bind a session cookie and its CSRF token to the server's key.

    Args:
        load_key: returns the key; called once, on first use.
    """

    def __init__(self, load_key: Callable[[], bytes]) -> None:
        self._load_key = load_key
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def _tag(self, purpose: str, value: str) -> str:
        if self._key is None:
            with self._lock:
                if self._key is None:
                    self._key = self._load_key()
        return hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()

    def cookie(self, session_id: str) -> str:
        return f"{session_id}.{self._tag('session', session_id)}"

    def session_id(self, cookie: str) -> str | None:
        """The session id of a cookie this server signed, else None."""
        session_id, _, tag = cookie.rpartition(".")
        if not session_id or len(cookie) > 200:
            return None
        return session_id if _same(tag, self._tag("session", session_id)) else None

    def csrf_token(self, session_id: str) -> str:
        return self._tag("csrf", session_id)


def _same(sent: str, expected: str) -> bool:
    # Bytes: compare_digest refuses non-ASCII str, and what was sent is the client's.
    return hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode())


def vault_session_key(vault: Vault) -> Callable[[], bytes]:
    """A loader of the session key kept in ``vault``, created on first use."""

    def load() -> bytes:
        key = vault.get(SERVER_OWNER, _SESSION_KEY)
        if key is None:
            vault.set(SERVER_OWNER, _SESSION_KEY, secrets.token_hex(32))
            key = vault.get(SERVER_OWNER, _SESSION_KEY)  # a racing server may have written first: use its key
        assert key is not None
        return key.encode("ascii")

    return load


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin or URL, the port made explicit; None if it is none."""
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return None
    return parts.scheme, parts.hostname.lower(), port


def cross_site(headers: dict[str, str], scheme: str, public_url: str | None) -> str | None:
    """Why a state-changing request looks sent by another site's page (None when it does not).

    Args:
        headers: the request headers, names lower-case.
        scheme: the request's scheme (``https`` behind a proxy only when uvicorn trusts its headers).
        public_url: where the server is reachable (``HUBFERRY_PUBLIC_URL``), if set.
    """
    sent = headers.get("origin") or headers.get("referer")
    if sent is None:
        fetch_site = headers.get("sec-fetch-site", "")
        return f"the browser says it comes from a {fetch_site} page" if fetch_site in ("cross-site", "same-site") \
            else None
    origin = _origin(sent)
    if origin is None:
        return f"it comes from an opaque origin ({sent[:40]!r})"
    if public_url and origin == _origin(public_url):
        return None
    host = headers.get("host")
    if host and origin == _origin(f"{scheme}://{host}"):
        return None
    return f"it comes from {origin[0]}://{origin[1]}:{origin[2]}, which is not this server"


class Authenticator:
    """``(request) -> Principal | None``, installed as ``app.state.authenticate``.

    Args:
        accounts: users, tokens and sessions.
        settings: for the public URL (Secure cookies).
        signer: signs session cookies and derives CSRF tokens.
    """

    def __init__(self, accounts: Accounts, settings: Settings, signer: CookieSigner) -> None:
        self.accounts = accounts
        self.settings = settings
        self.signer = signer

    def __call__(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            found = self.accounts.user_for_token(token.strip()) if scheme.lower() == "bearer" else None
            return Principal(found[0].name, found[0].is_admin, via="token") if found else None
        session_id = self.session_id(request)
        if session_id is None:
            return None
        if request.method not in SAFE_METHODS and request.scope.get("state", {}).get(_CSRF_PASSED) != session_id:
            # The guard checks every such request first; reaching here means it was bypassed.
            raise ApiError(403, "this request needs the session's CSRF token", hint=f"send it in {CSRF_HEADER}")
        live = self.accounts.session(session_id)
        return Principal(live[0].name, live[0].is_admin, via="session") if live else None

    def session_id(self, request: Request) -> str | None:
        """The session id of the request's cookie, if this server signed it (it may have ended)."""
        cookie = request.cookies.get(SESSION_COOKIE)
        return self.signer.session_id(cookie) if cookie else None

    def secure(self, request: Request) -> bool:
        return (self.settings.public_url or "").startswith("https://") or request.url.scheme == "https"

    def set_cookies(self, request: Request, response: Response, session: NewSession) -> str:
        """Put a new session in the response's cookies; returns its CSRF token."""
        max_age = int((session.expires_at - self.accounts.clock()).total_seconds())
        csrf = self.signer.csrf_token(session.secret)
        secure = self.secure(request)
        response.set_cookie(SESSION_COOKIE, self.signer.cookie(session.secret), max_age=max_age, path="/",
                            secure=secure, httponly=True, samesite="lax")
        # Readable by the dashboard's scripts: it is useless to another site, which cannot read it.
        response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, path="/", secure=secure, httponly=False,
                            samesite="strict")
        return csrf

    def clear_cookies(self, request: Request, response: Response) -> None:
        secure = self.secure(request)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="lax")
        response.delete_cookie(CSRF_COOKIE, path="/", secure=secure, httponly=False, samesite="strict")


class RequestGuard:
    """ASGI middleware refusing cross-site state changes, and cookie-authenticated ones without CSRF token."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.auth = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        headers = {k.lower(): v for k, v in request.headers.items()}
        reason = cross_site(headers, scope["scheme"], self.auth.settings.public_url)
        if reason is not None:
            log.warning("cross-site request refused", method=scope["method"], path=scope["path"], reason=reason)
            await error_response(403, f"cross-site request refused: {reason}", hint=(
                "send it from this server's pages; if this is the server's address, set HUBFERRY_PUBLIC_URL to it"
            ))(scope, receive, send)
            return
        signing_in = scope["method"] == "POST" and scope["path"] == SIGN_IN_PATH
        session_id = None if "authorization" in headers or signing_in else self.auth.session_id(request)
        if session_id is not None:
            sent = headers.get(CSRF_HEADER)
            if sent is None and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                sent, receive = await _form_field(receive, CSRF_FIELD)
            if sent is None or not _same(sent, self.auth.signer.csrf_token(session_id)):
                await error_response(403, "missing or wrong CSRF token", hint=(
                    f"send the session's csrf_token (from GET {SIGN_IN_PATH}) in the X-CSRF-Token header"
                ))(scope, receive, send)
                return
            scope.setdefault("state", {})[_CSRF_PASSED] = session_id
        await self.app(scope, receive, send)


async def _form_field(receive: Receive, name: str) -> tuple[str | None, Receive]:
    """A field of a url-encoded body (None when absent or the body is too large), and a receive that replays it."""
    messages: list[Message] = []
    size, more = 0, True
    while more and size <= MAX_FORM_BYTES:
        message = await receive()
        messages.append(message)
        size += len(message.get("body", b""))
        more = message.get("more_body", False) and message["type"] == "http.request"
    value = None
    if not more:
        body = b"".join(m.get("body", b"") for m in messages)
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), max_num_fields=200))
        value = fields.get(name)

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return value, replay


def install(app: FastAPI, ctx: Context) -> Authenticator:
    """Accounts on ``app``: error shapes, the request guard, ``/api/v1/session`` and ``/api/v1/tokens``.

    Returns:
        the authenticator, for ``app.state.authenticate``.
    """
    from hubferry.api.v1_session import session_router

    accounts = Accounts.on(ctx.jobs.engine)
    auth = Authenticator(accounts, ctx.settings, CookieSigner(vault_session_key(ctx.credentials.vault)))
    install_error_handlers(app)
    app.add_middleware(RequestGuard, authenticator=auth)
    app.include_router(session_router(auth))
    if accounts.store.count_users() == 0:
        log.warning(f"no users yet: nobody can sign in. Create the first with `hubferry users create "
                    f"{_first_user_name()} --admin` (it prints the password once); a user named like the OS account "
                    "owns the jobs and secrets the CLI made here.")
    return auth


def _first_user_name() -> str:
    """The OS account's name when it can name a user (its CLI jobs and stored secrets are then theirs)."""
    try:
        return validate_username(default_owner())
    except ValidationError:
        return "NAME"
