"""``check`` and ``pack`` end to end on generated photos: the zip, its manifest, and the report."""

from __future__ import annotations

import io
import json
import os
import shutil
import types
import zipfile
from pathlib import Path

import httpx2
import pytest
from PIL import Image

from hubferry import dataset
from hubferry.config import load_settings
from hubferry.dataset import PackOptions, package
from hubferry.dataset.testing import photo, photos, static_resolver
from hubferry.errors import ValidationError


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(home=tmp_path / "home")


def _work_left(settings) -> list[str]:
    work = settings.home / "work"
    return os.listdir(work) if work.exists() else []


def _zip(path: Path) -> tuple[list[str], dict]:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist(), json.loads(zf.read("manifest.json"))


def test_a_folder_with_captions_becomes_a_sorted_zip_with_manifest_and_trigger_words(tmp_path, settings):
    src = tmp_path / "photos"
    photos(src, 3, size=(1600, 1200))
    (src / "photo_000.txt").write_text("a dog on a beach\n")
    (src / "photo_001.txt").write_text("TOK running")
    (src / "notes.md").write_text("shot in May")
    (src / "orphan.txt").write_text("no image for me")

    result = dataset.pack(src, tmp_path / "out" / "data.zip", PackOptions(trigger_word="TOK"), settings)

    names, manifest = _zip(result.zip_path)
    assert names == sorted(names) == ["manifest.json", "photo_000.jpg", "photo_000.txt", "photo_001.jpg",
                                      "photo_001.txt", "photo_002.jpg"]
    with zipfile.ZipFile(result.zip_path) as zf:
        assert zf.read("photo_000.txt") == b"TOK, a dog on a beach"
        assert zf.read("photo_001.txt") == b"TOK running"
        assert Image.open(io.BytesIO(zf.read("photo_002.jpg"))).size == (1024, 768)
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    entry = manifest["images"][0]
    assert entry == {**entry, "name": "photo_000.jpg", "source": "photo_000.jpg", "width": 1024, "height": 768,
                     "source_width": 1600, "source_height": 1200, "caption": "photo_000.txt"}
    report = result.report.to_dict()
    json.dumps(report)
    assert report["counts"] == {"accepted": 3, "rejected": 0, "skipped": 2, "near_duplicates": 0}
    assert report["captions"] == {"captioned": 2, "coverage": 0.6667, "trigger_word": "TOK", "trigger_inserted": 1}
    assert report["resolutions"]["downscaled"] == 3
    assert report["skipped"] == ["notes.md", "orphan.txt"]
    assert result.sha256 == report["sha256"] and len(result.sha256) == 64
    assert _work_left(settings) == []


def test_the_same_photos_give_the_same_bytes_from_a_copy_a_zip_or_with_new_timestamps(tmp_path, settings):
    src = tmp_path / "photos"
    photos(src, 3)
    (src / "photo_001.txt").write_text("a cat")
    first = dataset.pack(src, tmp_path / "a.zip", settings=settings)

    copy = shutil.copytree(src, tmp_path / "elsewhere" / "copy")
    for path in copy.iterdir():
        os.utime(path, (1_000_000, 1_000_000))
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.iterdir(), reverse=True):
            zf.write(path, path.name)

    again = dataset.pack(src, tmp_path / "b.zip", settings=settings)
    from_copy = dataset.pack(copy, tmp_path / "c.zip", settings=settings)
    from_zip = dataset.pack(archive, tmp_path / "d.zip", settings=settings)
    checked = dataset.check(src, settings=settings)

    assert first.sha256 == again.sha256 == from_copy.sha256 == from_zip.sha256 == checked.sha256
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "d.zip").read_bytes()
    assert from_zip.report.kind == "zip"


