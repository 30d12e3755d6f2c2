"""``/api`` routes that read or manage repos: whoami, create/delete, info, tree, paths-info, refs, commits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Row
from starlette.concurrency import run_in_threadpool

from . import storage
from .auth import require_user, require_write
from .bodies import CreateRepo, CreateTag, DeleteRepo, PathsInfo, RepoSettings, StartingPoint
from .context import RegistryContext, base_url, caller, context, param, repo_type
from .gitobjects import lfs_pointer
from .httperrors import HubHTTPError, entry_not_found, repo_not_found
from .limits import json_body, optional_json_body, parse_json, read_body, validate
from .paths import repo_path
from .repos import URL_PREFIXES, Repo

router = APIRouter()

REPO = "/api/{rtype}/{ns}/{name}"
#: Largest page offset accepted in ``cursor`` / ``p`` (SQLite offsets are 64-bit; no repo gets near this).
MAX_OFFSET = 10**9


def iso(ts: float) -> str:
    """Hub-style timestamp: ``2026-01-01T00:00:00.000Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def entry_json(row: Row[Any], last_commits: dict[str, Row[Any]] | None = None) -> dict[str, Any]:
    """A tree / paths-info entry in the Hub's shape (never with ``xetHash``)."""
    item: dict[str, Any] = {"type": row.kind, "oid": row.oid, "size": row.size, "path": row.path}
    if row.kind == "file" and row.lfs:
        item["lfs"] = {"oid": row.sha256, "size": row.size, "pointerSize": len(lfs_pointer(row.sha256, row.size))}
    if last_commits is not None and row.last_commit_oid in last_commits:
        commit = last_commits[row.last_commit_oid]
        item["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": iso(commit.created_at)}
    return item


# -- identity and repo lifecycle --------------------------------------------------------------------


@router.get("/api/whoami-v2")
def whoami(request: Request) -> dict[str, Any]:
    principal = caller(request)
    user = require_user(principal)
    return {
        "type": "user",
        "id": user,
        "name": user,
        "fullname": user,
        "email": None,
        "emailVerified": False,
        "isPro": False,
        "orgs": [],
        "auth": {
            "type": "access_token",
            "accessToken": {"displayName": principal.token_name, "role": principal.role},
        },
    }


@router.post("/api/repos/create")
def create_repo(request: Request, body: Annotated[CreateRepo, Depends(json_body(CreateRepo))]) -> JSONResponse:
    ctx = context(request)
    user = require_write(caller(request))
    namespace = body.organization or user
    kind = body.type or "model"
    if kind not in URL_PREFIXES:
        raise HubHTTPError(400, f"Repository type {kind!r} is not supported by this registry")
    private = body.visibility == "private" or bool(body.private)
    if namespace != user:
        raise HubHTTPError(
            403, f"You don't have the rights to create a {kind} under the namespace {namespace!r}", code="Forbidden"
        )
    repo, created = ctx.repos.create(user, kind, namespace, body.name, private)
    url = f"{base_url(request)}/{repo.url_path}"
    if not created:
        raise HubHTTPError(409, f"You already created this {kind} repo", code="Conflict", body={"url": url})
    return JSONResponse({"url": url, "name": repo.repo_id, "id": repo.repo_id})


@router.delete("/api/repos/delete")
def delete_repo(request: Request, body: Annotated[DeleteRepo, Depends(json_body(DeleteRepo))]) -> dict[str, Any]:
    ctx = context(request)
    principal = caller(request)
    user = require_user(principal)
    kind = body.type or "model"
    if kind not in URL_PREFIXES:
        raise repo_not_found(f"{body.organization or user}/{body.name}")
    repo = ctx.repos.writable(principal, kind, body.organization or user, body.name)
    ctx.repos.delete(repo)
    return {}


# -- repo reads -----------------------------------------------------------------------------------


def readable(request: Request, rtype: str, ns: str, name: str) -> tuple[RegistryContext, Repo]:
    """Shared prologue of the read routes: the context and the repo (404 if invisible)."""
    ctx = context(request)
    repo = ctx.repos.visible(caller(request), repo_type(rtype), param(ns), param(name))
    return ctx, repo


@router.get(REPO)
def repo_info(request: Request, rtype: str, ns: str, name: str, blobs: bool = False) -> dict[str, Any]:
    return _repo_info(request, rtype, ns, name, "main", blobs)


@router.get(REPO + "/revision/{rev}")
def repo_info_at(request: Request, rtype: str, ns: str, name: str, rev: str, blobs: bool = False) -> dict[str, Any]:
    return _repo_info(request, rtype, ns, name, param(rev), blobs)


