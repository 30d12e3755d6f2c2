"""One image through the normaliser: what comes out, and what is refused with which reason."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageCms

from hubferry.dataset import images
from hubferry.dataset.testing import photo

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def _task(path: Path, tmp_path: Path, *, max_side: int = 1024, min_side: int = 256,
          max_pixels: int = 40_000_000) -> images.Task:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return images.Task(0, str(path), str(out), max_side, min_side, max_pixels)


def _normalised(path: Path, tmp_path: Path, **limits: int) -> tuple[images.Normalised, Image.Image]:
    outcome = images.normalise(_task(path, tmp_path, **limits))
    assert isinstance(outcome, images.Normalised), outcome
    image = Image.open(outcome.out_path)
    image.load()
    return outcome, image


def _refused(path: Path, tmp_path: Path, **limits: int) -> images.Refused:
    outcome = images.normalise(_task(path, tmp_path, **limits))
    assert isinstance(outcome, images.Refused), outcome
    return outcome


def test_a_rotated_phone_photo_is_turned_upright_and_leaves_without_exif_or_gps(tmp_path):
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored sideways: turn 90 degrees clockwise to view
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    src = photo(tmp_path / "sideways.jpg", size=(600, 400), exif=exif)
    assert Image.open(src).getexif().get_ifd(GPS_IFD), "the test photo must carry GPS data"

    outcome, image = _normalised(src, tmp_path)

    assert (image.width, image.height) == (400, 600)
    assert (outcome.source_width, outcome.source_height) == (400, 600)
    assert len(image.getexif()) == 0
    data = Path(outcome.out_path).read_bytes()
    assert b"Exif" not in data and b"PhoneMaker" not in data
    assert "icc_profile" not in image.info


def test_a_large_jpeg_is_scaled_to_max_side_and_saved_as_rgb_jpeg_quality_95(tmp_path):
    src = photo(tmp_path / "big.jpg", size=(2400, 1600))
    outcome, image = _normalised(src, tmp_path, max_side=1024)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (1024, 683))
    assert (outcome.source_width, outcome.source_height) == (2400, 1600)
    assert outcome.extension == "jpg"


def test_transparent_png_stays_png_with_its_transparency_flattened_onto_white(tmp_path):
    src = photo(tmp_path / "cut-out.png", size=(400, 400), mode="RGBA")
    outcome, image = _normalised(src, tmp_path)
    assert (image.format, image.mode, outcome.extension) == ("PNG", "RGB", "png")
    assert image.getpixel((5, 5)) == images.BACKGROUND


def test_webp_and_greyscale_and_cmyk_sources_come_out_as_rgb_jpeg(tmp_path):
    for name, mode in (("a.webp", "RGB"), ("grey.jpg", "L"), ("print.jpg", "CMYK")):
        outcome, image = _normalised(photo(tmp_path / name, size=(300, 300), mode=mode), tmp_path)
        assert (image.format, image.mode) == ("JPEG", "RGB"), name


@pytest.mark.parametrize("space", ["sRGB", "LAB"])
def test_an_icc_profile_is_applied_not_carried_and_a_mismatched_one_does_not_fail_the_image(tmp_path, space):
    src = photo(tmp_path / "tagged.jpg", size=(300, 300),
                icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile(space)).tobytes())
    assert Image.open(src).info.get("icc_profile")
    _, image = _normalised(src, tmp_path)
    assert image.mode == "RGB"
    assert "icc_profile" not in image.info


def test_too_small_is_refused_with_its_size(tmp_path):
    refused = _refused(photo(tmp_path / "thumb.jpg", size=(300, 200)), tmp_path, min_side=256)
    assert refused.code == "too_small"
    assert "300x200" in refused.reason and "256" in refused.reason


def test_a_truncated_jpeg_is_refused_as_corrupt(tmp_path):
    whole = photo(tmp_path / "whole.jpg", size=(400, 300)).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[: len(whole) // 2])
    refused = _refused(cut, tmp_path)
    assert refused.code == "corrupt"
    assert "truncated" in refused.reason


def test_garbage_and_gif_are_refused_naming_what_they_are(tmp_path):
    garbage = tmp_path / "noise.jpg"
    garbage.write_bytes(b"\x00not an image at all" * 10)
    assert _refused(garbage, tmp_path).code == "corrupt"
    gif = tmp_path / "anim.jpg"
    Image.new("RGB", (300, 300)).save(gif, "GIF")
    refused = _refused(gif, tmp_path)
    assert refused.code == "format" and "GIF" in refused.reason and "JPEG or PNG" in refused.reason


def test_too_many_pixels_is_refused_before_decoding(tmp_path):
    src = photo(tmp_path / "wide.png", size=(1000, 500))
    refused = _refused(src, tmp_path, max_pixels=400_000)
    assert refused.code == "too_many_pixels"
    assert "500,000 pixels" in refused.reason and "before decoding" in refused.reason


def test_outputs_are_deterministic(tmp_path):
    src = photo(tmp_path / "p.jpg", size=(1500, 900), seed=3)
    first = _normalised(src, tmp_path)[0]
    second = images.normalise(images.Task(1, str(src), str(tmp_path / "out"), 1024, 256, 40_000_000))
    assert isinstance(second, images.Normalised)
    assert (first.sha256, first.size, first.dhash) == (second.sha256, second.size, second.dhash)


def test_dhash_is_close_for_a_re_encoded_copy_and_far_for_another_picture(tmp_path):
    original = Image.open(photo(tmp_path / "a.png", size=(640, 480), seed=1)).convert("RGB")
    buffer = io.BytesIO()
    original.resize((500, 375)).save(buffer, "JPEG", quality=70)
    copy = Image.open(buffer).convert("RGB")
    other = Image.open(photo(tmp_path / "b.png", size=(640, 480), seed=2)).convert("RGB")
    assert (images.dhash(original) ^ images.dhash(copy)).bit_count() <= 5
    assert (images.dhash(original) ^ images.dhash(other)).bit_count() > 10


@pytest.mark.parametrize("orientation", [3, 8])
def test_every_orientation_is_applied(tmp_path, orientation):
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    _, image = _normalised(photo(tmp_path / "o.jpg", size=(600, 400), exif=exif), tmp_path)
    assert image.size == ((600, 400) if orientation == 3 else (400, 600))


def test_a_heic_photo_without_pillow_heif_is_refused_with_what_to_install(tmp_path):
    if images.heif_available():
        pytest.skip("pillow-heif is installed here")
    heic = tmp_path / "IMG_0001.HEIC"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    refused = _refused(heic, tmp_path)
    assert refused.code == "format" and "pillow-heif" in refused.reason
