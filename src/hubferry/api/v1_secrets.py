"""``/api/v1/secrets``: the caller's own Hub tokens (one per endpoint), Replicate token and RunPod key.

A value is checked before it is stored (Hub: whoami at that endpoint; Replicate: its account),
kept encrypted in the vault, and never returned: answers say only that it is set, whose it is, its
last four characters and when it was checked. There is no route to anyone else's secrets, admins
included; deleting what you do not have is a 404.

- ``GET /api/v1/secrets`` -> ``{"hub": [{endpoint, username, last4, checked_at}],
  "replicate": {set, username, last4, checked_at}, "runpod": {set, last4, updated_at}}``
- ``PUT /api/v1/secrets/hub`` ``{"endpoint", "token"}``; ``DELETE /api/v1/secrets/hub?endpoint=URL``
- ``PUT /api/v1/secrets/replicate`` ``{"token"}``; ``DELETE /api/v1/secrets/replicate``
- ``PUT /api/v1/secrets/runpod`` ``{"token"}`` (checked with RunPod first); ``DELETE /api/v1/secrets/runpod``

The Hub endpoint is the user's, so checking a token there must not let them make this server call any
address (cloud metadata, internal services): the server's own endpoint setting is trusted, any other
endpoint's host is resolved and every address checked (:mod:`hubferry.dataset.addresses`; private,
loopback, link-local, multicast and reserved addresses only for hosts in ``hub_allow_hosts``), whoami is
sent to the checked address (no second resolution), redirects are not followed and the answer's size is
bounded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Protocol
from urllib.parse import urlsplit

import httpx2
from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from hubferry.api.errors import ApiError, not_found
from hubferry.api.principal import Principal, current_principal
from hubferry.config import Settings
from hubferry.dataset.addresses import AllowList, Resolver, choose_address, system_resolve
from hubferry.errors import HubferryError, PermanentError, ValidationError
from hubferry.hub.preflight import identity_of
from hubferry.logs import get_logger, redact, register_secret
from hubferry.secrets.hub_credentials import HubCredential, normalise_endpoint
from hubferry.services.context import Context
from hubferry.services.credentials import REPLICATE_TOKEN
from hubferry.services.credentials import RUNPOD_KEY as RUNPOD_API_KEY
from hubferry.services.ports import HubIdentity, HubTarget
from hubferry.trainers import replicate_api

#: Vault names of the other per-user secrets.
REPLICATE_USERNAME = "replicate_username"
#: Values shorter than this show no last characters (four of a short value give too much away).
MIN_CHARS_FOR_LAST4 = 16
#: The most of a whoami answer read from an endpoint that is not the server's own (a hostile one may not stop).
MAX_WHOAMI_BYTES = 256 * 1024
#: The setting that lets a user store a token for a Hub on a private or loopback address.
HUB_ALLOW_SETTING = "HUBFERRY_HUB_ALLOW_HOSTS"
#: A route parameter of this type is the authenticated caller (401 without one).
Caller = Annotated[Principal, Depends(current_principal)]

log = get_logger(__name__)


class ReplicateAccount(Protocol):
    def whoami(self) -> str: ...


class HubTokenIn(BaseModel):
    endpoint: str = Field(min_length=1, max_length=2000, description="The Hub's URL, e.g. https://huggingface.co.")
    token: str = Field(min_length=1, max_length=4096, repr=False)


class TokenIn(BaseModel):
    token: str = Field(min_length=1, max_length=4096, repr=False)


def _last4(value: str) -> str | None:
    return value[-4:] if len(value) >= MIN_CHARS_FOR_LAST4 else None


def _hub_view(credential: HubCredential) -> dict[str, Any]:
    return {"endpoint": credential.endpoint, "username": credential.username, "last4": _last4(credential.token),
            "checked_at": credential.updated_at or None}


def valid_endpoint(endpoint: str) -> str:
    """The normalised Hub endpoint, if it is an http(s) URL with a host and nothing after the path.

    Raises:
        ApiError: 422 naming ``endpoint``.
    """
    parts = urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None \
            or parts.password is not None or parts.query or parts.fragment:
        raise ApiError(422, "the endpoint must be an http(s) URL such as https://huggingface.co", field="endpoint",
                       hint="no user name, password, query or fragment in it")
    return normalise_endpoint(endpoint)


def _is_default(settings: Settings, endpoint: str) -> bool:
    return normalise_endpoint(settings.resolved_endpoint()) == endpoint


def hub_address(settings: Settings, endpoint: str, *, field: str = "endpoint",
                resolve: Resolver = system_resolve) -> str:
    """The address to reach a user-supplied Hub ``endpoint`` at, once the SSRF guard allows every address it has.

    Raises:
        ApiError: 422 naming ``field`` when an address is refused or the host does not resolve.
    """
    url = httpx2.URL(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        return choose_address(url.host, port, AllowList.parse(settings.hub_allow_hosts), resolve, url=endpoint,
                              setting=HUB_ALLOW_SETTING)
    except ValidationError as exc:
        if exc.context.get("code") == "refused_address":
            raise ApiError(422, exc.message.replace("refused to fetch from", "refused to contact the Hub at"),
                           field=field, hint=exc.hint) from None
        raise ApiError(422, f"cannot reach the Hub at {endpoint}: {exc.message}", field=field,
                       category="network", hint="check the endpoint's host name") from None


def check_hub_endpoint(settings: Settings, endpoint: str | None, *, field: str = "endpoint",
                       resolve: Resolver = system_resolve) -> None:
    """Refuse a Hub ``endpoint`` a job or preview names (other than the server's own) that resolves to a private,
    loopback, link-local, multicast, reserved or metadata address, unless ``hub_allow_hosts`` allows it.

    Raises:
        ApiError: 422 naming ``field``.
    """
    if endpoint is None or _is_default(settings, normalise_endpoint(endpoint)):
        return
    try:
        httpx2.URL(endpoint)
    except (httpx2.InvalidURL, TypeError, ValueError):
        raise ApiError(422, "the endpoint must be an http(s) URL such as https://huggingface.co", field=field) from None
    hub_address(settings, endpoint, field=field, resolve=resolve)


def guarded_whoami(settings: Settings, endpoint: str, token: str, *, transport: httpx2.BaseTransport | None = None,
                   resolve: Resolver = system_resolve) -> HubIdentity:
    """whoami at a user-supplied Hub ``endpoint``, sent only to an address the SSRF guard allows.

    The host is resolved once and every address checked (``hub_allow_hosts`` lets private ones through);
    the request goes to the checked address with the endpoint's ``Host`` (and TLS name), no environment
    proxy, no redirect followed, and at most :data:`MAX_WHOAMI_BYTES` of the answer read.

    Raises:
        ApiError: 422 naming ``endpoint`` (refused address, redirect, not a Hub) or ``token`` (refused),
            502 when the endpoint cannot be reached.
    """
    url = httpx2.URL(endpoint + "/api/whoami-v2")
    host = url.host
    address = hub_address(settings, endpoint, resolve=resolve)
    headers = {"Host": url.netloc.decode("ascii"), "Authorization": f"Bearer {token}", "Accept": "application/json",
               "User-Agent": "hubferry"}
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    timeout = httpx2.Timeout(min(settings.read_timeout, 30.0), connect=min(settings.connect_timeout, 10.0))
    what = f"the Hub at {endpoint}"
    try:
        with httpx2.Client(transport=transport or httpx2.HTTPTransport(trust_env=False, retries=0), trust_env=False,
                           follow_redirects=False, timeout=timeout) as client:
            request = client.build_request("GET", url.copy_with(host=address), headers=headers, extensions=extensions)
            response = client.send(request, stream=True)
            try:
                status = response.status_code
                body = b""
                if 200 <= status < 300:
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > MAX_WHOAMI_BYTES:
                            raise ApiError(422, f"{what} sent a whoami answer larger than {MAX_WHOAMI_BYTES} bytes",
                                           field="endpoint", hint="is this a Hugging Face Hub? nothing was stored")
            finally:
                response.close()
    except (httpx2.TransportError, OSError) as exc:
        raise ApiError(502, f"could not reach {what} to check the token: {type(exc).__name__}",
                       category="network", hint="check the endpoint, or try again later; nothing was stored") from None
    if status in (401, 403):
        raise ApiError(422, f"{what} did not accept this token (HTTP {status})", field="token",
                       hint="check that it was copied whole and is still valid; nothing was stored")
    if 300 <= status < 400:
        raise ApiError(422, f"{what} answered with a redirect (HTTP {status}), which is not followed", field="endpoint",
                       hint="enter the Hub's own address (the one it redirects to, if you trust it)")
    if status >= 500 or status in (408, 429):
        raise ApiError(502, f"{what} answered HTTP {status} to whoami", category="service_error",
                       hint="try again later; nothing was stored")
    if not 200 <= status < 300:
        raise ApiError(422, f"{what} answered HTTP {status} to whoami", field="endpoint",
                       hint="is this a Hugging Face Hub's address? nothing was stored")
    try:
        me = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        me = None
    if not isinstance(me, dict) or not me.get("name"):
        raise ApiError(422, f"{what} did not answer whoami like a Hub", field="endpoint",
                       hint="is this a Hugging Face Hub's address? nothing was stored")
    return identity_of(me)


def _checked(check: Callable[[], Any], what: str) -> Any:
    """Run a token check; a refusal is a 422 naming ``token``, anything else names what failed."""
    try:
        return check()
    except PermanentError as exc:
        if exc.category == "authentication" or exc.context.get("status") in (401, 403):
            raise ApiError(422, f"{what} did not accept this token: {redact(exc.message)}", field="token",
                           hint="check that it was copied whole and is still valid; nothing was stored") from None
        raise ApiError(422, f"could not check the token with {what}: {redact(exc.message)}", field="endpoint",
                       hint=redact(exc.hint) or "nothing was stored") from None
    except HubferryError as exc:
        raise ApiError(502, f"could not reach {what} to check the token: {redact(exc.message)}",
                       category=exc.category, hint="try again later; nothing was stored") from None


def stored_view(ctx: Context, owner: str) -> dict[str, Any]:
    """What ``GET /api/v1/secrets`` and the dashboard's settings show of ``owner``'s secrets: never a value."""
    credentials, vault = ctx.credentials, ctx.credentials.vault
    entries = {e.name: e.updated_at for e in vault.entries(owner)}
    replicate_token = vault.get(owner, REPLICATE_TOKEN) if REPLICATE_TOKEN in entries else None
    runpod_key = vault.get(owner, RUNPOD_API_KEY) if RUNPOD_API_KEY in entries else None
    return {
        "hub": [_hub_view(c) for c in credentials.list(owner)],
        "replicate": {"set": replicate_token is not None,
                      "username": vault.get(owner, REPLICATE_USERNAME) if replicate_token else None,
                      "last4": _last4(replicate_token) if replicate_token else None,
                      "checked_at": entries.get(REPLICATE_TOKEN)},
        "runpod": {"set": runpod_key is not None, "last4": _last4(runpod_key) if runpod_key else None,
                   "updated_at": entries.get(RUNPOD_API_KEY)},
    }


def secrets_router(ctx: Context, *,
                   replicate: Callable[[Settings, str], ReplicateAccount] = replicate_api.connect,
                   transport: httpx2.BaseTransport | None = None, resolve: Resolver = system_resolve) -> APIRouter:
    """The secrets routes over ``ctx``'s vault.

    Args:
        replicate: builds the client that checks Replicate tokens.
        transport, resolve: how a Hub endpoint other than the server's own is reached (tests inject them).
    """
    router = APIRouter(prefix="/api/v1/secrets", tags=["secrets"])
    credentials, vault = ctx.credentials, ctx.credentials.vault

    def view(owner: str) -> dict[str, Any]:
        return stored_view(ctx, owner)

    @router.get("", summary="Your stored secrets (never their values)")
    def list_secrets(principal: Caller) -> dict[str, Any]:
        return view(principal.name)

    @router.put("/hub", summary="Store your token for a Hub endpoint (checked with whoami first)")
    def put_hub_token(body: HubTokenIn, principal: Caller) -> dict[str, Any]:
        endpoint = valid_endpoint(body.endpoint)
        register_secret(body.token)
        if _is_default(ctx.settings, endpoint):  # the server's own Hub: its client (proxies, retries) is trusted
            identity = _checked(lambda: ctx.publisher.identify(HubTarget(endpoint, body.token)),
                                f"the Hub at {endpoint}")
        else:
            identity = guarded_whoami(ctx.settings, endpoint, body.token, transport=transport, resolve=resolve)
        if identity.role == "read":
            raise ApiError(422, f"this token of {identity.name} is read-only: publishing needs write access",
                           field="token", hint=f"create a token with the write role at {endpoint}/settings/tokens")
        credentials.set(principal.name, endpoint, body.token, identity.name)
        log.info("hub token stored", owner=principal.name, endpoint=endpoint, username=identity.name)
        stored = next(c for c in credentials.list(principal.name) if c.endpoint == endpoint)
        return _hub_view(stored)

    @router.delete("/hub", status_code=204, summary="Forget your token for a Hub endpoint")
    def delete_hub_token(principal: Caller, endpoint: Annotated[str, Query(max_length=2000)]) -> Response:
        where = valid_endpoint(endpoint)
        if not credentials.delete(principal.name, where):
            raise not_found(f"a Hub token for {where}")
        log.info("hub token deleted", owner=principal.name, endpoint=where)
        return Response(status_code=204)

    @router.put("/replicate", summary="Store your Replicate token (checked with Replicate first)")
    def put_replicate_token(body: TokenIn, principal: Caller) -> dict[str, Any]:
        register_secret(body.token)
        username = _checked(lambda: replicate(ctx.settings, body.token).whoami(), "Replicate")
        vault.set(principal.name, REPLICATE_TOKEN, body.token)
        vault.set(principal.name, REPLICATE_USERNAME, str(username))
        log.info("replicate token stored", owner=principal.name, username=username)
        return view(principal.name)["replicate"]

    @router.put("/runpod", summary="Store your RunPod API key (checked with RunPod first)")
    def put_runpod_key(body: TokenIn, principal: Caller) -> dict[str, Any]:
        from hubferry.trainers.runpod_api import connect as runpod

        register_secret(body.token)
        _checked(lambda: runpod(ctx.settings, body.token).whoami(), "RunPod")
        vault.set(principal.name, RUNPOD_API_KEY, body.token)
        log.info("runpod key stored", owner=principal.name)
        return view(principal.name)["runpod"]

    def delete_named(owner: str, *names: str) -> Response:
        if not vault.delete(owner, names[0]):
            raise not_found(f"a stored {names[0]}")
        for name in names[1:]:
            vault.delete(owner, name)
        log.info("secret deleted", owner=owner, name=names[0])
        return Response(status_code=204)

    @router.delete("/replicate", status_code=204, summary="Forget your Replicate token")
    def delete_replicate_token(principal: Caller) -> Response:
        return delete_named(principal.name, REPLICATE_TOKEN, REPLICATE_USERNAME)

    @router.delete("/runpod", status_code=204, summary="Forget your RunPod API key")
    def delete_runpod_key(principal: Caller) -> Response:
        return delete_named(principal.name, RUNPOD_API_KEY)

    return router
