"""Writing the dataset zip so that the same files always give the same bytes (and the same sha256).

Names are sorted, every entry carries the same timestamp and permissions, and nothing is compressed
(images are compressed already, and stored entries do not depend on the zlib build of the machine).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: The timestamp of every entry: the earliest a zip can hold.
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o644


@dataclass(frozen=True)
class Member:
    """One file of the zip: its name, and its bytes (``data``) or where they are (``path``)."""

    name: str
    path: Path | None = None
    data: bytes | None = None

    def size(self) -> int:
        return len(self.data) if self.data is not None else os.path.getsize(self.path or "")


def write(dest: Path, members: Iterable[Member]) -> str:
    """Write ``members`` (sorted by name) to ``dest`` deterministically; returns the zip's sha256."""
    ordered = sorted(members, key=lambda m: m.name)
    names = [m.name for m in ordered]
    if len(set(names)) != len(names):
        raise ValueError("duplicate names in the dataset zip")  # a bug of the caller: names are made unique
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for member in ordered:
            info = zipfile.ZipInfo(member.name, date_time=ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # unix, so the permissions below are read
            info.external_attr = (0o100000 | _FILE_MODE) << 16
            info.file_size = member.size()
            with zf.open(info, "w") as out:
                if member.data is not None:
                    out.write(member.data)
                else:
                    with open(member.path or "", "rb") as source:
                        shutil.copyfileobj(source, out, 1024 * 1024)
    return file_sha256(dest)


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
