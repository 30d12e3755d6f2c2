"""Write routes of the commit protocol: preupload (regular or LFS?), validate-yaml, and the NDJSON commit."""

from __future__ import annotations

import base64
import binascii
import codecs
import json
from collections.abc import AsyncIterator
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from . import gitobjects, storage
from .api import REPO
from .context import RegistryContext, base_url, caller, context, param, repo_type
from .httperrors import HubHTTPError, error_response
from .lfs import is_granted
from .repos import AddFile, DeleteFile, DeleteFolder, Operation, Repo, clean_path
from .settings import RegistrySettings

router = APIRouter()


def upload_mode(path: str, size: int, sample: bytes, settings: RegistrySettings) -> str:
    """``"lfs"`` or ``"regular"``, by the Hub's rules: LFS extension, size over the threshold, or binary."""
    name = path.rsplit("/", 1)[-1]
    if size == 0 or name == ".gitattributes":
        return "regular"
    if name.lower().endswith(settings.lfs_extensions) or size > settings.lfs_threshold:
        return "lfs"
    return "lfs" if _is_binary(sample) else "regular"


def _is_binary(sample: bytes) -> bool:
    if b"\0" in sample:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)  # the sample may cut a character
    except UnicodeDecodeError:
        return True
    return False


@router.post(REPO + "/preupload/{rev}")
async def preupload(request: Request, rtype: str, ns: str, name: str, rev: str) -> dict[str, Any]:
    ctx = context(request)
    repo = ctx.repos.writable(caller(request), repo_type(rtype), param(ns), param(name))
    body = await request.json()
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, list):
        raise HubHTTPError(400, "Expected a JSON object with a 'files' list")
    with storage.reading(ctx.engine) as conn:
        head = ctx.repos.resolve(conn, repo, param(rev))
        paths = [clean_path(str(f.get("path", ""))) for f in files]
        current = {row.path: row for row in ctx.repos.entries(conn, repo, head, paths=paths, kind="file")}
    answer = []
    for path, item in zip(paths, files, strict=True):
        try:
            sample = base64.b64decode(item.get("sample") or "", validate=False)
        except (binascii.Error, ValueError):
            raise HubHTTPError(400, f"Invalid base64 sample for {path!r}") from None
        mode = upload_mode(path, int(item.get("size") or 0), sample, ctx.settings)
        row = current.get(path)
        oid = None
        if row is not None:
            oid = row.sha256 if mode == "lfs" else (row.oid if not row.lfs else None)
        answer.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
    return {"files": answer, "commitOid": head}


@router.post("/api/validate-yaml")
async def validate_yaml(request: Request) -> JSONResponse:
    try:
        body = json.loads(await request.body())
        content = body["content"]
    except (ValueError, KeyError, TypeError):
        return _yaml_errors("Expected a JSON body with a 'content' string")
    if not isinstance(content, str):
        return _yaml_errors("'content' must be a string")
    lines = content.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "---":
        return JSONResponse({"errors": [], "warnings": []})
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
    except StopIteration:
        return _yaml_errors("The YAML front matter is not closed by a '---' line")
    try:
        metadata = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as exc:
        return _yaml_errors(f"Invalid YAML in the metadata: {exc}")
    if metadata is not None and not isinstance(metadata, dict):
        return _yaml_errors("The metadata must be a YAML mapping")
    return JSONResponse({"errors": [], "warnings": []})


def _yaml_errors(message: str) -> JSONResponse:
    return error_response(400, message, "BadRequest", body={"errors": [{"message": message}], "warnings": []})


# -- commit -----------------------------------------------------------------------------------------


async def _ndjson_lines(request: Request, max_line: int) -> AsyncIterator[bytes]:
    """Lines of the request body, holding at most one line (plus a chunk) in memory."""
    buffer = bytearray()
    async for chunk in request.stream():
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            if end > start:
                yield bytes(buffer[start:end])
            start = end + 1
        del buffer[:start]
        if len(buffer) > max_line:
            raise HubHTTPError(
                400, "A commit line is too large: regular files are limited to "
                f"{max_line * 3 // 4 // (1024 * 1024)} MiB, upload larger files through LFS",
            )  # fmt: skip
    if buffer.strip():
        yield bytes(buffer)


