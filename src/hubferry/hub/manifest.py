"""What a push will publish: the folder's files with their sizes and hashes, read once."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hubferry.errors import PermanentError, ValidationError

#: Never published: git internals and huggingface_hub's local cache, as upload_folder does.
ALWAYS_IGNORED = (".git", ".git/*", "*/.git/*", ".cache/huggingface/*", "*/.cache/huggingface/*")
#: Read size when hashing; one reused buffer per file keeps allocation out of the loop.
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class LocalFile:
    """One file to publish. ``content`` is set for generated files (the model card)."""

    path_in_repo: str
    size: int
    sha256: str
    git_sha1: str | None
    local_path: Path | None = None
    content: bytes | None = None

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path_in_repo, "size": self.size, "sha256": self.sha256}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of ``data`` as a blob (what the Hub reports for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def from_bytes(path_in_repo: str, data: bytes) -> LocalFile:
    """A generated file, held in memory (small: model cards)."""
    return LocalFile(path_in_repo, len(data), hashlib.sha256(data).hexdigest(), git_blob_sha1(data), content=data)


def hash_file(path: Path, path_in_repo: str, git_sha1_limit: int) -> LocalFile:
    """Hash ``path`` in one streaming read: sha256 always, git sha1 when it may be a regular file."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size) if size <= git_sha1_limit else None
    read = 0
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            sha256.update(view[:n])
            if sha1 is not None:
                sha1.update(view[:n])
            read += n
    if read != size:
        raise PermanentError(
            f"{path} changed size while being read ({size} -> {read} bytes)", category="file_error",
            path=str(path), hint="wait until training has finished writing, then push again",
        )
    return LocalFile(path_in_repo, size, sha256.hexdigest(), sha1.hexdigest() if sha1 else None, local_path=path)


def _matches(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.rstrip("/") + "/*") for p in patterns)


def select_paths(folder: Path, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[tuple[Path, str]]:
    """The files under ``folder`` to publish, as ``(local path, path in repo)``, sorted."""
    if not folder.is_dir():
        raise ValidationError(
            f"{folder} is not a folder", path=str(folder), hint="pass the folder that holds the trained model",
        )
    selected = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files):
            local = Path(root) / name
            rel = local.relative_to(folder).as_posix()
            if _matches(rel, ALWAYS_IGNORED) or (include and not _matches(rel, include)) or _matches(rel, exclude):
                continue
            if not local.is_file():
                raise ValidationError(
                    f"{local} is not a readable regular file (a broken link or a special file)", path=str(local),
                    hint="remove it or exclude it with --exclude",
                )
            selected.append((local, rel))
    return selected


def build(paths: list[tuple[Path, str]], *, git_sha1_limit: int, threads: int = 2) -> list[LocalFile]:
    """Hash the ``(local path, path in repo)`` pairs of :func:`select_paths` (in parallel: hashlib releases the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(lambda item: hash_file(item[0], item[1], git_sha1_limit), paths))


def total_size(files: Iterable[LocalFile]) -> int:
    return sum(f.size for f in files)
