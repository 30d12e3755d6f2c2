"""``hubferry serve``: the REST API plus an in-process task consumer (the embedded default)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from hubferry.api import auth, v1_agent, v1_datasets, v1_events, v1_jobs, v1_secrets
from hubferry.api.staging import staging_router
from hubferry.api.webhooks import webhook_router
from hubferry.errors import HubferryError, ValidationError
from hubferry.services.context import Context
from hubferry.web.pages import web_router

#: Status codes for errors crossing the API.
_STATUS: dict[type[HubferryError], int] = {ValidationError: 400}


def create_app(ctx: Context, *, run_consumer: bool = True) -> FastAPI:
    """The API over ``ctx``; with ``run_consumer`` it also executes queued tasks in this process."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = None
        if run_consumer:
            stop = _start_embedded_worker(ctx)
        try:
            yield
        finally:
            if stop is not None:
                stop()

    app = FastAPI(title="hubferry", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    _offline_docs(app)
    app.include_router(webhook_router(ctx))
    app.include_router(v1_agent.agent_router(ctx))
    app.include_router(staging_router(ctx.settings))
    app.state.authenticate = auth.install(app, ctx)
    app.include_router(v1_secrets.secrets_router(ctx))

    @app.exception_handler(HubferryError)
    async def _error(_request: Request, exc: HubferryError) -> JSONResponse:
        status = 404 if "no job" in exc.message else _STATUS.get(type(exc), 500 if not exc.retryable else 503)
        return JSONResponse({"error": exc.to_dict()}, status_code=status)

    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(v1_jobs.jobs_router(ctx))
    app.include_router(v1_events.events_router(ctx))
    app.include_router(v1_datasets.datasets_router(ctx))
    app.include_router(web_router(ctx))
    return app


def _offline_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI served from the swagger-ui-bundle package, not a CDN (works offline)."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="hubferry API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js", swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )


def _start_embedded_worker(ctx: Context):
    from hubferry.worker.queue import TaskQueue, bind_context
    from hubferry.worker.run import Housekeeper

    queue = ctx.dispatcher if isinstance(ctx.dispatcher, TaskQueue) else TaskQueue(ctx.settings)
    ctx.dispatcher = queue
    bind_context(ctx)
    consumer = queue.consumer(ctx.settings.worker_threads, embedded=True)
    housekeeper = Housekeeper(ctx)
    consumer.start()  # starts worker threads and returns; the embedded subclass leaves signals alone
    housekeeper.start()

    def stop() -> None:
        housekeeper.stop()
        consumer.stop(graceful=True)

    return stop
