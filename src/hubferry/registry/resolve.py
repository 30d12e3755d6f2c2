"""Downloads: ``/resolve/{rev}/{path}`` and the presigned blob URLs LFS files redirect to.

Regular files are served directly (``ETag`` = git sha1), always as a download (``attachment``). LFS
files answer 302 to ``/lfs-blobs/{sha256}?...&sig=...``; huggingface_hub follows same-origin redirects even for its
metadata HEAD, so the blob response itself carries ``X-Repo-Commit``, the sha256 ``ETag`` and the size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from . import storage
from .auth import Principal
from .context import RegistryContext, base_url, caller, context, param
from .httperrors import HubHTTPError, entry_not_found
from .paths import repo_path
from .repos import Repo

router = APIRouter()

#: User content is never typed for a browser to render: with ``attachment`` and ``nosniff`` an uploaded
#: ``.html`` or ``.svg`` cannot run script on the registry's origin.
CONTENT_TYPE = "application/octet-stream"


class BlobResponse(FileResponse):
    """A file response read in 1 MiB chunks (Starlette's 64 KiB costs throughput on big files)."""

    chunk_size = 1024 * 1024


def _attachment(path: str) -> str:
    """Content-Disposition that makes a browser save user content instead of rendering it (no stored XSS)."""
    name = path.rsplit("/", 1)[-1]
    return f"attachment; filename*=UTF-8''{quote(name, safe='')}"


def download_url(
    ctx: RegistryContext, base: str, repo: Repo, principal: Principal, sha256: str, size: int,
    commit: str | None = None, name: str | None = None,
) -> str:  # fmt: skip
    """A signed, expiring URL of a blob, bound to ``repo`` and to the user who asked for it.

    The binding is re-checked at download time (:func:`_check_binding`), so the URL dies with the
    repo, or when the repo no longer holds the blob, or when the user lost access to it.
    """
    params: dict[str, str | int] = {"size": size, "repo": repo_binding(repo), "user": principal.user or ""}
    if commit:
        params["commit"] = commit
    if name:
        params["name"] = name
    return base + ctx.signer.sign(f"/lfs-blobs/{sha256}", **params)


def repo_binding(repo: Repo) -> str:
    """``<pk>.<creation ms>``: a deleted repo's id may be reused, its creation time is not."""
    return f"{repo.pk}.{int(repo.created_at * 1000)}"


def _check_binding(ctx: RegistryContext, query: dict[str, str], sha256: str) -> None:
    pk, _, born = query.get("repo", "").partition(".")
    repo = ctx.repos.by_pk(int(pk)) if pk.isdigit() else None
    gone = HubHTTPError(
        404, "This download link is no longer valid: ask the registry for a new one", code="EntryNotFound"
    )
    if repo is None or repo_binding(repo) != f"{pk}.{born}":
        raise gone
    if repo.private and repo.owner != query.get("user"):
        raise gone
    if not ctx.repos.references(repo, sha256):
        raise gone


def _resolve_route(rtype: str) -> Callable[..., Any]:
    def resolve(request: Request, ns: str, name: str, rev: str, path: str) -> Response:
        ctx = context(request)
        principal = caller(request)
        repo = ctx.repos.visible(principal, rtype, param(ns), param(name))
        revision, file_path = param(rev), repo_path(param(path))
        with storage.reading(ctx.engine) as conn:
            sha = ctx.repos.resolve(conn, repo, revision)
            row = ctx.repos.entry(conn, repo, sha, file_path)
        if row is None or row.kind != "file":
            raise entry_not_found(file_path, sha)
        if row.lfs:
            location = download_url(
                ctx, base_url(request), repo, principal, row.sha256, row.size, sha, file_path.rsplit("/", 1)[-1]
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
            raise HubHTTPError(500, f"Stored content of {file_path!r} is missing on the server", code="BlobMissing")
        headers = {
            "ETag": f'"{row.oid}"',
            "X-Repo-Commit": sha,
            "Accept-Ranges": "bytes",
            "Content-Disposition": _attachment(file_path),
        }
        return BlobResponse(blob, headers=headers, media_type=CONTENT_TYPE)

    return resolve


for _prefix, _rtype in (("/datasets", "dataset"), ("", "model")):
    router.add_api_route(
        _prefix + "/{ns}/{name}/resolve/{rev}/{path:path}", _resolve_route(_rtype), methods=["GET", "HEAD"]
    )


@router.api_route("/lfs-blobs/{oid}", methods=["GET", "HEAD"])
def blob(request: Request, oid: str) -> Response:
    """A presigned blob: no token needed, Range supported, Hub metadata headers included."""
    ctx = context(request)
    query = dict(request.query_params)
    if not ctx.signer.check(request.url.path, query):
        raise HubHTTPError(403, "Invalid or expired signature on this download URL", code="SignatureInvalid")
    _check_binding(ctx, query, oid)
    path = ctx.blobs.path(oid)
    if not path.exists():
        raise HubHTTPError(404, f"LFS object {oid} is not stored", code="EntryNotFound")
    headers = {
        "ETag": f'"{oid}"',
        "X-Linked-Etag": f'"{oid}"',
        "X-Linked-Size": query.get("size", ""),
        "Accept-Ranges": "bytes",
        "Content-Disposition": _attachment(query.get("name", oid)),
    }
    if query.get("commit"):
        headers["X-Repo-Commit"] = query["commit"]
    return BlobResponse(path, headers=headers, media_type=CONTENT_TYPE)
