"""Git LFS over HTTP: the batch API, presigned basic and multipart uploads, and verify.

Objects land in the blob store only whole and checked (size and sha256); a failed or cut upload
leaves nothing behind but a temp file that is removed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from starlette.concurrency import run_in_threadpool

from hubferry.errors import ValidationError

from . import storage
from .auth import Principal, require_write
from .blobs import is_sha256
from .bodies import CompleteMultipart, LfsBatch, LfsObject, LfsVerify
from .context import RegistryContext, base_url, caller, context, param
from .httperrors import HubHTTPError
from .limits import json_body
from .repos import Repo
from .resolve import download_url

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


#: Most part URLs one batch answer may hold (each costs an HMAC and ~200 bytes of JSON).
MAX_BATCH_PARTS = 100_000
#: Most objects in one batch request (huggingface_hub sends 256, git-lfs 100).
MAX_BATCH_OBJECTS = 1000


def _part_count(ctx: RegistryContext, size: int) -> int:
    """Parts of a multipart upload of ``size`` bytes (0 for a basic transfer)."""
    if size <= ctx.settings.multipart_threshold:
        return 0
    return max(1, -(-size // ctx.settings.chunk_size))


def _refusal(ctx: RegistryContext, obj: LfsObject) -> str | None:
    """Why the object cannot be uploaded at all, checked before any URL is built."""
    settings = ctx.settings
    if not is_sha256(obj.oid):
        return "oid must be a lowercase hex sha256"
    if obj.size > settings.max_object_size:
        return f"{obj.size} bytes is more than the {settings.max_object_size}-byte limit per file of this registry"
    parts = _part_count(ctx, obj.size)
    if parts > settings.max_parts:
        return f"{obj.size} bytes would need {parts} parts of {settings.chunk_size} bytes; at most {settings.max_parts}"
    return None


def _batch_object(
    request: Request, ctx: RegistryContext, repo: Repo, principal: Principal, operation: str, obj: LfsObject
) -> dict[str, Any]:
    oid, size = obj.oid, obj.size
    answer: dict[str, Any] = {"oid": oid, "size": size}
    refusal = _refusal(ctx, obj)
    if refusal:
        answer["error"] = {"code": 422, "message": refusal}
        return answer
    base = base_url(request)
    stored = ctx.blobs.exists(oid, size) and is_granted(ctx, repo.namespace, oid)
    signer = ctx.signer
    if operation == "download":
        if not stored:
            answer["error"] = {"code": 404, "message": "Object does not exist"}
        else:
            href = download_url(ctx, base, repo, principal, oid, size)
            answer["actions"] = {"download": {"href": href, "header": {}, "expires_in": signer.ttl_s}}
        return answer
    if stored:
        return answer  # no actions: the client skips objects the server already has
    answer["authenticated"] = True
    verify = {"href": f"{base}/{repo.url_path}.git/info/lfs/objects/verify", "header": {}}
    count = _part_count(ctx, size)
    if count:
        chunk = ctx.settings.chunk_size
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
    def batch(
        request: Request, ns: str, name: str, body: Annotated[LfsBatch, Depends(json_body(LfsBatch, "LFS batch body"))]
    ) -> JSONResponse:
        ctx = context(request)
        principal = caller(request)
        if body.operation == "upload":
            repo = ctx.repos.writable(principal, rtype, param(ns), param(name))
        else:
            repo = ctx.repos.visible(principal, rtype, param(ns), param(name))
        if len(body.objects) > MAX_BATCH_OBJECTS:
            raise HubHTTPError(413, f"Too many objects in one LFS batch (max {MAX_BATCH_OBJECTS})")
        parts = sum(_part_count(ctx, obj.size) for obj in body.objects if _refusal(ctx, obj) is None)
        if parts > MAX_BATCH_PARTS:
            raise HubHTTPError(413, f"This batch needs {parts} part URLs (max {MAX_BATCH_PARTS}): send fewer objects")
        answers = [_batch_object(request, ctx, repo, principal, body.operation, obj) for obj in body.objects]
        return _lfs_json({"transfer": "basic", "hash_algo": "sha256", "objects": answers})

    return batch


def _verify_route(rtype: str) -> Callable[..., Any]:
    def verify(
        request: Request, ns: str, name: str, body: Annotated[LfsVerify, Depends(json_body(LfsVerify, "verify body"))]
    ) -> JSONResponse:
        ctx = context(request)
        principal = caller(request)
        repo = ctx.repos.visible(principal, rtype, param(ns), param(name))
        require_write(principal)
        if not ctx.blobs.exists(body.oid, body.size) or not is_granted(ctx, repo.namespace, body.oid):
            raise HubHTTPError(404, f"LFS object {body.oid} ({body.size} bytes) is not stored", code="EntryNotFound")
        return _lfs_json({"oid": body.oid, "size": body.size, "verified": True})

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


def _already_stored(ctx: RegistryContext, oid: str, size: int, namespace: str) -> bool:
    return ctx.blobs.exists(oid, size) and is_granted(ctx, namespace, oid)


@router.put("/lfs-storage/{oid}")
async def put_object(request: Request, oid: str) -> Response:
    """Basic transfer: the whole object in one PUT, checked against the signed size and the oid."""
    # Async so the body streams to disk; hashing, writes and database calls run in worker threads.
    ctx = context(request)
    query = _checked_query(request)
    size, namespace = _int(query, "size"), query.get("ns", "")
    if await run_in_threadpool(_already_stored, ctx, oid, size, namespace):  # a retry after a lost response
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
def complete_multipart(
    request: Request, oid: str, upload_id: str,
    body: Annotated[CompleteMultipart, Depends(json_body(CompleteMultipart, "completion body"))],
) -> JSONResponse:  # fmt: skip
    """Completion: check the part ETags, assemble, check size and sha256, then keep the object."""
    ctx = context(request)
    query = _checked_query(request)
    size, count, chunk, namespace = _int(query, "size"), _int(query, "parts"), _int(query, "chunk"), query.get("ns", "")
    if _already_stored(ctx, oid, size, namespace):  # a retry after a lost response
        ctx.blobs.discard_upload(upload_id)
        return _lfs_json({"oid": oid, "size": size})
    numbers = sorted(part.partNumber for part in body.parts)
    if body.oid != oid or numbers != list(range(1, count + 1)):
        raise HubHTTPError(400, f"Completion must name oid {oid} and list each of the {count} parts once")
    for part in body.parts:
        part_size = min(chunk, size - (part.partNumber - 1) * chunk)
        expected = f'"{ctx.signer.tag(upload_id, part.partNumber, part_size)}"'
        if part.etag.strip() != expected:
            raise HubHTTPError(400, f"Part {part.partNumber} has an unknown ETag: upload it again")
    try:
        ctx.blobs.assemble(upload_id, count, sha256=oid, size=size)
    except ValidationError as exc:
        ctx.blobs.discard_upload(upload_id)
        raise HubHTTPError(400, f"Upload refused: {exc.message}") from None
    _record_object(ctx, oid, size, namespace)
    return _lfs_json({"oid": oid, "size": size})