def _stage_regular(ctx: RegistryContext, path: str, value: dict[str, Any]) -> AddFile:
    """Decode a ``file`` operation and store its content (blocking)."""
    encoding = value.get("encoding", "base64")
    content = value.get("content", "")
    if encoding != "base64":
        data = str(content).encode()
    else:
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise HubHTTPError(400, f"Invalid base64 content for {path!r}") from None
    limit = ctx.settings.regular_max_size
    if len(data) > limit:
        raise HubHTTPError(
            400,
            f"{path!r} is {len(data)} bytes: files larger than {limit // (1024 * 1024)} MiB must be "
            "uploaded through LFS",
        )
    sha256 = ctx.blobs.put_bytes(data)
    return AddFile(path, len(data), sha256, gitobjects.blob_oid(data), lfs=False)


def _stage_lfs(ctx: RegistryContext, namespace: str, path: str, value: dict[str, Any]) -> AddFile:
    oid = str(value.get("oid", ""))
    if value.get("algo", "sha256") != "sha256":
        raise HubHTTPError(400, f"Unsupported LFS hash algorithm for {path!r}: {value.get('algo')!r}")
    stored = ctx.blobs.size(oid)
    if stored is None or not is_granted(ctx, namespace, oid):
        raise HubHTTPError(
            400,
            f"LFS object {oid} for {path!r} was never uploaded: upload it through the LFS batch API before committing",
        )
    if value.get("size") is not None and int(value["size"]) != stored:
        raise HubHTTPError(400, f"LFS object {oid} for {path!r} is {stored} bytes, not {value['size']}")
    return AddFile(path, stored, oid, gitobjects.lfs_pointer_oid(oid, stored), lfs=True)


@router.post(REPO + "/commit/{rev}")
async def commit(request: Request, rtype: str, ns: str, name: str, rev: str, create_pr: str | None = None) -> Any:
    ctx = context(request)
    principal = caller(request)
    repo = ctx.repos.writable(principal, repo_type(rtype), param(ns), param(name))
    header: dict[str, Any] = {}
    operations: list[Operation] = []
    max_line = ctx.settings.regular_max_size * 4 // 3 + 64 * 1024
    async for line in _ndjson_lines(request, max_line):
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (ValueError, KeyError, TypeError):
            raise HubHTTPError(400, 'Malformed commit payload: each line must be {"key", "value"}') from None
        if key == "header":
            header = value
            continue
        path = clean_path(str(value.get("path", "")))
        if key == "file":
            operations.append(await run_in_threadpool(_stage_regular, ctx, path, value))
        elif key == "lfsFile":
            operations.append(await run_in_threadpool(_stage_lfs, ctx, repo.namespace, path, value))
        elif key == "deletedFile":
            operations.append(DeleteFile(path))
        elif key == "deletedFolder":
            operations.append(DeleteFolder(path))
        else:
            raise HubHTTPError(400, f"Unknown commit operation {key!r}")
    title = str(header.get("summary") or "").strip() or "Update files"
    oid, pr = await run_in_threadpool(
        ctx.repos.apply_commit,
        repo,
        param(rev),
        operations,
        author=principal.user or "",
        title=title,
        description=str(header.get("description") or ""),
        parent_commit=header.get("parentCommit") or None,
        create_pr=create_pr in ("1", "true", "True"),
    )
    return _commit_response(request, repo, oid, pr)


def _commit_response(request: Request, repo: Repo, oid: str, pr: int | None) -> dict[str, Any]:
    repo_url = f"{base_url(request)}/{repo.url_path}"
    answer: dict[str, Any] = {
        "success": True,
        "commitOid": oid,
        "commitUrl": f"{repo_url}/commit/{oid}",
        "hookOutput": "",
    }
    if pr is not None:
        answer["pullRequestUrl"] = f"{repo_url}/discussions/{pr}"
    return answer
