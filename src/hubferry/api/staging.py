"""``GET /staging/{name}?exp=..&sig=..``: remote trainers fetch dataset zips staged by the ``local``
staging from ``hubferry serve``, with no token, through HMAC-signed expiring URLs."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from typing import BinaryIO

from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse

from hubferry.config import Settings
from hubferry.staging.local import LocalStaging, valid_name

#: Bytes read and sent at a time.
CHUNK_BYTES = 1024 * 1024


def staging_router(settings: Settings) -> APIRouter:
    """The route serving files of the ``local`` staging under ``settings.home``."""
    staging = LocalStaging(settings)
    router = APIRouter()

    @router.get("/staging/{name}", include_in_schema=False)
    def download(name: str, exp: str = "", sig: str = "") -> StreamingResponse:
        if not valid_name(name):
            raise HTTPException(404, "no such staged file")
        if not staging.verify(name, exp, sig):
            raise HTTPException(403, "invalid or expired signature")
        opened = staging.open(name)
        if opened is None:
            raise HTTPException(404, "no such staged file")
        file, size = opened
        return StreamingResponse(
            _chunks(file), media_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
            headers={"Content-Length": str(size), "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    return router


def _chunks(file: BinaryIO) -> Iterator[bytes]:
    with file:
        while chunk := file.read(CHUNK_BYTES):
            yield chunk
