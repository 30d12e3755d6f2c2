"""Git LFS over HTTP: the batch API, presigned basic and multipart uploads, and verify.

Objects land in the blob store only whole and checked (size and sha256); a failed or cut upload
leaves nothing behind but a temp file that is removed.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from starlette.concurrency import run_in_threadpool

from hubferry.errors import ValidationError

from . import storage
from .auth import require_write
from .blobs import is_sha256
from .context import RegistryContext, caller, context, param
from .httperrors import HubHTTPError
from .repos import Repo

router = APIRouter()

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"


def _lfs_json(content: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status, media_type=LFS_MEDIA_TYPE)


def _checked_query(request: Request) -> dict[str, str]:
    """The query of a presigned URL; 403 if the signature is wrong or expired."""
    query = dict(request.query_params)
    if not context(request).signer.check(request.url.path, query):
        raise HubHTTPError(403, "Invalid or expired signature on this transfer URL", code="SignatureInvalid")
    return query


def _int(query: dict[str, str], key: str) -> int:
    try:
        return int(query[key])
    except (KeyError, ValueError):
        raise HubHTTPError(400, f"Missing or invalid {key!r} in the URL") from None


def _batch_object(request: Request, ctx: RegistryContext, repo: Repo, operation: str, obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict) or not isinstance(obj.get("oid"), str) or not isinstance(obj.get("size"), int):
        return {"oid": str(obj), "size": 0, "error": {"code": 422, "message": "each object needs 'oid' and 'size'"}}
    oid, size = obj["oid"], obj["size"]
    answer: dict[str, Any] = {"oid": oid, "size": size}
    if not is_sha256(oid) or size < 0:
        answer["error"] = {"code": 422, "message": "oid must be a lowercase sha256 and size >= 0"}
        return answer
    base = str(request.base_url).rstrip("/")
    if ctx.settings.public_url:
        base = ctx.settings.public_url.rstrip("/")
    stored = ctx.blobs.exists(oid, size) and is_granted(ctx, repo.namespace, oid)
    signer = ctx.signer
    if operation == "download":
        if not stored:
            answer["error"] = {"code": 404, "message": "Object does not exist"}
        else:
            href = base + signer.sign(f"/lfs-blobs/{oid}", size=size)
            answer["actions"] = {"download": {"href": href, "header": {}, "expires_in": signer.ttl_s}}
        return answer
    if stored:
        return answer  # no actions: the client skips objects the server already has
    answer["authenticated"] = True
    verify = {"href": f"{base}/{repo.url_path}.git/info/lfs/objects/verify", "header": {}}
    if size > ctx.settings.multipart_threshold:
        chunk = ctx.settings.chunk_size
        count = max(1, math.ceil(size / chunk))
        upload_id = secrets.token_hex(16)
        header: dict[str, str] = {"chunk_size": str(chunk)}
        for number in range(1, count + 1):
            part_size = min(chunk, size - (number - 1) * chunk)
            header[str(number)] = base + signer.sign(f"/lfs-storage/{oid}/{upload_id}/{number}", size=part_size)
        href = base + signer.sign(
            f"/lfs-storage/{oid}/{upload_id}", size=size, parts=count, chunk=chunk, ns=repo.namespace
        )
        answer["actions"] = {"upload": {"href": href, "header": header}, "verify": verify}
    else:
        href = base + signer.sign(f"/lfs-storage/{oid}", size=size, ns=repo.namespace)
        answer["actions"] = {"upload": {"href": href, "header": {}, "expires_in": signer.ttl_s}, "verify": verify}
    return answer


def _batch_route(rtype: str) -> Callable[..., Any]:
    async def batch(request: Request, ns: str, name: str) -> JSONResponse:
        ctx = context(request)
        principal = caller(request)
        try:
            body = await request.json()
        except ValueError:
            raise HubHTTPError(400, "LFS batch body must be JSON") from None
        operation = body.get("operation") if isinstance(body, dict) else None
        if operation not in ("upload", "download"):
            raise HubHTTPError(400, "LFS batch 'operation' must be 'upload' or 'download'")
        if operation == "upload":
            repo = ctx.repos.writable(principal, rtype, param(ns), param(name))
        else:
            repo = ctx.repos.visible(principal, rtype, param(ns), param(name))
        objects = body.get("objects")
        if not isinstance(objects, list):
            raise HubHTTPError(400, "LFS batch 'objects' must be a list")
        if len(objects) > 1000:
            raise HubHTTPError(413, "Too many objects in one LFS batch (max 1000)")
        answers = [_batch_object(request, ctx, repo, operation, obj) for obj in objects]
        return _lfs_json({"transfer": "basic", "hash_algo": "sha256", "objects": answers})

    return batch


def _verify_route(rtype: str) -> Callable[..., Any]:
    async def verify(request: Request, ns: str, name: str) -> JSONResponse:
        ctx = context(request)
        principal = caller(request)
        repo = ctx.repos.visible(principal, rtype, param(ns), param(name))
        require_write(principal)
        body = await request.json()
        oid, size = str(body.get("oid", "")), body.get("size")
        stored = ctx.blobs.exists(oid, size if isinstance(size, int) else None)
        if not stored or not is_granted(ctx, repo.namespace, oid):
            raise HubHTTPError(404, f"LFS object {oid} ({size} bytes) is not stored", code="EntryNotFound")
        return _lfs_json({"oid": oid, "size": size, "verified": True})

    return verify


for _prefix, _rtype in (("/datasets", "dataset"), ("", "model")):
    router.add_api_route(_prefix + "/{ns}/{name}.git/info/lfs/objects/batch", _batch_route(_rtype), methods=["POST"])
    router.add_api_route(_prefix + "/{ns}/{name}.git/info/lfs/objects/verify", _verify_route(_rtype), methods=["POST"])


def _record_object(ctx: RegistryContext, oid: str, size: int, namespace: str) -> None:
    with storage.writing(ctx.engine) as conn:
        now = time.time()
        conn.execute(
            sqlite_insert(storage.lfs_objects).values(oid=oid, size=size, created_at=now).on_conflict_do_nothing()
        )
        conn.execute(
            sqlite_insert(storage.lfs_grants)
            .values(namespace=namespace, oid=oid, created_at=now)
            .on_conflict_do_nothing()
        )


def is_granted(ctx: RegistryContext, namespace: str, oid: str) -> bool:
    """Whether ``namespace`` uploaded the bytes of LFS object ``oid`` (see ``storage.lfs_grants``)."""
    g = storage.lfs_grants.c
    with ctx.engine.connect() as conn:
        row = conn.execute(
            sa.select(g.oid).where(g.namespace == namespace, g.oid == oid)
        ).first()
    return row is not None


async def _drain(request: Request) -> None:
    async for _ in request.stream():
        pass


@router.put("/lfs-storage/{oid}")
async def put_object(request: Request, oid: str) -> Response:
    """Basic transfer: the whole object in one PUT, checked against the signed size and the oid."""
    ctx = context(request)
    query = _checked_query(request)
    size, namespace = _int(query, "size"), query.get("ns", "")
    if ctx.blobs.exists(oid, size) and is_granted(ctx, namespace, oid):  # a retry after a lost response
        await _drain(request)
        return Response(status_code=200)
    try:  # the bytes are always checked: a namespace gains an object only by sending it whole
        await ctx.blobs.receive(request.stream(), sha256=oid, size=size)
    except ValidationError as exc:
        raise HubHTTPError(400, f"Upload refused: {exc.message}") from None
    await run_in_threadpool(_record_object, ctx, oid, size, namespace)
    return Response(status_code=200)


@router.put("/lfs-storage/{oid}/{upload_id}/{number}")
async def put_part(request: Request, oid: str, upload_id: str, number: int) -> Response:
    """One part of a multipart transfer; answers an ``ETag`` the completion must quote."""
    ctx = context(request)
    size = _int(_checked_query(request), "size")
    try:
        await ctx.blobs.receive_part(request.stream(), upload_id, number, size)
    except ValidationError as exc:
        raise HubHTTPError(400, f"Part refused: {exc.message}") from None
    return Response(status_code=200, headers={"ETag": f'"{ctx.signer.tag(upload_id, number, size)}"'})


@router.post("/lfs-storage/{oid}/{upload_id}")
async def complete_multipart(request: Request, oid: str, upload_id: str) -> JSONResponse:
    """Completion: check the part ETags, assemble, check size and sha256, then keep the object."""
    ctx = context(request)
    query = _checked_query(request)
    size, count, namespace = _int(query, "size"), _int(query, "parts"), query.get("ns", "")
    if ctx.blobs.exists(oid, size) and is_granted(ctx, namespace, oid):  # a retry after a lost response
        ctx.blobs.discard_upload(upload_id)
        return _lfs_json({"oid": oid, "size": size})
    body = await request.json()
    parts = body.get("parts") if isinstance(body, dict) else None
    if body.get("oid") != oid or not isinstance(parts, list) or len(parts) != count:
        raise HubHTTPError(400, f"Completion must name oid {oid} and list all {count} parts")
    chunk = _int(query, "chunk")
    for part in parts:
        number = int(part.get("partNumber", 0))
        part_size = min(chunk, size - (number - 1) * chunk)
        expected = f'"{ctx.signer.tag(upload_id, number, part_size)}"'
        if not 1 <= number <= count or str(part.get("etag", "")).strip() != expected:
            raise HubHTTPError(400, f"Part {number} has an unknown ETag: upload it again")
    try:
        await run_in_threadpool(ctx.blobs.assemble, upload_id, count, sha256=oid, size=size)
    except ValidationError as exc:
        ctx.blobs.discard_upload(upload_id)
        raise HubHTTPError(400, f"Upload refused: {exc.message}") from None
    await run_in_threadpool(_record_object, ctx, oid, size, namespace)
    return _lfs_json({"oid": oid, "size": size})
