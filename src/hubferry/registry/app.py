"""The registry as an ASGI app: :func:`create_app` wires settings, storage and routes together."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote_to_bytes

import structlog
from fastapi import FastAPI

from . import account, api, lfs, listing, page, resolve, storage, uploads
from .blobs import BlobStore
from .cleanup import Janitor
from .context import RegistryContext
from .faults import FaultInjectionMiddleware, FaultPlan, QuietDrops
from .httperrors import install_handlers
from .repos import RepoStore
from .security import REDACT_SIGNED_URLS, HardenedResponses
from .settings import RegistrySettings
from .signing import Signer

log = structlog.get_logger("hubferry.registry")

#: One instance each, so an app created per test does not stack log filters.
_QUIET_DROPS = QuietDrops()
_KEEP_ENCODED = re.compile(rb"%(?:2[fF]|25)")


class PathDecodingMiddleware:
    """Decode the request path except ``%2F`` and ``%25``, so quoted revisions stay one segment.

    huggingface_hub sends ``refs/pr/1`` as ``refs%2Fpr%2F1`` (and tree paths fully quoted). The
    server would normally decode them into extra path segments before routing; keeping ``%2F`` (and
    ``%25``, so a literal ``%2F`` in a name survives) lets routes match, and each route decodes its
    parameters once with :func:`hubferry.registry.context.param`.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = scope.get("raw_path")
        if scope["type"] == "http" and raw:
            pieces = _KEEP_ENCODED.split(raw)
            kept = [k.decode() for k in _KEEP_ENCODED.findall(raw)] + [""]
            decoded = "".join(
                unquote_to_bytes(piece).decode("utf-8", errors="replace") + keep
                for piece, keep in zip(pieces, kept, strict=True)
            )
            scope = dict(scope, path=decoded)
        await self.app(scope, receive, send)


#: Every router of the registry, in matching order: account before page, since "/settings/tokens"
#: would otherwise match the repo page "/{ns}/{name}".
ROUTERS = (api.router, listing.router, uploads.router, lfs.router, resolve.router, account.router, page.router)


def build_context(settings: RegistrySettings) -> RegistryContext:
    """Open (or create) the data dir and everything the routes share."""
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = storage.make_engine(data_dir)
    blobs = BlobStore(data_dir / "blobs")
    signer = Signer.for_data_dir(data_dir, settings.secret, settings.url_ttl_s)
    faults = FaultPlan(settings.fault_rate, settings.fault_seed, settings.fault_kinds, settings.fault_paths)
    return RegistryContext(settings, engine, blobs, signer, RepoStore(engine, blobs, settings.lfs_extensions), faults)


def create_app(settings: RegistrySettings | None = None) -> Any:
    """The registry ASGI app: a FastAPI app inside hardening, path-decoding and fault-injection layers.

    The FastAPI app and the shared :class:`RegistryContext` are reachable as ``.fastapi`` and
    ``.registry`` on the returned object. Serving it with a lifespan (uvicorn's default) also runs
    the :class:`~hubferry.registry.cleanup.Janitor`.
    """
    settings = settings or RegistrySettings()
    ctx = build_context(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        janitor = Janitor(ctx)
        janitor.start()
        yield
        janitor.stop()

    app = FastAPI(title="hubferry registry", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.registry = ctx
    install_handlers(app)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "faults": len(ctx.faults.injected)}

    for router in ROUTERS:
        app.include_router(router)

    logging.getLogger("uvicorn.error").addFilter(_QUIET_DROPS)
    logging.getLogger("uvicorn.access").addFilter(REDACT_SIGNED_URLS)
    if ctx.faults.enabled:
        log.warning(
            "fault injection enabled", rate=settings.fault_rate, seed=settings.fault_seed, kinds=settings.fault_kinds
        )
    layers = HardenedResponses(PathDecodingMiddleware(FaultInjectionMiddleware(app, ctx.faults)))
    return RegistryASGI(layers, app, ctx)


class RegistryASGI:
    """The outermost ASGI callable, keeping handles on the inner app and its context."""

    def __init__(self, asgi: Any, fastapi: FastAPI, registry: RegistryContext) -> None:
        self._asgi = asgi
        self.fastapi = fastapi
        self.registry = registry

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.fastapi(scope, receive, send)
            return
        await self._asgi(scope, receive, send)
