"""Decoding, checking and normalising one image; runs in worker processes, so it imports little.

Normalised means: fully decoded (a truncated or corrupt file is refused), EXIF orientation applied,
every piece of metadata dropped (EXIF with GPS, XMP, comments; an ICC profile is applied, so the
pixels are sRGB), transparency flattened onto white, RGB, the longest side capped. PNG sources stay
PNG (lossless stays lossless); JPEG, WebP and HEIC become JPEG at quality 95 with full-resolution
colour (4:4:4), the form every trainer reads. A JPEG that needs none of these changes (upright, RGB,
sRGB, small enough) is not re-encoded at all: only its metadata segments are cut out (see
:mod:`hubferry.dataset.jpeg`), so its pixels stay exactly as they were.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from hubferry.dataset import jpeg

#: Pillow formats accepted (MPO is how Pillow names multi-picture JPEGs from phones and cameras).
FORMATS = ("JPEG", "PNG", "WEBP")
#: JPEG settings of normalised images: high quality, no chroma subsampling, deterministic.
JPEG_QUALITY = 95
#: PNG compression of normalised PNGs (zlib level; the output is the same for the same input).
PNG_COMPRESS_LEVEL = 6
#: One image file may be this large.
IMAGE_MAX_BYTES = 64 * 1024 * 1024
#: Colour transparency is flattened onto (trainers read RGB; black would be a worse guess).
BACKGROUND = (255, 255, 255)

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
#: First bytes of formats we do not take, to say what a refused file is.
_SIGNATURES = (
    (b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"8BPS", "PSD"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xff\x0a", "JPEG XL"), (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"%PDF", "PDF"), (b"<svg", "SVG"), (b"<?xml", "SVG/XML"), (b"<!DOCTYPE html", "HTML"), (b"<html", "HTML"),
    (b"PK\x03\x04", "zip archive"),
)


@dataclass(frozen=True)
class Task:
    """One image to normalise (picklable: it crosses into a worker process)."""

    index: int
    path: str
    out_dir: str
    max_side: int
    min_side: int
    max_pixels: int


@dataclass(frozen=True)
class Normalised:
    """An image that passed, as written to ``out_path``."""

    index: int
    out_path: str
    extension: str
    width: int
    height: int
    source_width: int
    source_height: int
    source_format: str
    size: int
    sha256: str
    dhash: int


@dataclass(frozen=True)
class Refused:
    """An image that did not pass: ``code`` for programs, ``reason`` for people."""

    index: int
    code: str
    reason: str


@functools.cache
def heif_available() -> bool:
    """Whether HEIC/HEIF photos can be read (the optional ``pillow-heif`` package is installed).

    Registering its opener is Pillow-wide, so it happens only when a HEIC file is met, once per process.
    """
    try:
        import pillow_heif  # type: ignore[import-not-found]  # optional, ships no stubs we install
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def init_worker(max_pixels: int) -> None:
    """Set up a worker process of ours: Pillow's own bomb limit follows the dataset's."""
    Image.MAX_IMAGE_PIXELS = max_pixels


def _sniff(fh: BinaryIO) -> str | None:
    fh.seek(0)
    head = fh.read(32)
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "AVIF" if brand.startswith(b"avi") else "HEIC" if brand.startswith((b"hei", b"mif", b"hev")) else None
    for signature, name in _SIGNATURES:
        if head.lower().startswith(signature.lower()):
            return name
    return None


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: which of two neighbouring pixels is brighter, on a 9x8 grey thumbnail.

    Near-identical pictures (re-encoded, resized, slightly edited) differ in a few bits only.
    """
    small = image.resize((9, 8), Image.Resampling.LANCZOS, reducing_gap=2.0).convert("L")
    pixels = small.tobytes()
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | (pixels[row * 9 + col] < pixels[row * 9 + col + 1])
    return bits


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels in sRGB: transparency flattened onto :data:`BACKGROUND`, an ICC profile applied."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image.info.pop("transparency", None)
        flat.info = dict(image.info)
        image = flat
    icc = image.info.get("icc_profile")
    if icc and image.mode in ("RGB", "CMYK", "L"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
            if converted is not None:
                image = converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken or mismatched profile: the pixels are used as they are
    return image if image.mode == "RGB" else image.convert("RGB")


def _fitted(width: int, height: int, max_side: int) -> tuple[int, int]:
    if max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _identify(task: Task, fh: BinaryIO) -> Image.Image | Refused:
    """The image, opened lazily (header only) by one of the accepted formats, or why it is not one."""
    try:
        return Image.open(fh, formats=FORMATS)
    except UnidentifiedImageError:
        kind = _sniff(fh)
    if kind == "HEIC":
        if heif_available():
            fh.seek(0)
            return Image.open(fh, formats=("HEIF",))
        return Refused(task.index, "format", "a HEIC photo: install pillow-heif to read it, or export it as JPEG")
    what = f"a {kind} file" if kind else "not an image Pillow can read"
    return Refused(task.index, "format" if kind else "corrupt",
                   f"{what}; only JPEG, PNG and WebP are taken: convert it to JPEG or PNG")


def _open(task: Task, fh: BinaryIO) -> Image.Image | Refused:
    size = os.fstat(fh.fileno()).st_size
    if size > IMAGE_MAX_BYTES:
        return Refused(task.index, "too_large", f"the file is {size // (1024 * 1024)} MiB, more than "
                       f"{IMAGE_MAX_BYTES // (1024 * 1024)} MiB; use a smaller image")
    try:
        image = _identify(task, fh)
    except Image.DecompressionBombError as exc:
        return Refused(task.index, "too_many_pixels", f"refused before decoding: {exc}")
    if isinstance(image, Refused):
        return image
    width, height = image.size
    if width * height > task.max_pixels:
        return Refused(task.index, "too_many_pixels", f"{width}x{height} is {width * height:,} pixels, more than "
                       f"{task.max_pixels:,} (refused before decoding); downscale it first")
    if min(width, height) < task.min_side:
        return Refused(task.index, "too_small", f"{width}x{height} is smaller than {task.min_side} pixels on its "
                       "short side; use a larger photo")
    return image


def normalise(task: Task) -> Normalised | Refused:
    """Decode, check and normalise ``task.path`` into ``task.out_dir``; never raises for a bad image.

    The file is opened without following a link (a folder is read in place, and a file could be swapped
    for a link after it was listed).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own pixel limit decides
        try:
            with os.fdopen(os.open(task.path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
                opened = _open(task, fh)
                if isinstance(opened, Refused):
                    return opened
                with opened as image:
                    return _normalise(task, image, fh)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as exc:
            return Refused(task.index, "corrupt", f"cannot be decoded ({exc}); the file is truncated or damaged: "
                           "export or download it again")


def _normalise(task: Task, image: Image.Image, fh: BinaryIO) -> Normalised:
    source_format = "JPEG" if image.format == "MPO" else str(image.format)
    width, height = image.size
    oriented = (height, width) if _swaps_sides(image) else (width, height)
    target = _fitted(*oriented, task.max_side)
    if source_format == "JPEG" and target != oriented:
        image.draft("RGB", target if oriented == (width, height) else (target[1], target[0]))  # DCT scaling
    image.load()  # a full decode: truncated or corrupt data fails here
    data = _kept_as_is(image, fh, source_format, target == oriented)
    if data is not None:
        extension, rgb = "jpg", image
    else:
        extension, rgb = ("png" if source_format == "PNG" else "jpg"), _to_rgb(_upright(image))
        if rgb.size != target:
            rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        data = _encoded(rgb, extension)
    out_path = Path(task.out_dir) / f"{task.index:06d}.{extension}"
    out_path.write_bytes(data)
    return Normalised(
        index=task.index, out_path=str(out_path), extension=extension, width=rgb.width, height=rgb.height,
        source_width=oriented[0], source_height=oriented[1], source_format=source_format,
        size=len(data), sha256=hashlib.sha256(data).hexdigest(), dhash=dhash(rgb),
    )


def _encoded(rgb: Image.Image, extension: str) -> bytes:
    rgb.info = {}  # no EXIF, XMP, ICC or comments leave the machine
    out = io.BytesIO()
    if extension == "png":
        rgb.save(out, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        rgb.save(out, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    return out.getvalue()


def _kept_as_is(image: Image.Image, fh: BinaryIO, source_format: str, fits: bool) -> bytes | None:
    """The source JPEG minus its metadata segments when nothing else has to change (upright, RGB, sRGB,
    within the size), so its pixels are kept exactly; ``None`` when it must be re-encoded."""
    if source_format != "JPEG" or image.mode != "RGB" or not fits or _orientation(image) != 1:
        return None
    icc = image.info.get("icc_profile")
    if icc and not _is_srgb(icc):
        return None
    fh.seek(0)
    try:
        stripped = jpeg.strip_metadata(fh.read())
        with Image.open(io.BytesIO(stripped), formats=("JPEG",)) as check:
            same = (check.size, check.mode) == (image.size, image.mode)
    except (ValueError, OSError, SyntaxError):
        return None
    return stripped if same else None


def _is_srgb(icc: bytes) -> bool:
    try:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except (ImageCms.PyCMSError, OSError, ValueError):
        return False
    return "srgb" in description.lower()


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except (ValueError, TypeError, OSError, SyntaxError):
        return 1  # unreadable EXIF: the picture is taken as it is stored


def _swaps_sides(image: Image.Image) -> bool:
    """The EXIF orientation turns the picture a quarter (5-8), so width and height trade places."""
    return _orientation(image) in (5, 6, 7, 8)


def _upright(image: Image.Image) -> Image.Image:
    """The picture turned as its EXIF orientation says (the EXIF itself is dropped later)."""
    if _orientation(image) == 1:
        return image
    return ImageOps.exif_transpose(image) or image
