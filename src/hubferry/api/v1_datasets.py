"""``/api/v1/datasets``: upload training data (a zip of images, a text file of image URLs, or the .jsonl/.parquet
rows of an LLM dataset), check it, see thumbnails of what a training would get, and name it in a job as
``{"dataset": {"upload_id": ...}}``.

An upload is streamed to ``$HUBFERRY_HOME/uploads/<owner>/<id>/`` as it arrives (never held in memory,
never above ``dataset_max_bytes``: 413 as soon as it passes), hashed on the way, and kept with a small
``meta.json``. A check packs it (:func:`hubferry.dataset.pack`, every hostile-input guard of the dataset
package applies) into ``packed.zip`` beside it, with the report; thumbnails are made from the packed
images on first request and cached. Datasets are their uploader's: another user's id answers 404.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from python_multipart.multipart import MultipartParser, parse_options_header

from hubferry import training_config
from hubferry.api.errors import ApiError, from_error, not_found
from hubferry.api.principal import Principal, current_principal
from hubferry.api.schemas import DATASET_ID_PATTERN, CheckOptions, DatasetList, DatasetOut, ErrorBody
from hubferry.config import Settings
from hubferry.dataset import PackOptions, check, pack
from hubferry.dataset.intake import detect_kind
from hubferry.errors import HubferryError, ValidationError
from hubferry.logs import get_logger
from hubferry.services.context import Context

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

log = get_logger(__name__)

#: Thumbnails fit in this square (pixels), as JPEGs of this quality.
THUMBNAIL_SIDE = 256
THUMBNAIL_QUALITY = 80
#: Multipart framing allowed on top of ``dataset_max_bytes`` in a declared ``Content-Length``.
MULTIPART_SLACK = 64 * 1024
#: Headers per part and bytes per header the upload parser accepts.
MAX_PART_HEADERS = 16
MAX_HEADER_BYTES = 8 * 1024
#: Longest original file name kept for display.
MAX_FILENAME_CHARS = 200

_ID = re.compile(DATASET_ID_PATTERN)
_SAFE_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_META, _REPORT, _PACKED, _THUMBS = "meta.json", "report.json", "packed.zip", "thumbs"
#: Uploads kept as rows for an LLM fine-tune rather than packed as images.
ROW_SUFFIXES = (".jsonl", ".parquet")

Caller = Annotated[Principal, Depends(current_principal)]
UploadId = Annotated[str, PathParam(pattern=DATASET_ID_PATTERN, examples=["ds_0123456789abcdef"])]


class _TooLarge(Exception):
    pass


def uploads_root(settings: Settings) -> Path:
    return settings.home / "uploads"


def owner_dir(settings: Settings, owner: str) -> Path:
    """``uploads/<owner>``; an owner name that is not a safe folder name is replaced by its digest."""
    name = owner if _SAFE_OWNER.fullmatch(owner) else "u-" + hashlib.sha256(owner.encode()).hexdigest()[:24]
    return uploads_root(settings) / name


def find_upload(settings: Settings, caller: Principal, upload_id: str) -> Path:
    """The folder of an upload the caller may use (their own; any, for an administrator).

    Raises:
        ApiError: 404, whether the upload is someone else's or does not exist.
    """
    if _ID.fullmatch(upload_id):
        own = owner_dir(settings, caller.name) / upload_id
        if (own / _META).is_file():
            return own
        if caller.is_admin:
            for folder in uploads_root(settings).glob(f"*/{upload_id}"):
                if (folder / _META).is_file():
                    return folder
    raise not_found(f"dataset {upload_id}")


def upload_source(settings: Settings, caller: Principal, upload_id: str) -> Path:
    """The stored file of an upload the caller may use, as :func:`hubferry.dataset.pack` takes it."""
    folder = find_upload(settings, caller, upload_id)
    return folder / _read_json(folder / _META)["stored_as"]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text("utf-8"))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.replace(temp, path)


def _shown(folder: Path) -> dict[str, Any]:
    meta = _read_json(folder / _META)
    report = _read_json(folder / _REPORT) if (folder / _REPORT).is_file() else None
    if report is not None:
        for image in report.get("images", []):
            image["thumbnail"] = f"/api/v1/datasets/{meta['id']}/thumbnails/{quote(image['name'], safe='')}"
    return {k: meta[k] for k in ("id", "filename", "size", "sha256", "kind", "created_at")} | {"report": report}


class _Receiver:
    """Multipart callbacks writing the part named ``file`` to disk, hashed and size-capped, as it arrives."""

    def __init__(self, dest: Path, limit: int) -> None:
        self.dest = dest
        self.limit = limit
        self.size = 0
        self.digest = hashlib.sha256()
        self.filename: str | None = None
        self.finished = False
        self._out: IO[bytes] | None = None
        self._taken = False
        self._field = bytearray()
        self._value = bytearray()
        self._disposition = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._data, "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        if len(self._value) > MAX_HEADER_BYTES:
            raise ApiError(422, "a multipart header is too long", field="file")

    def _header_end(self) -> None:
        if bytes(self._field).lower() == b"content-disposition":
            self._disposition = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _kind, options = parse_options_header(self._disposition)
        if options.get(b"name") == b"file" and b"filename" in options and not self._taken:
            self._taken = True
            raw = options[b"filename"].decode("utf-8", "replace")
            self.filename = "".join(c for c in Path(raw.replace("\\", "/")).name if c.isprintable())[
                :MAX_FILENAME_CHARS] or "upload"
            fd = os.open(self.dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._out = os.fdopen(fd, "wb")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._out is None:
            return
        self.size += end - start
        if self.size > self.limit:
            raise _TooLarge
        chunk = data[start:end]
        self.digest.update(chunk)
        self._out.write(chunk)

    def _part_end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def _end(self) -> None:
        self.finished = True

    def close(self) -> None:
        self._part_end()


def datasets_router(ctx: Context) -> APIRouter:
    settings = ctx.settings
    router = APIRouter(prefix="/api/v1", tags=["datasets"],
                       responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}})

    def too_large() -> ApiError:
        return ApiError(413, f"the dataset is larger than {settings.dataset_max_bytes} bytes",
                        hint="upload fewer or smaller images, or raise HUBFERRY_DATASET_MAX_BYTES")

    @router.post(
        "/datasets", status_code=201, response_model=DatasetOut, summary="Upload a dataset",
        responses={413: {"model": ErrorBody}, 415: {"model": ErrorBody}},
        openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary",
                                    "description": "A zip of images (with optional .txt captions), or a text "
                                    "file of image URLs, one per line."}}}}}}},
    )
    async def upload(request: Request, caller: Caller) -> dict[str, Any]:
        """Stream a dataset to the server; use its ``id`` as ``{"dataset": {"upload_id": ...}}`` in a job."""
        kind, options = parse_options_header(request.headers.get("content-type"))
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise ApiError(415, "send the dataset as multipart/form-data with a part named 'file'", field="file")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > settings.dataset_max_bytes + MULTIPART_SLACK:
            raise too_large()
        upload_id = "ds_" + secrets.token_hex(8)
        folder = owner_dir(settings, caller.name) / upload_id
        folder.mkdir(parents=True, mode=0o700)
        receiver = _Receiver(folder / "upload.part", settings.dataset_max_bytes)
        try:
            parser = MultipartParser(boundary, receiver.callbacks(), max_header_count=MAX_PART_HEADERS,
                                     max_header_size=MAX_HEADER_BYTES)
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
            receiver.close()
            if not receiver.finished or receiver.filename is None:
                raise ApiError(422, "no complete file part named 'file' in the upload", field="file")
            return await run_in_threadpool(_store, folder, receiver, caller.name)
        except _TooLarge:
            shutil.rmtree(folder, ignore_errors=True)
            raise too_large() from None
        except ApiError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        except HubferryError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise from_error(exc) from None
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            if type(exc).__module__.startswith("python_multipart"):
                raise ApiError(422, f"malformed multipart body: {exc}"[:300], field="file") from None
            raise
        finally:
            receiver.close()

    def _store(folder: Path, receiver: _Receiver, owner: str) -> dict[str, Any]:
        part = folder / "upload.part"
        suffix = Path(receiver.filename or "").suffix.lower()
        if suffix in ROW_SUFFIXES:  # an LLM dataset (JSONL or Parquet rows) for a RunPod fine-tune
            stored = folder / f"dataset{suffix}"
            part.rename(stored)
            try:
                training_config.read_rows(stored)
            except ValidationError as exc:
                raise ApiError(422, f"the upload is not a readable {suffix} dataset: {exc.message}", field="file",
                               hint=exc.hint or "upload JSON lines, one row per line, or a Parquet file") from None
            kind = "rows"
        else:
            stored = folder / ("dataset.zip" if zipfile.is_zipfile(part) else "urls.txt")
            part.rename(stored)
            try:
                kind = detect_kind(stored)
            except ValidationError as exc:
                raise ApiError(422, "the upload is neither a zip of images, a text file of image URLs, nor a "
                               ".jsonl/.parquet dataset", field="file", hint=exc.hint) from None
        _write_json(folder / _META, {
            "id": folder.name, "owner": owner, "filename": receiver.filename, "stored_as": stored.name,
            "size": receiver.size, "sha256": receiver.digest.hexdigest(), "kind": kind,
            "created_at": datetime.now(UTC).isoformat(),
        })
        log.info("dataset uploaded", dataset=folder.name, owner=owner, size=receiver.size)
        return _shown(folder)

    @router.get("/datasets", response_model=DatasetList, summary="Your datasets")
    def list_datasets(caller: Caller) -> dict[str, Any]:
        mine = owner_dir(settings, caller.name)
        folders = [f for f in mine.iterdir() if (f / _META).is_file()] if mine.is_dir() else []
        shown = [_shown(f) for f in folders]
        return {"datasets": sorted(shown, key=lambda d: d["created_at"], reverse=True)}

    @router.get("/datasets/{upload_id}", response_model=DatasetOut, summary="A dataset and its last check")
    def get_dataset(upload_id: UploadId, caller: Caller) -> dict[str, Any]:
        return _shown(find_upload(settings, caller, upload_id))

    @router.delete("/datasets/{upload_id}", status_code=204, summary="Delete a dataset")
    def delete_dataset(upload_id: UploadId, caller: Caller) -> Response:
        shutil.rmtree(find_upload(settings, caller, upload_id), ignore_errors=True)
        return Response(status_code=204)

    @router.post("/datasets/{upload_id}/check", response_model=DatasetOut, summary="Check and pack a dataset")
    def check_dataset(upload_id: UploadId, caller: Caller, options: CheckOptions | None = None) -> dict[str, Any]:
        """Normalise the images as a training would get them and report what was accepted, rejected and why.
        A usable dataset's packed images become the thumbnails."""
        folder = find_upload(settings, caller, upload_id)
        source = folder / _read_json(folder / _META)["stored_as"]
        if _read_json(folder / _META)["kind"] == "rows":
            raise ApiError(422, "only image datasets are checked here; the rows of an LLM dataset are checked "
                           "against the method of the job that uses it", field="upload_id",
                           hint="create the RunPod job with dataset.upload_id; a missing column is a 422 naming it")
        chosen = options or CheckOptions()
        pack_options = PackOptions(trigger_word=chosen.trigger_word, max_side=chosen.max_side,
                                   min_images=chosen.min_images)
        try:
            try:
                report = pack(source, folder / _PACKED, pack_options, settings).report
            except ValidationError as exc:
                if "accepted" not in exc.context:  # hostile or over a limit: nothing to report on
                    raise
                report = check(source, pack_options, settings)
                (folder / _PACKED).unlink(missing_ok=True)
        except HubferryError as exc:
            raise from_error(exc) from None
        shutil.rmtree(folder / _THUMBS, ignore_errors=True)
        _write_json(folder / _REPORT, {**report.to_dict(), "source": _read_json(folder / _META)["filename"]})
        return _shown(folder)

    @router.get(
        "/datasets/{upload_id}/thumbnails/{name}", response_class=FileResponse, summary="A packed image, small",
        responses={200: {"content": {"image/jpeg": {}}, "description": "A JPEG at most 256 pixels a side."}},
    )
    def thumbnail(upload_id: UploadId, name: Annotated[str, PathParam(max_length=300)], caller: Caller) -> FileResponse:
        folder = find_upload(settings, caller, upload_id)
        report = _read_json(folder / _REPORT) if (folder / _REPORT).is_file() else {}
        if name not in {image["name"] for image in report.get("images", [])} or not (folder / _PACKED).is_file():
            raise not_found(f"image {name}")
        cached = folder / _THUMBS / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".jpg")
        if not cached.is_file():
            _make_thumbnail(folder / _PACKED, name, cached)
        return FileResponse(cached, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    return router


def _make_thumbnail(packed: Path, name: str, dest: Path) -> None:
    from PIL import Image

    with zipfile.ZipFile(packed) as archive, archive.open(name) as member:
        data = member.read()
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        small = image.convert("RGB")
    dest.parent.mkdir(mode=0o700, exist_ok=True)
    temp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}")
    small.save(temp, "JPEG", quality=THUMBNAIL_QUALITY)
    os.replace(temp, dest)
