"""Git object ids (blob, tree, commit sha1) so the registry reports the same hashes as the Hub."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Size of the reads used when hashing files.
HASH_CHUNK = 4 * 1024 * 1024


def blob_oid(data: bytes) -> str:
    """The git blob sha1 of ``data``: ``sha1(b"blob <len>\\0" + data)``."""
    h = hashlib.sha1(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The LFS pointer file git stores in place of an LFS object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def lfs_pointer_oid(sha256: str, size: int) -> str:
    """The git blob sha1 of the LFS pointer of an object (the ``oid`` the Hub reports for LFS files)."""
    return blob_oid(lfs_pointer(sha256, size))


def file_hashes(path: str) -> tuple[str, str, int]:
    """Hash a local file in one pass.

    Returns:
        ``(sha256, git_blob_sha1, size)``.
    """
    size = os.path.getsize(path)
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest(), size


@dataclass(frozen=True)
class TreeItem:
    """One entry of a git tree: a file (``is_dir=False``) or a sub-tree."""

    name: str
    oid: str
    is_dir: bool


def tree_oid(items: Iterable[TreeItem]) -> str:
    """The sha1 of a git tree object holding ``items`` (sorted the way git sorts them)."""
    body = bytearray()
    for item in sorted(items, key=lambda i: i.name.encode() + (b"/" if i.is_dir else b"")):
        mode = b"40000" if item.is_dir else b"100644"
        body += mode + b" " + item.name.encode() + b"\0" + bytes.fromhex(item.oid)
    h = hashlib.sha1(b"tree %d\0" % len(body))
    h.update(body)
    return h.hexdigest()


def directory_oids(files: Mapping[str, str]) -> dict[str, str]:
    """Tree oids of every directory implied by ``files`` (path -> git blob oid).

    Returns:
        directory path -> tree oid, with ``""`` for the root tree.
    """
    children: dict[str, dict[str, tuple[str, bool]]] = {"": {}}
    for path, oid in files.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent, name = "/".join(parts[: depth - 1]), parts[depth - 1]
            children.setdefault("/".join(parts[:depth]), {})
            children.setdefault(parent, {})[name] = ("", True)
        children.setdefault("/".join(parts[:-1]), {})[parts[-1]] = (oid, False)
    oids: dict[str, str] = {}
    for directory in sorted(children, key=lambda d: d.count("/") + (1 if d else 0), reverse=True):
        items = []
        for name, (oid, is_dir) in children[directory].items():
            if is_dir:
                oid = oids[f"{directory}/{name}" if directory else name]
            items.append(TreeItem(name, oid, is_dir))
        oids[directory] = tree_oid(items)
    return oids


def commit_oid(*, tree: str, parent: str | None, author: str, timestamp: int, title: str, description: str = "") -> str:
    """The sha1 of a git commit object with these fields."""
    ident = f"{author} <{author}@users.noreply.hubferry> {timestamp} +0000"
    lines = [f"tree {tree}"]
    if parent:
        lines.append(f"parent {parent}")
    lines += [f"author {ident}", f"committer {ident}", "", title]
    if description:
        lines += ["", description]
    body = ("\n".join(lines) + "\n").encode()
    return hashlib.sha1(b"commit %d\0" % len(body) + body).hexdigest()
