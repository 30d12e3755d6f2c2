"""The fake Replicate's HTTP surface: the routes replicate 1.0.7 calls, with Replicate's statuses and bodies.

Errors are RFC 7807 ``application/problem+json`` (``{"title", "detail", "status"}``), as the real API's;
every response carries ``ratelimit-*`` headers; every request is recorded (:class:`fakes.replicate_server.Call`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from email.utils import formatdate
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fakes.replicate_records import Call, Model, StoredFile
from fakes.replicate_schema import COG_VERSION, invalid_training_fields
from fakes.replicate_server import FakeReplicate

_TRAINING_PATH_RE = re.compile(r"^/v1/trainings/([^/]+)")
_MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_EVENTS = {"start", "output", "logs", "completed"}
_FAULT_TITLES = {429: "Request was throttled.", 503: "Service Unavailable", 504: "Gateway Timeout"}
T = TypeVar("T")


class Problem(Exception):
    def __init__(self, status: int, detail: str, title: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.title, self.extra = status, detail, title, extra


def problem_response(status: int, detail: str, title: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"title": title, "detail": detail, "status": status} if title else {
        "detail": detail, "status": status}
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


class _Recorder:
    """Records every request (route, training id, status) and injects the ``fail_gets`` answers."""

    def __init__(self, app: ASGIApp, fake: FakeReplicate) -> None:
        self.app, self.fake = app, fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path, at = scope["method"], scope["path"], time.monotonic()
        match = _TRAINING_PATH_RE.match(path)
        fault = self.fake.take_fault(method, path)
        recorded = False

        def record(status: int) -> None:
            # Recorded when the response starts, so a client that got its answer finds its call counted.
            nonlocal recorded
            if recorded:
                return
            recorded = True
            route = getattr(scope.get("route"), "path", "") if fault is None else ""
            state = scope.get("state") or {}
            training_id = match.group(1) if match else state.get("training_id")
            self.fake.record(Call(method, path, route, training_id, status, fault is not None, at))

        async def send_recorded(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"ratelimit-remaining", b"599"),
                                      (b"ratelimit-reset", b"1")]
                record(message["status"])
            await send(message)

        try:
            if fault is not None:
                code, retry_after = fault
                response = problem_response(code, _FAULT_TITLES.get(code, "Error"), _FAULT_TITLES.get(code))
                response.headers["retry-after"] = retry_after
                await response(scope, receive, send_recorded)
            else:
                await self.app(scope, receive, send_recorded)
        finally:
            record(500)


def create_app(fake: FakeReplicate) -> Any:
    """The ASGI app serving ``fake``."""
    app = FastAPI(title="fake Replicate", openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, exc.title, **exc.extra)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        return problem_response(exc.status_code, "Not found." if exc.status_code == 404 else str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(422, str(exc.errors()), "Input validation failed")

    def user(request: Request) -> str:
        found = fake.user_for(request.headers.get("authorization"))
        if found is None:
            raise Problem(401, "You did not pass a valid authentication token", "Unauthenticated")
        return found

    async def json_object(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Problem(400, "The request body is not valid JSON", "Bad request") from None
        if not isinstance(body, dict):
            raise Problem(400, "The request body must be a JSON object", "Bad request")
        return body

    @app.get("/v1/account")
    async def account(request: Request) -> dict[str, Any]:
        name = user(request)
        return {"type": "user", "username": name, "name": name.title(), "github_url": None}

    # -- models ----------------------------------------------------------------------------

    @app.post("/v1/models", status_code=201)
    async def create_model(request: Request) -> dict[str, Any]:
        name = user(request)
        body = await json_object(request)
        missing = [key for key in ("owner", "name", "visibility", "hardware") if not body.get(key)]
        if missing:
            raise Problem(422, f"Missing required fields: {', '.join(missing)}", "Invalid request")
        if body["visibility"] not in ("public", "private") or not _MODEL_NAME_RE.match(str(body["name"])):
            raise Problem(422, "visibility must be public or private, and name lowercase letters, digits, "
                          "dashes, underscores and periods", "Invalid request")
        if body["owner"] != name:
            raise Problem(403, "You do not have permission to create models in this namespace", "Forbidden")
        if fake.model(body["owner"], body["name"], name) is not None:
            raise Problem(409, "A model with that name and owner already exists.", "Conflict")
        model = fake.add_model(body["owner"], body["name"], body["visibility"], body["hardware"])
        model.description = body.get("description")
        return model_json(fake, model)

    @app.get("/v1/models/{owner}/{name}")
    async def get_model(owner: str, name: str, request: Request) -> dict[str, Any]:
        return model_json(fake, found(fake.model(owner, name, user(request))))

    @app.get("/v1/models/{owner}/{name}/versions")
    async def list_versions(owner: str, name: str, request: Request) -> dict[str, Any]:
        model = found(fake.model(owner, name, user(request)))
        results = [version_json(fake, vid, created, schema) for vid, (created, schema) in model.versions.items()]
        return {"next": None, "previous": None, "results": results[::-1]}

    @app.get("/v1/models/{owner}/{name}/versions/{version_id}")
    async def get_version(owner: str, name: str, version_id: str, request: Request) -> dict[str, Any]:
        model = fake.model(owner, name, user(request))
        if model is None or version_id not in model.versions:
            raise Problem(404, "Not found.")
        created, schema = model.versions[version_id]
        return version_json(fake, version_id, created, schema)

    # -- trainings -------------------------------------------------------------------------

    @app.post("/v1/models/{owner}/{name}/versions/{version_id}/trainings", status_code=201)
    async def create_training(owner: str, name: str, version_id: str, request: Request) -> dict[str, Any]:
        caller = user(request)
        model = fake.model(owner, name, caller)
        if model is None or version_id not in model.versions:
            raise Problem(404, "Not found.")
        if "TrainingInput" not in model.versions[version_id][1]["components"]["schemas"]:
            raise Problem(400, "This version does not support training", "Invalid request")
        body = await json_object(request)
        destination = body.get("destination")
        if not isinstance(destination, str) or destination.count("/") != 1:
            raise Problem(422, "destination is required, as {owner}/{name}", "Invalid request")
        dest_owner, dest_name = destination.split("/")
        destination_model = fake.model(dest_owner, dest_name, caller)
        if destination_model is None or destination_model.owner != caller:
            raise Problem(404, "The specified training destination does not exist")
        _check_training_body(body)
        created = fake.create_training(caller, model, version_id, body)
        request.state.training_id = created["id"]
        return created

    @app.get("/v1/trainings")
    async def list_trainings(request: Request, cursor: str | None = None) -> dict[str, Any]:
        results, next_cursor = fake.list_trainings(user(request), cursor)
        next_url = f"{fake.base_url}/v1/trainings?cursor={next_cursor}" if next_cursor else None
        return {"next": next_url, "previous": None, "results": results}

    @app.get("/v1/trainings/{training_id}")
    async def get_training(training_id: str, request: Request) -> dict[str, Any]:
        return found(fake.visible_training(training_id, user(request)))

    @app.post("/v1/trainings/{training_id}/cancel")
    async def cancel_training(training_id: str, request: Request) -> dict[str, Any]:
        return found(fake.cancel(training_id, user(request)))

    @app.get("/v1/webhooks/default/secret")
    async def webhook_secret(request: Request) -> dict[str, str]:
        user(request)
        return {"key": fake.webhook_secret}

    # -- files -----------------------------------------------------------------------------

    @app.post("/v1/files", status_code=201)
    async def create_file(request: Request) -> dict[str, Any]:
        owner = user(request)
        form = await request.form()
        content = form.get("content")
        if content is None or isinstance(content, str):
            raise Problem(400, "Missing file content: send it as the multipart field 'content'", "Bad request")
        data = await content.read()
        if len(data) > fake.max_file_bytes:
            raise Problem(413, f"File is larger than {fake.max_file_bytes} bytes", "Payload too large")
        raw_metadata = form.get("metadata")
        try:
            metadata = json.loads(raw_metadata) if isinstance(raw_metadata, str) else {}
        except json.JSONDecodeError:
            raise Problem(400, "metadata must be a JSON object", "Bad request") from None
        stored = fake.add_file(owner, content.filename or "file", content.content_type or "application/octet-stream",
                               data, metadata if isinstance(metadata, dict) else {})
        return _file_json(fake, stored)

    @app.get("/v1/files")
    async def list_files(request: Request) -> dict[str, Any]:
        results = [_file_json(fake, stored) for stored in fake.list_files(user(request))]
        return {"next": None, "previous": None, "results": results}

    @app.get("/v1/files/{file_id}")
    async def get_file(file_id: str, request: Request) -> dict[str, Any]:
        return _file_json(fake, _own_file(fake, file_id, user(request)))

    @app.get("/v1/files/{file_id}/download")
    async def download_file(file_id: str, request: Request) -> Response:
        stored = _own_file(fake, file_id, user(request))
        return Response(stored.data, media_type=stored.content_type,
                        headers={"content-disposition": f'attachment; filename="{stored.name}"'})

    @app.delete("/v1/files/{file_id}", status_code=204)
    async def delete_file(file_id: str, request: Request) -> Response:
        _own_file(fake, file_id, user(request))
        fake.delete_file(file_id)
        return Response(status_code=204)

    # -- replicate.delivery ----------------------------------------------------------------

    @app.api_route("/delivery/{opaque}/trained_model.tar", methods=["GET", "HEAD"])
    async def delivery(opaque: str, request: Request) -> Response:
        return _ranged(fake, request, found(fake.delivery(opaque)))

    return _Recorder(app, fake)


def _check_training_body(body: dict[str, Any]) -> None:
    given = body.get("input")
    if given is not None and not isinstance(given, dict):
        raise Problem(422, "- input: Invalid type. Expected: object\n", "Input validation failed")
    invalid = invalid_training_fields(given or {})
    if invalid:
        detail = "".join(f"- {i['field']}: {i['description']}\n" for i in invalid)
        raise Problem(422, detail, "Input validation failed", invalid_fields=invalid)
    webhook = body.get("webhook")
    if webhook is not None and not (isinstance(webhook, str) and webhook.startswith(("http://", "https://"))):
        raise Problem(422, "webhook must be an http(s) URL", "Invalid request")
    events = body.get("webhook_events_filter")
    if events is not None and (not isinstance(events, list) or not set(events) <= _EVENTS):
        raise Problem(422, "webhook_events_filter items must be start, output, logs or completed", "Invalid request")


def found(value: T | None) -> T:
    """``value``, or Replicate's 404 when there is none (or the caller may not see it)."""
    if value is None:
        raise Problem(404, "Not found.")
    return value


