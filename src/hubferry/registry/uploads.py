"""Write routes of the commit protocol: preupload (regular or LFS?), validate-yaml, and the NDJSON commit."""

from __future__ import annotations

import base64
import binascii
import codecs
from collections.abc import AsyncIterator
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from . import gitobjects, storage
from .api import REPO
from .auth import Principal
from .bodies import (
    COMMIT_VALUES,
    Body,
    CommitDelete,
    CommitFile,
    CommitHeader,
    CommitLfsFile,
    CommitLine,
    Preupload,
    ValidateYaml,
)
from .context import RegistryContext, base_url, caller, context, param, repo_type
from .httperrors import HubHTTPError, error_response
from .lfs import is_granted
from .limits import declared_length, json_body, parse_json, read_body, too_large, validate
from .paths import repo_path
from .repos import AddFile, DeleteFile, DeleteFolder, Operation, Repo
from .settings import RegistrySettings

router = APIRouter()

#: Deepest nesting of README metadata (real model cards nest 3 or 4 levels).
MAX_YAML_DEPTH = 32


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
def preupload(
    request: Request, rtype: str, ns: str, name: str, rev: str,
    body: Annotated[Preupload, Depends(json_body(Preupload))],
) -> dict[str, Any]:  # fmt: skip
    ctx = context(request)
    repo = ctx.repos.writable(caller(request), repo_type(rtype), param(ns), param(name))
    settings = ctx.settings
    if len(body.files) > settings.max_files_per_request:
        raise HubHTTPError(413, f"Too many files: at most {settings.max_files_per_request} per preupload call")
    paths = [repo_path(f.path) for f in body.files]
    for item in body.files:
        if item.size > settings.max_object_size:
            raise object_too_large(item.path, item.size, settings.max_object_size)
    with storage.reading(ctx.engine) as conn:
        head = ctx.repos.resolve(conn, repo, param(rev))
        current = {row.path: row for row in ctx.repos.entries(conn, repo, head, paths=paths, kind="file")}
    answer = []
    for path, item in zip(paths, body.files, strict=True):
        try:
            sample = base64.b64decode(item.sample, validate=False)
        except (binascii.Error, ValueError):
            raise HubHTTPError(400, f"Invalid base64 sample for {item.path!r}") from None
        mode = upload_mode(path, item.size, sample, settings)
        row = current.get(path)
        oid = None
        if row is not None:
            oid = row.sha256 if mode == "lfs" else (row.oid if not row.lfs else None)
        # The client matches answers by the path it sent, so echo it (it is stored in NFC).
        answer.append({"path": item.path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
    return {"files": answer, "commitOid": head}


def object_too_large(path: str, size: int, limit: int) -> HubHTTPError:
    return HubHTTPError(
        413, f"{path!r} is {size} bytes, more than the {limit}-byte limit per file of this registry; split the file"
    )


@router.post("/api/validate-yaml")
async def validate_yaml(request: Request) -> JSONResponse:
    # The client reads the JSON of any answer, so every refusal below carries the errors body.
    try:
        raw = await read_body(request, context(request).settings.max_json_bytes)
    except HubHTTPError as exc:
        return _yaml_errors(exc.message, exc.status)
    return await run_in_threadpool(_validate_yaml, raw)


def _validate_yaml(raw: bytes) -> JSONResponse:
    try:
        content = validate(ValidateYaml, parse_json(raw)).content
    except HubHTTPError as exc:
        return _yaml_errors(exc.message)
    lines = content.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "---":
        return JSONResponse({"errors": [], "warnings": []})
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
    except StopIteration:
        return _yaml_errors("The YAML front matter is not closed by a '---' line")
    try:
        metadata = yaml.load("\n".join(lines[1:end]), Loader=_ShallowSafeLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        return _yaml_errors(f"Invalid YAML in the metadata: {exc}")
    if metadata is not None and not isinstance(metadata, dict):
        return _yaml_errors("The metadata must be a YAML mapping")
    return JSONResponse({"errors": [], "warnings": []})


class _ShallowSafeLoader(yaml.SafeLoader):
    """A SafeLoader refusing collections nested deeper than :data:`MAX_YAML_DEPTH`.

    PyYAML composes nested collections recursively; without a bound, deep nesting costs a thread
    most of a second to reach Python's recursion limit.
    """

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.YAMLError(f"the metadata nests deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _yaml_errors(message: str, status: int = 400) -> JSONResponse:
    return error_response(status, message, body={"errors": [{"message": message}], "warnings": []})


# -- commit -----------------------------------------------------------------------------------------


#: Commit lines up to this size are parsed on the event loop (microseconds); longer ones in a thread.
INLINE_PARSE_BYTES = 64 * 1024


async def _ndjson_lines(request: Request, max_line: int, max_total: int) -> AsyncIterator[bytes]:
    """Lines of the request body, holding at most one line (plus a chunk) in memory."""
    declared_length(request, max_total, "The commit body")
    buffer = bytearray()
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_total:
            raise too_large("The commit body", max_total)
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            if end > start:
                yield bytes(buffer[start:end])
            start = end + 1
        del buffer[:start]
        if len(buffer) > max_line:
            raise HubHTTPError(
                413, "A commit line is too large: regular files are limited to "
                f"{max_line * 3 // 4 // (1024 * 1024)} MiB, upload larger files through LFS",
            )  # fmt: skip
    if buffer.strip():
        yield bytes(buffer)


def _parse_line(line: bytes) -> tuple[str, Body]:
    """One NDJSON commit line as ``(key, value model)``; 400 naming what is malformed."""
    item = validate(CommitLine, parse_json(line, "commit line"), "commit line")
    return item.key, validate(COMMIT_VALUES[item.key], item.value, f"{item.key!r} commit line")


def _stage_regular(ctx: RegistryContext, path: str, value: CommitFile) -> AddFile:
    """Decode a ``file`` operation and store its content (blocking)."""
    if value.encoding == "base64":
        try:
            data = base64.b64decode(value.content, validate=True)
        except (binascii.Error, ValueError):
            raise HubHTTPError(400, f"Invalid base64 content for {path!r}") from None
    else:
        data = value.content.encode()
    limit = ctx.settings.regular_max_size
    if len(data) > limit:
        raise HubHTTPError(
            400,
            f"{path!r} is {len(data)} bytes: files larger than {limit // (1024 * 1024)} MiB must be "
            "uploaded through LFS",
        )
    sha256 = ctx.blobs.put_bytes(data)
    return AddFile(path, len(data), sha256, gitobjects.blob_oid(data), lfs=False)


def _stage_lfs(ctx: RegistryContext, namespace: str, path: str, value: CommitLfsFile) -> AddFile:
    oid = value.oid
    stored = ctx.blobs.size(oid)
    if stored is None or not is_granted(ctx, namespace, oid):
        raise HubHTTPError(
            400,
            f"LFS object {oid} for {path!r} was never uploaded: upload it through the LFS batch API before committing",
        )
    if value.size is not None and value.size != stored:
        raise HubHTTPError(400, f"LFS object {oid} for {path!r} is {stored} bytes, not {value.size}")
    return AddFile(path, stored, oid, gitobjects.lfs_pointer_oid(oid, stored), lfs=True)


def _writable(request: Request, rtype: str, ns: str, name: str) -> tuple[RegistryContext, Principal, Repo]:
    ctx = context(request)
    principal = caller(request)
    return ctx, principal, ctx.repos.writable(principal, repo_type(rtype), param(ns), param(name))


@router.post(REPO + "/commit/{rev}")
async def commit(request: Request, rtype: str, ns: str, name: str, rev: str, create_pr: str | None = None) -> Any:
    # Async so the body streams line by line; every blocking step below runs in a worker thread.
    ctx, principal, repo = await run_in_threadpool(_writable, request, rtype, ns, name)
    settings = ctx.settings
    header = CommitHeader()
    operations: list[Operation] = []
    max_line = settings.regular_max_size * 4 // 3 + 64 * 1024
    async for line in _ndjson_lines(request, max_line, settings.max_commit_bytes):
        if len(line) <= INLINE_PARSE_BYTES:
            key, value = _parse_line(line)
        else:
            key, value = await run_in_threadpool(_parse_line, line)
        if isinstance(value, CommitHeader):
            header = value
            continue
        if len(operations) >= settings.max_commit_operations:
            raise HubHTTPError(
                413, f"Too many operations: at most {settings.max_commit_operations} per commit; split the commit"
            )
        if isinstance(value, CommitFile):
            operations.append(await run_in_threadpool(_stage_regular, ctx, repo_path(value.path), value))
        elif isinstance(value, CommitLfsFile):
            path = repo_path(value.path)
            operations.append(await run_in_threadpool(_stage_lfs, ctx, repo.namespace, path, value))
        elif isinstance(value, CommitDelete):
            folder = key == "deletedFolder"
            path = repo_path(value.path, folder=folder)
            operations.append(DeleteFolder(path) if folder else DeleteFile(path))
    oid, pr = await run_in_threadpool(
        ctx.repos.apply_commit,
        repo,
        param(rev),
        operations,
        author=principal.user or "",
        title=header.summary.strip() or "Update files",
        description=header.description,
        parent_commit=header.parentCommit or None,
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
