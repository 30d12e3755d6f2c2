"""What every route needs (settings, database, blobs, signer), and the request helpers built on it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from fastapi import Request
from sqlalchemy import Engine

from .auth import Principal, authenticate
from .blobs import BlobStore
from .faults import FaultPlan
from .httperrors import HubHTTPError
from .repos import RepoStore
from .settings import RegistrySettings
from .signing import Signer

_PLURAL_TYPES = {"models": "model", "datasets": "dataset"}


@dataclass
class RegistryContext:
    """The registry's long-lived objects, kept on ``app.state.registry``."""

    settings: RegistrySettings
    engine: Engine
    blobs: BlobStore
    signer: Signer
    repos: RepoStore
    faults: FaultPlan


def context(request: Request) -> RegistryContext:
    return request.app.state.registry


def caller(request: Request) -> Principal:
    """The authenticated caller (anonymous without a token; 401 for an invalid one)."""
    return authenticate(context(request).engine, request.headers.get("authorization"))


def base_url(request: Request) -> str:
    """The registry's base URL for links, without a trailing slash; never taken from the request.

    ``public_url`` if set; else the address of the socket the server accepted the request on (what
    the ASGI server reports as ``server``; unlike the ``Host`` header, a client cannot choose it);
    else ``http://{host}:{port}`` of the settings.
    """
    settings = context(request).settings
    if settings.public_url:
        return settings.public_url
    server = request.scope.get("server")
    if server and server[1]:
        host, port = server
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    return settings.default_url


def repo_type(plural: str) -> str:
    """``models`` -> ``model``; unsupported types (spaces ...) look like missing repos."""
    try:
        return _PLURAL_TYPES[plural]
    except KeyError:
        raise HubHTTPError(404, f"Repository type {plural!r} is not supported", code="RepoNotFound") from None


def param(value: str) -> str:
    """Decode a path parameter (see :class:`hubferry.registry.app.PathDecodingMiddleware`)."""
    return unquote(value)
