"""``check`` and ``pack``: from a folder, zip or URL list to a normalised, deterministic dataset zip.

Intake (:mod:`.intake`) finds candidate files, :mod:`.images` decodes and normalises them in a
process pool, duplicates are dropped, captions get the trigger word (:mod:`.captions`), and
:mod:`.bundle` writes the zip with its ``manifest.json``. Bad images become rejections in the report;
only a dataset with nothing usable left (or a hostile or oversized source) raises.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hubferry.config import Settings, load_settings
from hubferry.dataset import bundle, captions, images, intake
from hubferry.dataset.fetch import Fetcher
from hubferry.dataset.report import DatasetReport, ImageRecord, NearDuplicate, PackOptions, Rejection
from hubferry.errors import PermanentError, ValidationError

#: Datasets smaller than this are normalised in this process: starting worker processes (about half a
#: second each, to import hubferry) costs more than it saves. A typical LoRA set (10-30 photos) runs inline.
POOL_MIN_IMAGES = 64
#: Perceptual hashes (64 bits) this close or closer mark two images as near-duplicates (reported, kept).
NEAR_DUPLICATE_BITS = 5
#: Longest file stem in the zip (longer names are cut).
NAME_MAX_CHARS = 80
#: Bounds of ``max_side``.
MAX_SIDE_RANGE = (64, 8192)
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "hubferry-dataset/1"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PackResult:
    """A written dataset zip: where it is, its sha256, and the report."""

    report: DatasetReport
    zip_path: Path
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"zip_path": str(self.zip_path), **self.report.to_dict()}


def check(
    source: str | os.PathLike[str],
    options: PackOptions | None = None,
    settings: Settings | None = None,
    *,
    fetcher: Fetcher | None = None,
    progress: Progress | None = None,
) -> DatasetReport:
    """Check a dataset without keeping anything: the report ``pack`` would give, including its sha256.

    Args:
        source: a folder of images, a zip of them, or a text file of image URLs.
        options: trigger word, sizes and workers (defaults: :class:`PackOptions`).
        settings: limits (``dataset_max_*``), ``fetch_allow_hosts`` and ``home`` (for the work folder).
        fetcher: downloads URLs; default: a :class:`Fetcher` of ``settings``.
        progress: called with (images done, images in all) as images are normalised.

    Returns:
        The report; ``report.usable`` says whether ``pack`` would succeed.

    Raises:
        ValidationError: the source is missing, of no known kind, hostile or over a limit.
    """
    settings = settings or load_settings()
    with _workspace(settings) as work:
        return _build(Path(source), work / "dataset.zip", work, _checked(options), settings, fetcher, progress)


def pack(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    options: PackOptions | None = None,
    settings: Settings | None = None,
    *,
    fetcher: Fetcher | None = None,
    progress: Progress | None = None,
) -> PackResult:
    """Normalise a dataset into the zip ``dest`` (replaced atomically) and report on it.

    Arguments as for :func:`check`; ``dest`` is the zip to write. It is readable by its owner only
    (0600), like everything hubferry writes about people's photos.

    Raises:
        ValidationError: as :func:`check`, and when fewer than ``options.min_images`` images are usable
            (the message names the first rejections); ``dest`` is then left as it was.
    """
    settings = settings or load_settings()
    target = Path(dest)
    if target.is_dir():
        raise ValidationError(f"{target} is a folder", path=str(target), hint="pass the zip file to write, "
                              "e.g. -o data.zip")
    target.parent.mkdir(parents=True, exist_ok=True)
    options = _checked(options)
    with _workspace(settings) as work:
        handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        os.close(handle)
        temp = Path(temp_name)
        try:
            report = _build(Path(source), temp, work, options, settings, fetcher, progress)
            if not report.usable:
                raise _unusable(report)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
    return PackResult(report, target, report.sha256 or "")


def _checked(options: PackOptions | None) -> PackOptions:
    options = options or PackOptions()
    low, high = MAX_SIDE_RANGE
    if not low <= options.max_side <= high:
        raise ValidationError(f"max side {options.max_side} is outside {low}-{high}", field="max_side",
                              hint="1024 suits FLUX and SDXL LoRAs")
    if not 1 <= options.min_side <= options.max_side:
        raise ValidationError(f"min side {options.min_side} must be between 1 and the max side {options.max_side}",
                              field="min_side", hint="256 is a sensible floor")
    if options.min_images < 1 or (options.workers is not None and options.workers < 1):
        raise ValidationError("min images and workers must be at least 1", field="min_images",
                              hint="leave them unset for the defaults")
    return replace(options, trigger_word=captions.check_trigger_word(options.trigger_word))


def _unusable(report: DatasetReport) -> ValidationError:
    reasons = "; ".join(f"{r.source}: {r.reason}" for r in report.rejections[:3])
    more = f" (and {len(report.rejections) - 3} more)" if len(report.rejections) > 3 else ""
    found = f"{len(report.images)} usable images, at least {report.options.min_images} needed" \
        if report.images else "no usable images"
    return ValidationError(
        f"{report.source} has {found}" + (f": {reasons}{more}" if reasons else ""),
        path=report.source, accepted=len(report.images), rejected=len(report.rejections),
        hint="fix or replace the files `hubferry dataset check` lists as rejected",
    )


@contextmanager
def _workspace(settings: Settings) -> Iterator[Path]:
    """A private work folder under ``home/work``, removed afterwards whatever happens."""
    root = settings.home / "work"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = Path(tempfile.mkdtemp(prefix="dataset-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _build(source: Path, zip_path: Path, work: Path, options: PackOptions, settings: Settings,
           fetcher: Fetcher | None, progress: Progress | None) -> DatasetReport:
    kind = intake.detect_kind(source)
    if kind == "folder":
        found = intake.from_folder(source, settings)
    elif kind == "zip":
        found = intake.from_zip(source, work, settings)
    elif fetcher is not None:
        found = intake.from_url_list(source, work, settings, fetcher)
    else:
        with Fetcher(settings) as own:
            found = intake.from_url_list(source, work, settings, own)
    report = DatasetReport(str(source), kind, options, rejections=list(found.rejections),
                           skipped=list(found.skipped), warnings=list(found.warnings))
    out_dir = work / "normalised"
    out_dir.mkdir()
    tasks = [images.Task(i, str(c.path), str(out_dir), options.max_side, options.min_side,
                         settings.dataset_max_pixels) for i, c in enumerate(found.candidates)]
    accepted: list[tuple[intake.Candidate, images.Normalised]] = []
    by_sha: dict[str, str] = {}
    for done, outcome in enumerate(_normalise_all(tasks, options, settings), start=1):
        candidate = found.candidates[outcome.index]
        if isinstance(outcome, images.Refused):
            report.rejections.append(Rejection(candidate.source, outcome.code, outcome.reason))
        elif outcome.sha256 in by_sha:
            report.rejections.append(Rejection(candidate.source, "duplicate",
                                               f"the same picture as {by_sha[outcome.sha256]}"))
        else:
            by_sha[outcome.sha256] = candidate.source
            accepted.append((candidate, outcome))
        if progress:
            progress(done, len(tasks))
    members = _records(report, accepted)
    report.near_duplicates = _near_duplicates([(c.source, n.dhash) for c, n in accepted])
    if not found.candidates and not report.rejections:
        report.warnings.append("no image files were found (JPEG, PNG, WebP)")
    if report.usable:  # an unusable dataset gets no zip, so no digest either
        members.append(bundle.Member(MANIFEST_NAME, data=_manifest(report)))
        report.sha256 = bundle.write(zip_path, members)
        report.zip_size = zip_path.stat().st_size
    return report


def _normalise_all(tasks: Sequence[images.Task], options: PackOptions,
                   settings: Settings) -> Iterator[images.Normalised | images.Refused]:
    workers = options.workers or len(os.sched_getaffinity(0))
    if workers <= 1 or len(tasks) < POOL_MIN_IMAGES:
        yield from map(images.normalise, tasks)
        return
    context = multiprocessing.get_context("spawn")  # fork is unsafe in a threaded host (a worker, a server)
    chunk = max(1, min(8, len(tasks) // (workers * 4)))
    try:
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context, initializer=images.init_worker,
                                 initargs=(settings.dataset_max_pixels,)) as pool:
            yield from pool.map(images.normalise, tasks, chunksize=chunk)
    except BrokenProcessPool:
        raise PermanentError("an image decoder process died (out of memory, or a file crashed the decoder)",
                             category="file_error", hint="pack with one worker to find the file, and remove it") \
            from None


def _records(report: DatasetReport, accepted: list[tuple[intake.Candidate, images.Normalised]]) -> list[bundle.Member]:
    """Name the accepted images, attach their captions, and return the zip's image and caption members."""
    members: list[bundle.Member] = []
    used: set[str] = set()
    for candidate, image in accepted:
        stem = _unique(_safe_stem(intake.name_hint(candidate.source)), used)
        name = f"{stem}.{image.extension}"
        caption = _caption(report, candidate)
        if caption is not None:
            members.append(bundle.Member(f"{stem}.txt", data=caption.text.encode()))
        members.append(bundle.Member(name, path=Path(image.out_path)))
        report.images.append(ImageRecord(
            name=name, source=candidate.source, width=image.width, height=image.height,
            source_width=image.source_width, source_height=image.source_height,
            source_format=image.source_format, size=image.size, sha256=image.sha256,
            caption=caption.text if caption else None, trigger_inserted=bool(caption and caption.trigger_inserted),
        ))
    return members