def _own_file(fake: FakeReplicate, file_id: str, owner: str) -> StoredFile:
    return found(fake.visible_file(file_id, owner))


def _file_json(fake: FakeReplicate, stored: StoredFile) -> dict[str, Any]:
    return {
        "id": stored.id, "name": stored.name, "content_type": stored.content_type, "size": len(stored.data),
        "etag": hashlib.md5(stored.data).hexdigest(), "checksums": {"sha256": hashlib.sha256(stored.data).hexdigest(),
                                                                    "md5": hashlib.md5(stored.data).hexdigest()},
        "metadata": stored.metadata, "created_at": fake.timestamp(stored.created_at),
        "expires_at": fake.timestamp(stored.created_at + 24 * 3600),
        "urls": {"get": f"{fake.base_url}/v1/files/{stored.id}"},
    }  # fmt: skip


def _ranged(fake: FakeReplicate, request: Request, data: bytes) -> Response:
    """``data`` as a CDN serves it: ``Accept-Ranges``, a single byte range (206/416), ``If-Range``, HEAD."""
    size = len(data)
    etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
    headers = {"accept-ranges": "bytes", "etag": etag, "last-modified": formatdate(usegmt=True),
               "content-type": "application/x-tar"}
    start, end, status = 0, size - 1, 200
    spec = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if spec and (if_range is None or if_range == etag):
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", spec.strip())
        if match and (match.group(1) or match.group(2)):
            first, last = match.group(1), match.group(2)
            if first:
                start, end = int(first), min(int(last), size - 1) if last else size - 1
                bad = start >= size or (last != "" and int(last) < start)
            else:
                start, bad = max(0, size - int(last)), int(last) == 0
            if bad:
                return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
            status = 206
            headers["content-range"] = f"bytes {start}-{end}/{size}"
    body = data[start : end + 1]
    headers["content-length"] = str(len(body))
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    cut = fake.take_cut()
    if cut is None:
        return Response(body, status_code=status, headers=headers)

    async def cut_short() -> Any:
        yield body[:cut]
        raise ConnectionAbortedError("fake Replicate: download cut on purpose")

    return StreamingResponse(cut_short(), status_code=status, headers=headers)


def version_json(fake: FakeReplicate, version_id: str, created: float, schema: dict[str, Any]) -> dict[str, Any]:
    return {"id": version_id, "created_at": fake.timestamp(created), "cog_version": COG_VERSION,
            "openapi_schema": schema}


def model_json(fake: FakeReplicate, model: Model) -> dict[str, Any]:
    latest = None
    if model.versions:
        version_id, (created, schema) = list(model.versions.items())[-1]
        latest = version_json(fake, version_id, created, schema)
    return {
        "url": f"https://replicate.com/{model.owner}/{model.name}", "owner": model.owner, "name": model.name,
        "description": model.description, "visibility": model.visibility, "github_url": None, "paper_url": None,
        "license_url": None, "run_count": 0, "cover_image_url": None, "default_example": None,
        "latest_version": latest,
    }  # fmt: skip
