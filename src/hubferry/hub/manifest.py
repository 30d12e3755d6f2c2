"""What a push will publish: the folder's files with their sizes and hashes, read once.

One streaming read per file computes the sha256, the git blob sha1 (for files that may be
regular) and, when asked, feeds the secret scanner, so hashing and scanning share the pass.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hubferry.errors import PermanentError
from hubferry.hub import secret_scan
from hubferry.hub.progress import format_size
from hubferry.hub.selection import ALWAYS_IGNORED, Selected, open_source, select

__all__ = [
    "ALWAYS_IGNORED", "HashAhead", "Hashing", "HashingStopped", "LocalFile", "SecretsFound", "Selected", "build",
    "from_bytes", "git_blob_sha1", "hash_all", "hash_file", "select_paths", "total_size",
]  # fmt: skip

#: Read size when hashing; one reused buffer per file keeps allocation out of the loop.
_CHUNK = 1024 * 1024
#: Bytes of a file's start that huggingface_hub sends the Hub to decide regular vs LFS.
SAMPLE_BYTES = 512


@dataclass(frozen=True)
class LocalFile:
    """One file to publish. ``content`` is set for generated files (the model card); ``source``
    says where to re-open a folder file without following links."""

    path_in_repo: str
    size: int
    sha256: str
    git_sha1: str | None
    local_path: Path | None = None
    content: bytes | None = None
    source: Selected | None = None
    sample: bytes = b""

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path_in_repo, "size": self.size, "sha256": self.sha256}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of ``data`` as a blob (what the Hub reports for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def from_bytes(path_in_repo: str, data: bytes) -> LocalFile:
    """A generated file, held in memory (small: model cards)."""
    return LocalFile(
        path_in_repo, len(data), hashlib.sha256(data).hexdigest(), git_blob_sha1(data), content=data,
        sample=data[:SAMPLE_BYTES],
    )


def select_paths(
    folder: Path, include: Sequence[str] = (), exclude: Sequence[str] = (), *, follow_symlinks: bool = False,
    forbidden_roots: Iterable[str | os.PathLike[str]] = (),
) -> list[Selected]:
    """The files under ``folder`` to publish (see :func:`hubferry.hub.selection.select`)."""
    return select(folder, include, exclude, follow_symlinks=follow_symlinks, forbidden_roots=forbidden_roots)


def _changed(item: Selected, detail: str) -> PermanentError:
    return PermanentError(
        f"{item.local_path} changed while being read ({detail})", category="file_error", path=str(item.local_path),
        hint="wait until training has finished writing, then push again",
    )


def hash_file(
    item: Selected, *, git_sha1_limit: int, scan: Sequence[str] | None = None, stop: threading.Event | None = None,
) -> tuple[LocalFile, list[secret_scan.Finding]]:
    """Hash ``item`` in one streaming read: sha256 always, git sha1 when it may be a regular file.

    Args:
        scan: when not None, the same read feeds the secret scanner, which also looks for these
            literal values (the push token) anywhere in the file.
        stop: when set, the read stops (:class:`HashingStopped`): the push failed meanwhile.

    Returns:
        The file and the scanner's findings (empty when not scanned).
    """
    size = item.size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size) if size <= git_sha1_limit else None
    scanner = secret_scan.FileScanner(item.path_in_repo, scan) if scan is not None else None
    read = 0
    sample = b""
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    fd = open_source(item)
    with os.fdopen(fd, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            if stop is not None and stop.is_set():
                raise HashingStopped(item.path_in_repo)
            chunk = view[:n]
            sha256.update(chunk)
            if sha1 is not None:
                sha1.update(chunk)
            if scanner is not None:
                scanner.feed(buffer, n)
            if not sample:
                sample = bytes(view[: min(n, SAMPLE_BYTES)])
            read += n
        after = os.fstat(fh.fileno())
    if read != size or after.st_size != size:
        raise _changed(item, f"{format_size(size)} when selected, {format_size(max(read, after.st_size))} now")
    if after.st_mtime_ns != item.identity[3]:
        raise _changed(item, "modified during the push")
    file = LocalFile(
        item.path_in_repo, size, sha256.hexdigest(), sha1.hexdigest() if sha1 else None,
        local_path=item.local_path, source=item, sample=sample,
    )
    return file, scanner.finish() if scanner is not None else []


def hash_all(
    items: Sequence[Selected], *, git_sha1_limit: int, threads: int = 2, scan: Sequence[str] | None = None,
) -> tuple[list[LocalFile], list[secret_scan.Finding]]:
    """Hash (and scan) ``items`` in parallel: hashlib releases the GIL."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(lambda item: hash_file(item, git_sha1_limit=git_sha1_limit, scan=scan), items))
    return [file for file, _ in results], [finding for _, found in results for finding in found]


def build(items: Sequence[Selected], *, git_sha1_limit: int, threads: int = 2) -> list[LocalFile]:
    """Hash the files :func:`select_paths` selected (no secret scan)."""
    return hash_all(items, git_sha1_limit=git_sha1_limit, threads=threads)[0]


def total_size(files: Iterable[LocalFile]) -> int:
    return sum(f.size for f in files)


class HashingStopped(Exception):
    """Hashing ahead was stopped because the push ended first."""


class SecretsFound(Exception):
    """The scan of a file found secrets: the push must stop before anything is committed."""

    def __init__(self, findings: list[secret_scan.Finding]) -> None:
        super().__init__(f"{len(findings)} finding(s)")
        self.findings = findings


@dataclass(frozen=True)
class Hashing:
    """A file the background hasher will hash; :meth:`result` waits for it."""

    item: Selected
    future: Future[LocalFile]

    @property
    def path_in_repo(self) -> str:
        return self.item.path_in_repo

    @property
    def size(self) -> int:
        return self.item.size

    def result(self) -> LocalFile:
        return self.future.result()


class HashAhead:
    """Hashes (and scans) files in order on one background thread, ahead of their uploads.

    One thread: the first file is ready as early as possible, and hashing never takes more than
    one core from the uploads (or, on a shared machine, from the server receiving them).
    """

    def __init__(self, items: Sequence[Selected], *, git_sha1_limit: int, scan: Sequence[str] | None) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="hubferry-hash")
        self._limit, self._scan = git_sha1_limit, scan
        self._stop = threading.Event()
        self.pending = [Hashing(item, self._pool.submit(self._hash, item)) for item in items]

    def _hash(self, item: Selected) -> LocalFile:
        file, findings = hash_file(item, git_sha1_limit=self._limit, scan=self._scan, stop=self._stop)
        if findings:
            raise SecretsFound(findings)
        return file

    def finished(self) -> list[LocalFile]:
        """Every file, once all are hashed and scanned clean (raises the first failure)."""
        return [hashing.result() for hashing in self.pending]

    def close(self) -> None:
        """Stop hashing (the file being read stops at its next chunk) and wait for the thread."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> HashAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
