"""Turning what the user gave (a folder, a zip, or a text file of URLs) into candidate image files.

Folders are read in place and never followed through links; zips are extracted by
:mod:`hubferry.dataset.archive` and URLs downloaded by :mod:`hubferry.dataset.fetch`, both into the
work folder. Each candidate carries a label (its path in the folder or zip, or its URL) and the raw
caption file that sat beside it.
"""

from __future__ import annotations

import os
import stat
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from hubferry.config import Settings
from hubferry.dataset import archive
from hubferry.dataset.captions import CAPTION_MAX_BYTES
from hubferry.dataset.fetch import FETCH_MAX_FILE_BYTES, Fetcher, display_url
from hubferry.dataset.report import Rejection, SourceKind
from hubferry.errors import HubferryError, ValidationError

#: File name endings taken as images (the bytes decide the format afterwards).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".heic", ".heif"})
#: Image formats people put in datasets that are not taken: rejected with a reason rather than ignored.
UNSUPPORTED_SUFFIXES = frozenset({
    ".gif", ".bmp", ".tif", ".tiff", ".avif", ".jxl", ".jp2", ".psd", ".svg", ".ico",
    ".raw", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2",
})
CAPTION_SUFFIX = ".txt"
#: A URL list larger than this is not a URL list.
URL_LIST_MAX_BYTES = 1024 * 1024
#: Downloads running at once for a URL list.
FETCH_THREADS = 4


@dataclass(frozen=True)
class Candidate:
    """A file that may become a dataset image."""

    source: str
    path: Path
    caption: bytes | None = None


@dataclass
class Intake:
    """The candidates found in a source, and what was left out on the way."""

    kind: SourceKind
    candidates: list[Candidate] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def detect_kind(source: Path) -> SourceKind:
    """Whether ``source`` is a folder, a zip or a URL list.

    Raises:
        ValidationError: it does not exist, or is none of the three.
    """
    if source.is_dir():
        return "folder"
    if not source.is_file():
        raise ValidationError(f"{source} does not exist", category="file_error", path=str(source),
                              hint="pass a folder of images, a .zip of them, or a text file of image URLs")
    if zipfile.is_zipfile(source):
        return "zip"
    if source.suffix.lower() == ".zip":
        raise ValidationError(f"{source} is not a readable zip", category="file_error", path=str(source),
                              hint="the file is damaged or incomplete: download or create it again")
    if source.stat().st_size <= URL_LIST_MAX_BYTES:
        try:
            text = source.read_text("utf-8-sig")
        except UnicodeDecodeError:
            text = ""
        lines = list(_url_lines(text))
        if lines and all(line.split()[0].lower().startswith(("http://", "https://")) for line in lines):
            return "urls"
    raise ValidationError(f"{source} is not a folder, a zip or a list of URLs", category="file_error",
                          path=str(source), hint="pass a folder of images, a .zip of them, or a text file "
                          "with one http(s) image URL per line")


def _url_lines(text: str) -> Iterator[str]:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def _too_many(count: int, settings: Settings, source: Path) -> ValidationError:
    return ValidationError(f"the dataset has {count} images, more than {settings.dataset_max_images}",
                           path=str(source), hint="use fewer images, or raise HUBFERRY_DATASET_MAX_IMAGES")


def _too_big(settings: Settings, source: Path) -> ValidationError:
    return ValidationError(f"the dataset holds more than {settings.dataset_max_bytes} bytes", path=str(source),
                           hint="use fewer or smaller images, or raise HUBFERRY_DATASET_MAX_BYTES")


class _Sorter:
    """Sorts file names into images, unsupported images, captions and the rest."""

    def __init__(self) -> None:
        self.images: list[str] = []
        self.unsupported: list[str] = []
        self.captions: dict[str, str] = {}
        self.other: list[str] = []

    @staticmethod
    def wanted(name: str) -> bool:
        suffix = PurePosixPath(name).suffix.lower()
        return suffix in IMAGE_SUFFIXES or suffix == CAPTION_SUFFIX

    def add(self, name: str) -> None:
        suffix = PurePosixPath(name).suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            self.images.append(name)
        elif suffix == CAPTION_SUFFIX:
            self.captions[str(PurePosixPath(name).with_suffix(""))] = name
        elif suffix in UNSUPPORTED_SUFFIXES:
            self.unsupported.append(name)
        else:
            self.other.append(name)

    def caption_of(self, image: str) -> str | None:
        return self.captions.get(str(PurePosixPath(image).with_suffix("")))

    def finish(self, intake: Intake) -> None:
        """Record unsupported images as rejections, and unpaired captions and other files as skipped."""
        for name in sorted(self.unsupported):
            fmt = PurePosixPath(name).suffix.lower().lstrip(".").upper()
            intake.rejections.append(Rejection(name, "format", f"{fmt} is not taken: convert it to JPEG or PNG"))
        paired = {self.caption_of(name) for name in self.images}
        intake.skipped.extend(sorted([*self.other, *(c for c in self.captions.values() if c not in paired)]))


def _read_caption(path: Path) -> bytes:
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
        return fh.read(CAPTION_MAX_BYTES + 1)


