"""Cutting metadata out of a JPEG without re-encoding it: the pixels stay exactly, the metadata goes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from hubferry.dataset import images, jpeg
from hubferry.dataset.testing import photo

GPS_IFD = 0x8825
XMP = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:li>Paris, near home</rdf:li></x:xmpmeta>"


def _pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").tobytes()


def _tagged_jpeg(path: Path, **save) -> Path:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 29.0)})
    return photo(path, size=(640, 480), exif=exif, comment=b"shot at home", xmp=XMP, **save)


@pytest.mark.parametrize("save", [{}, {"progressive": True}, {"restart_marker_rows": 1}, {"subsampling": 0}])
def test_metadata_segments_go_and_the_pixels_stay(tmp_path, save):
    original = _tagged_jpeg(tmp_path / "p.jpg", **save).read_bytes()
    assert b"PhoneMaker" in original and b"Paris" in original and b"shot at home" in original

    stripped = jpeg.strip_metadata(original + b"trailing second picture")

    assert _pixels(stripped) == _pixels(original)
    for secret in (b"Exif", b"PhoneMaker", b"Paris", b"shot at home", b"trailing"):
        assert secret not in stripped
    assert stripped.endswith(b"\xff\xd9")


@pytest.mark.parametrize("data", [b"", b"\x89PNG", b"\xff\xd8\xff\xe1\xff\xff", b"\xff\xd8\xff\xda\x00\x02abc"])
def test_what_the_walk_does_not_understand_is_refused(data):
    with pytest.raises(ValueError):
        jpeg.strip_metadata(data)


def test_an_upright_jpeg_within_the_size_is_kept_bit_exact_minus_its_metadata(tmp_path):
    src = _tagged_jpeg(tmp_path / "p.jpg")
    out = tmp_path / "out"
    out.mkdir()
    result = images.normalise(images.Task(0, str(src), str(out), 1024, 256, 40_000_000))
    assert isinstance(result, images.Normalised)
    data = Path(result.out_path).read_bytes()
    assert _pixels(data) == _pixels(src.read_bytes())
    assert b"Exif" not in data and b"Paris" not in data
    assert result.size < src.stat().st_size