def _repo_info(request: Request, rtype: str, ns: str, name: str, rev: str, blobs: bool) -> dict[str, Any]:
    ctx, repo = readable(request, rtype, ns, name)
    with storage.reading(ctx.engine) as conn:
        sha = ctx.repos.resolve(conn, repo, rev)
        head = ctx.repos.commit(conn, repo, sha)
        files = ctx.repos.entries(conn, repo, sha, recursive=True, kind="file")
    siblings = []
    for row in files:
        sibling: dict[str, Any] = {"rfilename": row.path}
        if blobs:
            sibling.update(size=row.size, blobId=row.oid)
            if row.lfs:
                pointer = len(lfs_pointer(row.sha256, row.size))
                sibling["lfs"] = {"size": row.size, "sha256": row.sha256, "pointerSize": pointer}
        siblings.append(sibling)
    return {
        "_id": f"{repo.type}-{repo.pk}",
        "id": repo.repo_id,
        "author": repo.namespace,
        "sha": sha,
        "private": repo.private,
        "disabled": False,
        "gated": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "createdAt": iso(repo.created_at),
        "lastModified": iso(head.created_at),
        "siblings": siblings,
        "usedStorage": sum(row.size for row in files),
    }


def _page_link(request: Request, path: str, params: dict[str, Any]) -> str:
    url = f"{base_url(request)}{path}?{urlencode(params)}"
    return f'<{url}>; rel="next"'


#: A page cursor or page number: an offset into a list far longer than any repo holds.
Cursor = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


@router.get(REPO + "/tree/{rev}")
def tree_root(
    request: Request, rtype: str, ns: str, name: str, rev: str, recursive: bool = False, expand: bool = False,
    cursor: Cursor = 0,
) -> JSONResponse:  # fmt: skip
    return _tree(request, rtype, ns, name, rev, "", recursive, expand, cursor)


@router.get(REPO + "/tree/{rev}/{path:path}")
def tree_path(
    request: Request, rtype: str, ns: str, name: str, rev: str, path: str, recursive: bool = False,
    expand: bool = False, cursor: Cursor = 0,
) -> JSONResponse:  # fmt: skip
    return _tree(request, rtype, ns, name, rev, path, recursive, expand, cursor)


def _tree(
    request: Request, rtype: str, ns: str, name: str, rev: str, path: str, recursive: bool, expand: bool, cursor: int
) -> JSONResponse:
    ctx, repo = readable(request, rtype, ns, name)
    revision, under = param(rev), (repo_path(param(path), folder=True) if path.strip("/") else "")
    settings = ctx.settings
    page_size = settings.tree_expand_page_size if expand else settings.tree_page_size
    with storage.reading(ctx.engine) as conn:
        sha = ctx.repos.resolve(conn, repo, revision)
        if under:
            folder = ctx.repos.entry(conn, repo, sha, under)
            if folder is None or folder.kind != "directory":
                raise entry_not_found(under, sha)
        rows = ctx.repos.entries(
            conn, repo, sha, under=under, recursive=recursive, offset=cursor, limit=page_size + 1
        )
        last = ctx.repos.last_commits(conn, repo, (r.last_commit_oid for r in rows)) if expand else None
    headers = {"X-Repo-Commit": sha}
    if len(rows) > page_size:
        rows = rows[:page_size]
        quoted = quote(revision, safe="") + (f"/{quote(under, safe='')}" if under else "")
        params = {"recursive": str(recursive).lower(), "expand": str(expand).lower(), "cursor": cursor + page_size}
        headers["Link"] = _page_link(request, f"/api/{rtype}/{ns}/{name}/tree/{quoted}", params)
    return JSONResponse([entry_json(r, last) for r in rows], headers=headers)


async def paths_info_body(request: Request) -> PathsInfo:
    """The paths-info body: form-encoded (``paths=a&paths=b&expand=false``, as the client sends it) or JSON."""
    raw = await read_body(request, context(request).settings.max_json_bytes)
    return await run_in_threadpool(_paths_info, raw, request.headers.get("content-type", ""))