def from_folder(source: Path, settings: Settings) -> Intake:
    """Candidates of a folder (recursively), read in place. Links are not followed: they are rejected."""
    intake = Intake("folder")
    sorter = _Sorter()
    total = 0
    for name, entry_stat in _walk(source, intake):
        sorter.add(name)
        if sorter.wanted(name):
            total += entry_stat.st_size
            if total > settings.dataset_max_bytes:
                raise _too_big(settings, source)
    if len(sorter.images) > settings.dataset_max_images:
        raise _too_many(len(sorter.images), settings, source)
    for name in sorted(sorter.images):
        caption = sorter.caption_of(name)
        raw = _read_caption(source / caption) if caption else None
        intake.candidates.append(Candidate(name, source / name, raw))
    sorter.finish(intake)
    return intake


def _walk(root: Path, intake: Intake) -> Iterator[tuple[str, os.stat_result]]:
    """Regular files below ``root`` as (relative POSIX name, stat), skipping hidden and macOS files.

    At most :data:`archive.ARCHIVE_MAX_ENTRIES` entries are looked at, as in a zip.
    """
    pending = [""]
    seen = 0
    while pending:
        prefix = pending.pop()
        with os.scandir(root / prefix if prefix else root) as entries:
            for entry in entries:
                name = f"{prefix}/{entry.name}" if prefix else entry.name
                seen += 1
                if seen > archive.ARCHIVE_MAX_ENTRIES:
                    raise ValidationError(f"{root} holds more than {archive.ARCHIVE_MAX_ENTRIES} files and folders",
                                          category="file_error", path=str(root),
                                          hint="point at the folder holding just the images and captions")
                if archive.is_junk(entry.name):
                    continue
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    intake.rejections.append(Rejection(name, "link", "a symbolic link: links are not followed; "
                                                       "copy the file itself into the folder"))
                elif stat.S_ISDIR(st.st_mode):
                    pending.append(name)
                elif stat.S_ISREG(st.st_mode):
                    yield name, st


def from_zip(source: Path, work: Path, settings: Settings) -> Intake:
    """Candidates of a zip, extracted safely into ``work``."""
    intake = Intake("zip")
    dest = work / "extracted"
    dest.mkdir()
    entries, left_out = archive.extract(source, dest, wanted=_Sorter.wanted,
                                        max_files=2 * settings.dataset_max_images,
                                        max_bytes=settings.dataset_max_bytes)
    sorter = _Sorter()
    by_name = {}
    for entry in entries:
        if entry.name not in by_name:  # a name twice in one zip: the first copy counts
            by_name[entry.name] = entry
            sorter.add(entry.name)
    for name in left_out:
        sorter.add(name)
    if len(sorter.images) > settings.dataset_max_images:
        raise _too_many(len(sorter.images), settings, source)
    for name in sorted(sorter.images):
        caption = sorter.caption_of(name)
        raw = _read_caption(by_name[caption].path) if caption else None
        intake.candidates.append(Candidate(name, by_name[name].path, raw))
    sorter.finish(intake)
    return intake


def from_url_list(source: Path, work: Path, settings: Settings, fetcher: Fetcher) -> Intake:
    """Candidates downloaded from a text file of URLs: ``URL`` or ``URL caption text`` per line.

    A URL that cannot be fetched (refused address, HTTP error, wrong type, too large) is a rejection;
    the others are kept.
    """
    intake = Intake("urls")
    lines = list(_url_lines(source.read_text("utf-8-sig")))
    if len(lines) > settings.dataset_max_images:
        raise _too_many(len(lines), settings, source)
    dest = work / "fetched"
    dest.mkdir()
    jobs: list[tuple[int, str, bytes | None]] = []
    seen: set[str] = set()
    for number, line in enumerate(lines):
        url, *rest = line.split(None, 1)
        caption = rest[0] if rest else ""
        if url in seen:
            intake.rejections.append(Rejection(display_url(url), "duplicate", "the URL is listed twice"))
            continue
        seen.add(url)
        jobs.append((number, url, caption.strip().encode() if caption.strip() else None))
    budget = _Budget(settings.dataset_max_bytes)

    def fetch(job: tuple[int, str, bytes | None]) -> Candidate | Rejection:
        number, url, caption = job
        path = dest / f"{number:06d}.bin"
        try:
            fetched = fetcher.fetch(url, path, max_bytes=min(FETCH_MAX_FILE_BYTES, settings.dataset_max_bytes))
        except HubferryError as error:
            return Rejection(display_url(url), str(error.context.get("code", "fetch")), error.message +
                             (f"; {error.hint}" if error.hint else ""))
        if not budget.take(fetched.size):
            raise _too_big(settings, source)
        return Candidate(display_url(url), path, caption)

    pool = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="hubferry-fetch")
    try:
        for outcome in pool.map(fetch, jobs):
            if isinstance(outcome, Rejection):
                intake.rejections.append(outcome)
            else:
                intake.candidates.append(outcome)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # over the byte budget: do not fetch the rest
    return intake


class _Budget:
    """Bytes left for the whole dataset, shared by the download threads."""

    def __init__(self, limit: int) -> None:
        self._left = limit
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self._lock:
            self._left -= size
            return self._left >= 0


def name_hint(source: str) -> str:
    """The file stem a candidate suggests for its name in the zip (a URL's last path segment)."""
    if source.startswith(("http://", "https://")):
        path = unquote(urlsplit(source.removesuffix("?…")).path)
        return PurePosixPath(path).stem or "image"
    return PurePosixPath(source).stem
