"""Reading a dataset zip without letting it write anywhere, follow a link or fill the disk.

Entry names are never used as paths: every kept entry is extracted to a generated name in the work
folder, and its original name travels along as a label. Before a byte is extracted the whole
directory is checked (names, links, encryption, counts, declared sizes, compression ratios); while
extracting, actual bytes are counted too, since a zip's headers can lie.
"""

from __future__ import annotations

import stat
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hubferry.errors import ValidationError

#: Entries in one archive (files and folders), whatever they are.
ARCHIVE_MAX_ENTRIES = 20_000
#: An entry may expand at most this many times its compressed size ...
ARCHIVE_MAX_RATIO = 100
#: ... once it is larger than this (small text files legitimately compress very well).
ARCHIVE_RATIO_FLOOR = 1024 * 1024
#: Folders of macOS resource forks and AppleDouble files: never data.
_APPLE_JUNK_DIR = "__MACOSX"

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """A file kept from an archive: its name inside the archive and where its bytes now are."""

    name: str
    path: Path
    size: int


def is_junk(name: str) -> bool:
    """macOS metadata (``__MACOSX/``, ``._x``, ``.DS_Store``) and other hidden files, which are never data."""
    parts = PurePosixPath(name).parts
    return any(part == _APPLE_JUNK_DIR or part.startswith(".") for part in parts)


def _refuse(archive: Path, message: str, hint: str, entry: str | None = None) -> ValidationError:
    return ValidationError(message, category="file_error", path=str(archive), entry=entry, hint=hint)


def safe_name(archive: Path, raw: str) -> str:
    """The entry's name as a relative POSIX path, or a refusal when it is absolute or climbs out.

    Backslashes count as separators (zips made on Windows), so ``..\\x`` is caught too.
    """
    name = raw.replace("\\", "/")
    if "\x00" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive, f"archive entry {raw!r} has an absolute path", entry=raw,
                      hint="re-create the zip from inside the image folder (relative paths only)")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, f"archive entry {raw!r} points outside the archive ('..')", entry=raw,
                      hint="re-create the zip from inside the image folder; this one may be malicious")
    return "/".join(parts)


def _is_link(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return stat.S_ISLNK(mode)


def _checked_entries(archive: Path, zf: zipfile.ZipFile, wanted: Callable[[str], bool],
                     max_files: int, max_bytes: int) -> tuple[list[tuple[zipfile.ZipInfo, str]], list[str]]:
    infos = zf.infolist()
    if len(infos) > ARCHIVE_MAX_ENTRIES:
        raise _refuse(archive, f"the archive has {len(infos)} entries, more than {ARCHIVE_MAX_ENTRIES}",
                      hint="split the dataset, or zip only the images and captions")
    kept: list[tuple[zipfile.ZipInfo, str]] = []
    skipped: list[str] = []
    declared = 0
    for info in infos:
        name = safe_name(archive, info.filename)
        if _is_link(info):
            raise _refuse(archive, f"archive entry {info.filename!r} is a symbolic link", entry=info.filename,
                          hint="re-create the zip with the files themselves (zip without -y)")
        if info.is_dir() or not name or is_junk(name):
            continue
        if info.flag_bits & 0x1:
            raise _refuse(archive, f"archive entry {info.filename!r} is encrypted", entry=info.filename,
                          hint="re-create the zip without a password")
        if not wanted(name):
            skipped.append(name)
            continue
        ratio = info.file_size // max(info.compress_size, 1)
        if info.file_size > ARCHIVE_RATIO_FLOOR and ratio > ARCHIVE_MAX_RATIO:
            raise _refuse(archive, f"archive entry {info.filename!r} expands {ratio} times (more than "
                          f"{ARCHIVE_MAX_RATIO}x): a zip bomb", entry=info.filename,
                          hint="images barely compress; re-create the zip from the real image files")
        declared += info.file_size
        if declared > max_bytes:
            raise _refuse(archive, f"the archive expands to more than {max_bytes} bytes",
                          hint="use fewer or smaller images, or raise HUBFERRY_DATASET_MAX_BYTES")
        kept.append((info, name))
        if len(kept) > max_files:
            raise _refuse(archive, f"the archive holds more than {max_files} images and captions",
                          hint="use fewer images, or raise HUBFERRY_DATASET_MAX_IMAGES")
    return kept, skipped


def extract(archive: Path, dest: Path, *, wanted: Callable[[str], bool], max_files: int,
            max_bytes: int) -> tuple[list[Entry], list[str]]:
    """Extract the entries whose names ``wanted`` accepts into ``dest`` under generated names.

    Args:
        archive: the zip file.
        dest: an empty folder of the work area; nothing is written elsewhere.
        wanted: decides by (safe) entry name which files are extracted.
        max_files: most entries ``wanted`` may accept.
        max_bytes: most bytes all extracted entries may hold together.

    Returns:
        The extracted entries in archive order, and the names of the files left out.

    Raises:
        ValidationError: the archive is damaged, encrypted, holds links or paths out of it, or is too
            large, too many or too compressed; nothing is extracted then.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            kept, skipped = _checked_entries(archive, zf, wanted, max_files, max_bytes)
            entries = []
            total = 0
            for number, (info, name) in enumerate(kept):
                path = dest / f"{number:06d}.bin"
                size = 0
                with zf.open(info) as source, open(path, "xb") as out:
                    while chunk := source.read(_CHUNK):
                        size += len(chunk)
                        total += len(chunk)
                        if size > info.file_size or total > max_bytes:
                            raise _refuse(archive, f"archive entry {info.filename!r} is larger than its header says",
                                          entry=info.filename, hint="the zip is damaged or malicious; re-create it")
                        out.write(chunk)
                entries.append(Entry(name, path, size))
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise _refuse(archive, f"the zip is damaged: {exc}", hint="re-create the zip") from None
    except NotImplementedError as exc:
        raise _refuse(archive, f"the zip uses an unsupported feature: {exc}",
                      hint="re-create it with plain deflate compression") from None
    return entries, skipped