def _paths_info(raw: bytes, content_type: str) -> PathsInfo:
    if content_type.startswith("application/json"):
        return validate(PathsInfo, parse_json(raw))
    try:
        fields = parse_qsl(raw.decode("utf-8"), strict_parsing=False, max_num_fields=100_000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HubHTTPError(400, f"Invalid form body: {exc}") from None
    paths = [value for key, value in fields if key == "paths"]
    expand = [value for key, value in fields if key == "expand"][-1:] or ["false"]
    return PathsInfo(paths=paths, expand=expand[0].lower() in ("1", "true"))


@router.post(REPO + "/paths-info/{rev}")
def paths_info(
    request: Request, rtype: str, ns: str, name: str, rev: str, body: Annotated[PathsInfo, Depends(paths_info_body)]
) -> JSONResponse:
    ctx, repo = readable(request, rtype, ns, name)
    limit = ctx.settings.max_files_per_request
    if len(body.paths) > limit:
        raise HubHTTPError(413, f"Too many paths: at most {limit} per request")
    wanted = [repo_path(p, folder=True) for p in body.paths]
    with storage.reading(ctx.engine) as conn:
        sha = ctx.repos.resolve(conn, repo, param(rev))
        rows = ctx.repos.entries(conn, repo, sha, paths=wanted)
        last = ctx.repos.last_commits(conn, repo, (r.last_commit_oid for r in rows)) if body.expand else None
    return JSONResponse([entry_json(r, last) for r in rows], headers={"X-Repo-Commit": sha})


@router.get(REPO + "/refs")
def list_refs(request: Request, rtype: str, ns: str, name: str, include_prs: bool = False) -> dict[str, Any]:
    ctx, repo = readable(request, rtype, ns, name)
    out: dict[str, list[dict[str, str]]] = {"branches": [], "converts": [], "tags": [], "pullRequests": []}
    for ref in ctx.repos.refs(repo):
        kind = {"branch": "branches", "tag": "tags", "pr": "pullRequests"}[ref.kind]
        full = ref.name if ref.kind == "pr" else f"refs/{'heads' if ref.kind == 'branch' else 'tags'}/{ref.name}"
        out[kind].append({"name": ref.name, "ref": full, "targetCommit": ref.commit_oid})
    if not include_prs:
        del out["pullRequests"]
    return out


@router.get(REPO + "/commits/{rev}")
def list_commits(request: Request, rtype: str, ns: str, name: str, rev: str, p: Cursor = 0) -> JSONResponse:
    ctx, repo = readable(request, rtype, ns, name)
    history = ctx.repos.commits(repo, param(rev))
    size = ctx.settings.commits_page_size
    page = history[p * size : (p + 1) * size]
    items = [
        {
            "id": c.oid,
            "authors": [{"user": c.author, "avatar": None}],
            "date": iso(c.created_at),
            "title": c.title,
            "message": c.message,
        }
        for c in page
    ]
    headers = {"X-Total-Count": str(len(history))}
    if (p + 1) * size < len(history):
        headers["Link"] = _page_link(request, f"/api/{rtype}/{ns}/{name}/commits/{quote(param(rev), safe='')}",
                                     {"p": p + 1})  # fmt: skip
    return JSONResponse(items, headers=headers)


# -- branches and tags ----------------------------------------------------------------------------


@router.post(REPO + "/branch/{branch}")
def create_branch(
    request: Request, rtype: str, ns: str, name: str, branch: str,
    body: Annotated[StartingPoint, Depends(optional_json_body(StartingPoint))],
) -> dict[str, Any]:  # fmt: skip
    ctx = context(request)
    repo = ctx.repos.writable(caller(request), repo_type(rtype), param(ns), param(name))
    ctx.repos.create_ref(repo, param(branch), "branch", body.startingPoint)
    return {}


@router.delete(REPO + "/branch/{branch}")
def delete_branch(request: Request, rtype: str, ns: str, name: str, branch: str) -> dict[str, Any]:
    ctx = context(request)
    repo = ctx.repos.writable(caller(request), repo_type(rtype), param(ns), param(name))
    ctx.repos.delete_ref(repo, param(branch), "branch")
    return {}


@router.put(REPO + "/settings")
def update_settings(
    request: Request, rtype: str, ns: str, name: str, body: Annotated[RepoSettings, Depends(json_body(RepoSettings))],
) -> dict[str, Any]:
    """Change a repo's visibility (its owner only)."""
    ctx = context(request)
    repo = ctx.repos.writable(caller(request), repo_type(rtype), param(ns), param(name))
    private = body.private if body.visibility is None else body.visibility == "private"
    if private is None:
        raise HubHTTPError(400, "nothing to change: send {\"visibility\": \"public\" or \"private\"}")
    ctx.repos.set_private(repo, private)
    return {"private": private}


@router.post(REPO + "/tag/{rev}")
def create_tag(
    request: Request, rtype: str, ns: str, name: str, rev: str,
    body: Annotated[CreateTag, Depends(json_body(CreateTag))],
) -> dict[str, Any]:  # fmt: skip
    ctx = context(request)
    repo = ctx.repos.writable(caller(request), repo_type(rtype), param(ns), param(name))
    ctx.repos.create_ref(repo, body.tag, "tag", param(rev))
    return {}


@router.delete(REPO + "/tag/{tag}")
def delete_tag(request: Request, rtype: str, ns: str, name: str, tag: str) -> dict[str, Any]:
    ctx = context(request)
    repo = ctx.repos.writable(caller(request), repo_type(rtype), param(ns), param(name))
    ctx.repos.delete_ref(repo, param(tag), "tag")
    return {}


# -- Xet is not offered -----------------------------------------------------------------------------


@router.get(REPO + "/xet-write-token/{rev}")
@router.get(REPO + "/xet-read-token/{rev}")
def xet_token(rtype: str, ns: str, name: str, rev: str) -> None:
    raise HubHTTPError(
        404,
        "This registry does not support Xet storage: set HF_HUB_DISABLE_XET=1 "
        "(or huggingface_hub.constants.HF_HUB_DISABLE_XET = True) to upload through LFS",
        code="XetNotSupported",
    )
