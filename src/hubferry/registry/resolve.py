"""Downloads: ``/resolve/{rev}/{path}`` and the presigned blob URLs LFS files redirect to.

Regular files are served directly (``ETag`` = git sha1). LFS files answer 302 to
``/lfs-blobs/{sha256}?...&sig=...``; huggingface_hub follows same-origin redirects even for its
metadata HEAD, so the blob response itself carries ``X-Repo-Commit``, the sha256 ``ETag`` and the size.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from . import storage
from .context import base_url, caller, context, param
from .httperrors import HubHTTPError, entry_not_found

router = APIRouter()


class BlobResponse(FileResponse):
    """A file response read in 1 MiB chunks (Starlette's 64 KiB costs throughput on big files)."""

    chunk_size = 1024 * 1024


def _content_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def _disposition(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return f"inline; filename*=UTF-8''{quote(name)}"


def _resolve_route(rtype: str) -> Callable[..., Any]:
    def resolve(request: Request, ns: str, name: str, rev: str, path: str) -> Response:
        ctx = context(request)
        repo = ctx.repos.visible(caller(request), rtype, param(ns), param(name))
        revision, repo_path = param(rev), param(path)
        with storage.reading(ctx.engine) as conn:
            sha = ctx.repos.resolve(conn, repo, revision)
            row = ctx.repos.entry(conn, repo, sha, repo_path.strip("/"))
        if row is None or row.kind != "file":
            raise entry_not_found(repo_path, sha)
        if row.lfs:
            location = base_url(request) + ctx.signer.sign(
                f"/lfs-blobs/{row.sha256}", size=row.size, commit=sha, name=repo_path.rsplit("/", 1)[-1]
            )
            headers = {
                "Location": location,
                "X-Repo-Commit": sha,
                "X-Linked-Etag": f'"{row.sha256}"',
                "X-Linked-Size": str(row.size),
                "ETag": f'"{row.oid}"',
                "Content-Length": "0",
            }
            return Response(status_code=302, headers=headers)
        blob = ctx.blobs.path(row.sha256)
        if not blob.exists():
            raise HubHTTPError(500, f"Stored content of {repo_path!r} is missing on the server", code="BlobMissing")
        headers = {
            "ETag": f'"{row.oid}"',
            "X-Repo-Commit": sha,
            "Accept-Ranges": "bytes",
            "Content-Disposition": _disposition(repo_path),
        }
        return BlobResponse(blob, headers=headers, media_type=_content_type(repo_path))

    return resolve


for _prefix, _rtype in (("/datasets", "dataset"), ("", "model")):
    router.add_api_route(
        _prefix + "/{ns}/{name}/resolve/{rev}/{path:path}", _resolve_route(_rtype), methods=["GET", "HEAD"]
    )


@router.api_route("/lfs-blobs/{oid}", methods=["GET", "HEAD"])
def blob(request: Request, oid: str) -> Response:
    """A presigned LFS blob: no token needed, Range supported, Hub metadata headers included."""
    ctx = context(request)
    query = dict(request.query_params)
    if not ctx.signer.check(request.url.path, query):
        raise HubHTTPError(403, "Invalid or expired signature on this download URL", code="SignatureInvalid")
    path = ctx.blobs.path(oid)
    if not path.exists():
        raise HubHTTPError(404, f"LFS object {oid} is not stored", code="EntryNotFound")
    name = query.get("name", oid)
    headers = {
        "ETag": f'"{oid}"',
        "X-Linked-Etag": f'"{oid}"',
        "X-Linked-Size": query.get("size", ""),
        "Accept-Ranges": "bytes",
        "Content-Disposition": _disposition(name),
    }
    if query.get("commit"):
        headers["X-Repo-Commit"] = query["commit"]
    return BlobResponse(path, headers=headers, media_type=_content_type(name))