def test_exact_duplicates_are_rejected_and_near_duplicates_reported(tmp_path, settings):
    src = tmp_path / "photos"
    photos(src, 3)
    shutil.copy(src / "photo_000.jpg", src / "same_again.jpg")
    Image.open(src / "photo_001.jpg").resize((480, 360)).save(src / "smaller_copy.jpg", quality=80)

    report = dataset.check(src, settings=settings)

    assert [(r.source, r.code) for r in report.rejections] == [("same_again.jpg", "duplicate")]
    assert "photo_000.jpg" in report.rejections[0].reason
    assert [(n.first, n.second) for n in report.near_duplicates] == [("photo_001.jpg", "smaller_copy.jpg")]
    assert any("look nearly identical" in w for w in report.summary_warnings())
    assert len(report.images) == 4


def test_names_are_made_safe_and_unique_ignoring_case(tmp_path, settings):
    src = tmp_path / "photos"
    photo(src / "a" / "Portrait.jpg", seed=1)
    photo(src / "b" / "portrait.png", seed=2)
    photo(src / "café à la plage.jpg", seed=3)

    report = dataset.check(src, settings=settings)

    assert sorted(i.name for i in report.images) == ["Portrait.jpg", "cafe_a_la_plage.jpg", "portrait-2.png"]


def test_nothing_usable_fails_the_pack_with_the_reasons_and_leaves_the_old_zip(tmp_path, settings):
    src = tmp_path / "photos"
    photo(src / "tiny.jpg", size=(100, 80))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    dest = tmp_path / "data.zip"
    dest.write_bytes(b"previous")

    report = dataset.check(src, settings=settings)
    assert not report.usable and report.to_dict()["usable"] is False
    assert report.sha256 is None and report.warnings == []
    with pytest.raises(ValidationError) as caught:
        dataset.pack(src, dest, settings=settings)

    assert "no usable images" in caught.value.message
    assert "tiny.jpg" in caught.value.message and "100x80" in caught.value.message
    assert caught.value.context["path"] == str(src) and caught.value.hint
    assert dest.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.zip", "home", "photos"]
    assert _work_left(settings) == []


def test_fewer_images_than_min_images_is_not_usable(tmp_path, settings):
    photos(tmp_path / "photos", 2)
    with pytest.raises(ValidationError, match="2 usable images, at least 5 needed"):
        dataset.pack(tmp_path / "photos", tmp_path / "d.zip", PackOptions(min_images=5), settings)


def test_dataset_limits_are_enforced_with_the_setting_named(tmp_path):
    src = tmp_path / "photos"
    photos(src, 3)
    with pytest.raises(ValidationError) as caught:
        dataset.check(src, settings=load_settings(home=tmp_path / "h", dataset_max_images=2))
    assert "3 images, more than 2" in caught.value.message and "HUBFERRY_DATASET_MAX_IMAGES" in caught.value.hint
    with pytest.raises(ValidationError) as caught:
        dataset.check(src, settings=load_settings(home=tmp_path / "h", dataset_max_bytes=1000))
    assert "HUBFERRY_DATASET_MAX_BYTES" in caught.value.hint


@pytest.mark.parametrize(("options", "field"), [
    (PackOptions(max_side=10), "max_side"), (PackOptions(min_side=2000), "min_side"),
    (PackOptions(trigger_word=" "), "trigger_word"), (PackOptions(workers=0), "min_images"),
])
def test_bad_options_are_refused_before_any_work(tmp_path, settings, options, field):
    with pytest.raises(ValidationError) as caught:
        dataset.check(tmp_path, options, settings)
    assert caught.value.context["field"] == field


@pytest.mark.parametrize("make", ["missing", "binary", "text"])
def test_a_source_of_no_known_kind_is_refused_saying_what_is_accepted(tmp_path, settings, make):
    source = tmp_path / "source"
    if make == "binary":
        source.write_bytes(os.urandom(100))
    elif make == "text":
        source.write_text("just some notes\nhttp://example.com/a.jpg\n")
    with pytest.raises(ValidationError) as caught:
        dataset.check(source, settings=settings)
    assert "folder" in caught.value.hint and "zip" in caught.value.hint and "URL" in caught.value.hint


