"""Content-addressed blob store: files are streamed to disk while hashed and only kept when whole.

Every object, LFS or regular, lives once under ``<data>/blobs/<sha256[:2]>/<sha256[2:4]>/<sha256>``.
A blob appears there only through an atomic rename after its size and sha256 were checked, so a
reader never sees a partial object.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio.to_thread

from hubferry.errors import ValidationError

#: Bytes gathered from the request before one hash+write step runs in a worker thread.
WRITE_BUFFER = 4 * 1024 * 1024
#: Read size when assembling multipart uploads.
COPY_CHUNK = 8 * 1024 * 1024

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(value: str) -> bool:
    return bool(_SHA256.match(value))


class BlobWriter:
    """A temp file that hashes what is written and becomes a blob on :meth:`commit`."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        self.tmp_path = store.tmp_dir / f"{secrets.token_hex(12)}.tmp"
        self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._sha256.update(data)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(data)

    def commit(self, sha256: str | None = None, size: int | None = None) -> str:
        """Check ``size`` and ``sha256`` (if given), then move the file into the store.

        Returns:
            The sha256 of the content.

        Raises:
            ValidationError: the content differs from what was announced; nothing is kept.
        """
        digest = self._sha256.hexdigest()
        try:
            if size is not None and self.size != size:
                raise ValidationError(f"Size mismatch: expected {size} bytes, received {self.size}", oid=sha256)
            if sha256 is not None and digest != sha256:
                raise ValidationError(f"sha256 mismatch: expected {sha256}, received {digest}", oid=sha256)
            os.fsync(self._fd)
        except BaseException:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = -1
        target = self._store.path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp_path, target)
        return digest

    def keep_as(self, target: Path) -> None:
        """Close and move the unchecked content to ``target`` (used for multipart parts)."""
        os.close(self._fd)
        self._fd = -1
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp_path, target)

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.tmp_path.unlink(missing_ok=True)


class BlobStore:
    """Blobs on disk under ``root``, named by their sha256."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.parts_dir = self.root / "multipart"
        for directory in (self.root, self.tmp_dir, self.parts_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise ValidationError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def size(self, sha256: str) -> int | None:
        """Size of a stored blob, or ``None`` if it is not stored."""
        try:
            return self.path(sha256).stat().st_size
        except (FileNotFoundError, ValidationError):
            return None

    def exists(self, sha256: str, size: int | None = None) -> bool:
        stored = self.size(sha256)
        return stored is not None and (size is None or stored == size)

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def put_bytes(self, data: bytes) -> str:
        """Store small content held in memory (regular files); returns its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        if not self.exists(digest, len(data)):
            writer = self.writer()
            writer.write(data)
            writer.commit(digest, len(data))
        return digest

    async def receive(self, chunks: AsyncIterator[bytes], *, sha256: str | None, size: int | None) -> str:
        """Stream ``chunks`` (a request body) into the store, hashing in worker threads.

        Raises:
            ValidationError: too many bytes, or size/sha256 mismatch; nothing is kept.
        """
        writer = self.writer()
        try:
            await _pump(chunks, writer, size, f"Size mismatch: more than the announced {size} bytes")
            return await anyio.to_thread.run_sync(writer.commit, sha256, size)
        except BaseException:
            writer.abort()
            raise

    # -- multipart -------------------------------------------------------------------------------

    def part_path(self, upload_id: str, number: int) -> Path:
        return self.parts_dir / upload_id / f"{number:05d}.part"

    async def receive_part(self, chunks: AsyncIterator[bytes], upload_id: str, number: int, size: int) -> None:
        """Store one part of a multipart upload (replacing an earlier attempt of the same part)."""
        writer = self.writer()
        try:
            await _pump(chunks, writer, size, f"Part {number} is larger than the expected {size} bytes")
            if writer.size != size:
                raise ValidationError(f"Part {number} has {writer.size} bytes, expected {size}")
            writer.keep_as(self.part_path(upload_id, number))
        except BaseException:
            writer.abort()
            raise

    def assemble(self, upload_id: str, count: int, *, sha256: str, size: int) -> str:
        """Concatenate the parts of an upload into a blob, checking size and sha256 (blocking).

        Raises:
            ValidationError: a part is missing, or the whole differs from what was announced.
        """
        paths: Sequence[Path] = [self.part_path(upload_id, n) for n in range(1, count + 1)]
        missing = [str(n) for n, p in enumerate(paths, 1) if not p.exists()]
        if missing:
            shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
            raise ValidationError(f"Parts never uploaded: {shown}", oid=sha256)
        writer = self.writer()
        try:
            for part in paths:
                with open(part, "rb", buffering=0) as f:
                    while chunk := f.read(COPY_CHUNK):
                        writer.write(chunk)
            digest = writer.commit(sha256, size)
        except FileNotFoundError:  # the upload expired and was cleaned up meanwhile
            writer.abort()
            raise ValidationError("The upload expired: upload the object again", oid=sha256) from None
        except BaseException:
            writer.abort()
            raise
        self.discard_upload(upload_id)
        return digest

    def discard_upload(self, upload_id: str) -> None:
        shutil.rmtree(self.parts_dir / upload_id, ignore_errors=True)

    def remove_stale_uploads(self, max_age_s: float, now: float | None = None) -> int:
        """Remove multipart uploads that received no part for ``max_age_s`` seconds.

        Returns:
            How many uploads were removed.
        """
        cutoff = (time.time() if now is None else now) - max_age_s
        removed = 0
        for upload in self.parts_dir.iterdir():
            try:
                newest = max([p.stat().st_mtime for p in upload.iterdir()], default=upload.stat().st_mtime)
            except FileNotFoundError:  # completed or removed meanwhile
                continue
            if newest < cutoff:
                self.discard_upload(upload.name)
                removed += 1
        return removed


async def _pump(chunks: AsyncIterator[bytes], writer: BlobWriter, limit: int | None, too_big: str) -> None:
    """Copy ``chunks`` into ``writer`` in ``WRITE_BUFFER`` steps run off the event loop."""
    buffer = bytearray()
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if limit is not None and received > limit:
            raise ValidationError(too_big)
        buffer += chunk
        if len(buffer) >= WRITE_BUFFER:
            await anyio.to_thread.run_sync(writer.write, buffer)
            buffer = bytearray()
    if buffer:
        await anyio.to_thread.run_sync(writer.write, buffer)