def _caption(report: DatasetReport, candidate: intake.Candidate) -> captions.Caption | None:
    if candidate.caption is None:
        return None
    try:
        text = captions.clean(candidate.caption)
    except ValueError as exc:
        report.warnings.append(f"the caption of {candidate.source} was ignored: {exc}")
        return None
    return captions.with_trigger(text, report.options.trigger_word) if text else None


def _safe_stem(hint: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", hint).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_name).strip("._-")[:NAME_MAX_CHARS]
    return stem or "image"


def _unique(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3`` ... so that no two names differ only in case."""
    candidate, number = stem, 1
    while candidate.lower() in used:
        number += 1
        candidate = f"{stem}-{number}"
    used.add(candidate.lower())
    return candidate


def _near_duplicates(hashes: list[tuple[str, int]]) -> list[NearDuplicate]:
    pairs = []
    for i, (first, a) in enumerate(hashes):
        for second, b in hashes[i + 1:]:
            distance = (a ^ b).bit_count()
            if distance <= NEAR_DUPLICATE_BITS:
                pairs.append(NearDuplicate(first, second, distance))
    return pairs


def _manifest(report: DatasetReport) -> bytes:
    """``manifest.json``: every file with its size, sha256, source and dimensions. No timestamps, absolute
    paths or source kind, so the same files give the same bytes from anywhere, as a folder or as a zip."""
    files = []
    for image in report.images:
        stem = image.name.rsplit(".", 1)[0]
        files.append({
            "name": image.name, "size": image.size, "sha256": image.sha256, "source": image.source,
            "width": image.width, "height": image.height, "source_width": image.source_width,
            "source_height": image.source_height, "source_format": image.source_format,
            "caption": f"{stem}.txt" if image.caption is not None else None,
        })
    manifest = {
        "format": MANIFEST_FORMAT,
        "options": {"max_side": report.options.max_side, "min_side": report.options.min_side,
                    "trigger_word": report.options.trigger_word},
        "images": files,
        "captions": [
            {"name": f"{i.name.rsplit('.', 1)[0]}.txt", "size": len(i.caption.encode()),
             "sha256": _sha256(i.caption.encode()), "for": i.name}
            for i in report.images if i.caption is not None
        ],
    }
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