def test_a_damaged_zip_is_called_a_damaged_zip(tmp_path, settings):
    broken = tmp_path / "photos.zip"
    broken.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValidationError) as caught:
        dataset.check(broken, settings=settings)
    assert "not a readable zip" in caught.value.message and "damaged or incomplete" in caught.value.hint


def test_a_url_list_is_fetched_with_captions_and_failures_listed(tmp_path, settings):
    jpeg = photo(tmp_path / "dog.jpg", seed=4).read_bytes()
    png = photo(tmp_path / "cat.png", seed=5).read_bytes()

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/dog.jpg":
            return httpx2.Response(200, content=jpeg, headers={"Content-Type": "image/jpeg"})
        if request.url.path == "/images/cat":
            return httpx2.Response(200, content=png, headers={"Content-Type": "application/octet-stream"})
        return httpx2.Response(404)

    urls = tmp_path / "urls.txt"
    urls.write_text("# my dataset\nhttps://photos.example/dog.jpg?sig=abc  a dog, outdoors\n\n"
                    "https://photos.example/images/cat\nhttps://photos.example/gone.jpg\n"
                    "https://photos.example/dog.jpg?sig=abc\n")
    fetcher = dataset.Fetcher(settings, transport=httpx2.MockTransport(handler),
                              resolve=static_resolver({"photos.example": ["93.184.216.34"]}))

    result = dataset.pack(urls, tmp_path / "d.zip", PackOptions(trigger_word="TOK"), settings, fetcher=fetcher)

    report = result.report
    assert report.kind == "urls"
    assert [(i.name, i.source, i.caption) for i in report.images] == [
        ("dog.jpg", "https://photos.example/dog.jpg?…", "TOK, a dog, outdoors"),
        ("cat.png", "https://photos.example/images/cat", None)]
    assert [(r.source, r.code) for r in report.rejections] == [
        ("https://photos.example/dog.jpg?…", "duplicate"), ("https://photos.example/gone.jpg", "fetch")]
    assert "HTTP 404" in report.rejections[1].reason
    assert "sig=abc" not in json.dumps(result.to_dict())
    assert _zip(result.zip_path)[0] == ["cat.png", "dog.jpg", "dog.txt", "manifest.json"]


def test_a_url_list_over_the_byte_budget_stops_fetching(tmp_path):
    sent: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(request.url.path)
        return httpx2.Response(200, content=b"\xff\xd8" + b"x" * 5000, headers={"Content-Type": "image/jpeg"})

    urls = tmp_path / "urls.txt"
    urls.write_text("".join(f"https://photos.example/{i}.jpg\n" for i in range(40)))
    settings = load_settings(home=tmp_path / "home", dataset_max_bytes=12_000)
    fetcher = dataset.Fetcher(settings, transport=httpx2.MockTransport(handler),
                              resolve=static_resolver({"photos.example": ["93.184.216.34"]}))
    with pytest.raises(ValidationError) as caught:
        dataset.check(urls, settings=settings, fetcher=fetcher)
    assert "HUBFERRY_DATASET_MAX_BYTES" in caught.value.hint
    assert len(sent) < 20


def test_a_process_pool_gives_the_same_zip_as_one_process(tmp_path, settings):
    src = tmp_path / "photos"
    photos(src, package.POOL_MIN_IMAGES, size=(320, 256))
    inline = dataset.check(src, PackOptions(workers=1), settings)
    pooled = dataset.check(src, PackOptions(workers=2), settings)
    assert len(pooled.images) == package.POOL_MIN_IMAGES
    assert pooled.sha256 == inline.sha256


def test_progress_is_reported_per_image(tmp_path, settings):
    photos(tmp_path / "photos", 3)
    seen: list[tuple[int, int]] = []
    dataset.check(tmp_path / "photos", settings=settings, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_the_public_surface_is_exactly_all():
    public = {name for name, value in vars(dataset).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public == set(dataset.__all__)
