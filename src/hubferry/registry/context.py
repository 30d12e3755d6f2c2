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
    """The endpoint as the client sees it (or ``public_url``), without a trailing slash."""
    configured = context(request).settings.public_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/")


def repo_type(plural: str) -> str:
    """``models`` -> ``model``; unsupported types (spaces ...) look like missing repos."""
    try:
        return _PLURAL_TYPES[plural]
    except KeyError:
        raise HubHTTPError(404, f"Repository type {plural!r} is not supported", code="RepoNotFound") from None


def param(value: str) -> str:
    """Decode a path parameter (see :class:`hubferry.registry.app.PathDecodingMiddleware`)."""
    return unquote(value)
