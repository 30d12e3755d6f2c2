"""What a dataset check or pack is asked (:class:`PackOptions`) and what it found: the accepted images,
the rejections with reasons, and the totals.

These are plain dataclasses so the orchestrator can store ``report.to_dict()`` on a job and show it.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SourceKind = Literal["folder", "zip", "urls"]

#: Fewer accepted images than this is usable but earns a warning (a LoRA usually wants 10-30 photos).
RECOMMENDED_MIN_IMAGES = 10


@dataclass(frozen=True)
class PackOptions:
    """How a dataset is normalised and judged.

    Args:
        trigger_word: inserted into every caption that lacks it (``[trigger]`` placeholders are replaced).
        max_side: longest side of a normalised image, in pixels; larger images are scaled down.
        min_side: images whose shorter side is below this are rejected.
        min_images: fewer accepted images than this makes the dataset unusable.
        workers: processes decoding images; ``None``: one per available core (small datasets run inline).
    """

    trigger_word: str | None = None
    max_side: int = 1024
    min_side: int = 256
    min_images: int = 1
    workers: int | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One accepted image as it is stored in the zip."""

    name: str
    source: str
    width: int
    height: int
    source_width: int
    source_height: int
    source_format: str
    size: int
    sha256: str
    caption: str | None = None
    trigger_inserted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Rejection:
    """A file or URL left out of the dataset, and why.

    ``code`` is stable for programs (``corrupt``, ``too_small``, ``too_many_pixels``, ``format``,
    ``duplicate``, ``link``, ``too_large``, ``fetch``, ``refused_address``, ``content_type``, ``caption``);
    ``reason`` is the sentence shown to people, ending in what to do where that is not obvious.
    """

    source: str
    code: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class NearDuplicate:
    """Two accepted images that look alike (perceptual hashes ``distance`` bits apart of 64)."""

    first: str
    second: str
    distance: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DatasetReport:
    """Everything a check or a pack learned about one dataset.

    ``sha256`` and ``zip_size`` describe the deterministic zip (``check`` builds it too, in a temporary
    folder, so both commands report the same digest for the same input); both are ``None`` when the
    dataset is not usable, since no zip is written then.
    """

    source: str
    kind: SourceKind
    options: PackOptions
    images: list[ImageRecord] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    near_duplicates: list[NearDuplicate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sha256: str | None = None
    zip_size: int | None = None

    @property
    def usable(self) -> bool:
        """At least ``options.min_images`` images were accepted."""
        return len(self.images) >= max(1, self.options.min_images)

    @property
    def captioned(self) -> int:
        return sum(1 for image in self.images if image.caption is not None)

    @property
    def caption_coverage(self) -> float:
        """Share of accepted images that have a caption (0.0 when none was accepted)."""
        return round(self.captioned / len(self.images), 4) if self.images else 0.0

    def resolutions(self) -> dict[str, Any]:
        """Smallest, largest and median sides of the accepted images, before and after normalising."""
        if not self.images:
            return {}
        sources = [(i.source_width, i.source_height) for i in self.images]
        return {
            "min_side": min(min(w, h) for w, h in sources),
            "max_side": max(max(w, h) for w, h in sources),
            "median_long_side": int(statistics.median(max(w, h) for w, h in sources)),
            "output_max_side": max(max(i.width, i.height) for i in self.images),
            "downscaled": sum(1 for i in self.images if (i.width, i.height) != (i.source_width, i.source_height)),
        }

    def summary_warnings(self) -> list[str]:
        """The stored warnings plus those that follow from the totals."""
        notes = list(self.warnings)
        if self.images and len(self.images) < RECOMMENDED_MIN_IMAGES:
            notes.append(f"only {len(self.images)} images: a LoRA usually wants {RECOMMENDED_MIN_IMAGES}-30")
        for pair in self.near_duplicates:
            notes.append(f"{pair.first} and {pair.second} look nearly identical (distance {pair.distance}/64)")
        return notes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, as stored on jobs and printed by ``--json``."""
        return {
            "source": self.source,
            "kind": self.kind,
            "usable": self.usable,
            "counts": {
                "accepted": len(self.images), "rejected": len(self.rejections), "skipped": len(self.skipped),
                "near_duplicates": len(self.near_duplicates),
            },
            "captions": {
                "captioned": self.captioned, "coverage": self.caption_coverage,
                "trigger_word": self.options.trigger_word,
                "trigger_inserted": sum(1 for i in self.images if i.trigger_inserted),
            },
            "resolutions": self.resolutions(),
            "options": {"max_side": self.options.max_side, "min_side": self.options.min_side,
                        "min_images": self.options.min_images},
            "sha256": self.sha256,
            "zip_size": self.zip_size,
            "images": [i.to_dict() for i in self.images],
            "rejections": [r.to_dict() for r in self.rejections],
            "skipped": list(self.skipped),
            "near_duplicates": [n.to_dict() for n in self.near_duplicates],
            "warnings": self.summary_warnings(),
        }
