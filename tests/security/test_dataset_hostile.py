"""Hostile datasets: archives that climb out or link out, zip and pixel bombs, broken images, and URL
lists aimed at this machine, its network or a metadata service. Each is refused with a clear error and
nothing is written outside the work folder (which is gone afterwards)."""

from __future__ import annotations

import socket
import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from hubferry import dataset
from hubferry.config import load_settings
from hubferry.dataset import archive
from hubferry.dataset.addresses import system_resolve
from hubferry.dataset.testing import ImageServer, photo, photos, static_resolver
from hubferry.errors import ValidationError


@pytest.fixture
def settings(tmp_path: Path):
    return load_settings(home=tmp_path / "home")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _refused_zip(tmp_path: Path, settings, build) -> ValidationError:
    """Build a zip with ``build(zf)``, check it, and return the refusal; asserts nothing else appeared."""
    bad = tmp_path / "in" / "bad.zip"
    bad.parent.mkdir()
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("fine.jpg", photo(tmp_path / "fine.jpg").read_bytes())
        build(zf)
    before = _files(tmp_path)
    with pytest.raises(ValidationError) as caught:
        dataset.pack(bad, tmp_path / "out.zip", settings=settings)
    after = _files(tmp_path)
    assert after - before <= {"home", "home/work"}, after - before
    assert list((settings.home / "work").iterdir()) == []
    assert caught.value.context["path"] == str(bad) and caught.value.hint
    return caught.value


@pytest.mark.parametrize("name", ["../../evil.jpg", "photos/../../evil.jpg", "..\\..\\evil.jpg"])
def test_zip_slip_entries_are_refused(tmp_path, settings, name):
    error = _refused_zip(tmp_path, settings, lambda zf: zf.writestr(name, b"\xff\xd8 payload"))
    assert "outside the archive" in error.message and error.context["entry"] == name
    assert not (tmp_path.parent / "evil.jpg").exists() and not (tmp_path / "evil.jpg").exists()


@pytest.mark.parametrize("kind", ["posix", "windows"])
def test_absolute_paths_in_a_zip_are_refused(tmp_path, settings, kind):
    target = tmp_path / "planted.jpg"
    name = str(target) if kind == "posix" else "C:\\Windows\\planted.jpg"
    error = _refused_zip(tmp_path, settings, lambda zf: zf.writestr(name, b"\xff\xd8 payload"))
    assert "absolute path" in error.message
    assert not target.exists()


def test_symlink_entries_in_a_zip_are_refused(tmp_path, settings):
    def add_link(zf: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo("passwd.jpg")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")

    error = _refused_zip(tmp_path, settings, add_link)
    assert "symbolic link" in error.message and error.context["entry"] == "passwd.jpg"


def test_a_zip_bomb_is_refused_before_extracting(tmp_path, settings):
    def add_bomb(zf: zipfile.ZipFile) -> None:
        zf.writestr(zipfile.ZipInfo("huge.png"), b"\x00" * (64 * 1024 * 1024), compress_type=zipfile.ZIP_DEFLATED)

    started = time.monotonic()
    error = _refused_zip(tmp_path, settings, add_bomb)
    assert "zip bomb" in error.message and f"more than {archive.ARCHIVE_MAX_RATIO}x" in error.message
    assert time.monotonic() - started < 10


def test_too_many_entries_or_bytes_in_a_zip_are_refused(tmp_path):
    small = load_settings(home=tmp_path / "home", dataset_max_images=2)

    def add_many(zf: zipfile.ZipFile) -> None:
        for i in range(10):
            zf.writestr(f"p{i}.jpg", b"x")

    assert "more than 4 images and captions" in _refused_zip(tmp_path, small, add_many).message


def test_a_link_in_a_folder_is_not_followed(tmp_path, settings):
    src = tmp_path / "photos"
    photos(src, 2)
    secret = photo(tmp_path / "outside" / "private.jpg", seed=9)
    (src / "private.jpg").symlink_to(secret)
    (src / "passwd.jpg").symlink_to("/etc/passwd")
    (src / "up").symlink_to(tmp_path / "outside", target_is_directory=True)

    result = dataset.pack(src, tmp_path / "out.zip", settings=settings)

    assert {(r.source, r.code) for r in result.report.rejections} == {
        ("private.jpg", "link"), ("passwd.jpg", "link"), ("up", "link")}
    assert "links are not followed" in result.report.rejections[0].reason
    with zipfile.ZipFile(result.zip_path) as zf:
        assert sorted(zf.namelist()) == ["manifest.json", "photo_000.jpg", "photo_001.jpg"]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels but holds almost no data: only its header is real."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def test_a_30000_by_30000_png_is_refused_from_its_header_without_decoding(tmp_path, settings):
    src = tmp_path / "photos"
    photos(src, 1)
    (src / "giant.png").write_bytes(_png_header_only(30000, 30000))

    started = time.monotonic()
    report = dataset.check(src, settings=settings)

    [rejection] = report.rejections
    assert (rejection.source, rejection.code) == ("giant.png", "too_many_pixels")
    assert "900000000" in rejection.reason.replace(",", "") and "before decoding" in rejection.reason
    assert time.monotonic() - started < 5
    assert report.usable


def test_a_real_decompression_bomb_png_is_refused_under_a_lower_pixel_limit(tmp_path):
    src = tmp_path / "photos"
    photos(src, 1)
    Image.new("L", (5000, 5000)).save(src / "zeros.png")  # 25 MP of zeros: a few KB on disk
    assert (src / "zeros.png").stat().st_size < 100_000
    report = dataset.check(src, settings=load_settings(home=tmp_path / "home", dataset_max_pixels=10_000_000))
    assert [(r.source, r.code) for r in report.rejections] == [("zeros.png", "too_many_pixels")]


def test_a_truncated_jpeg_is_rejected_by_name_and_the_rest_is_packed(tmp_path, settings):
    src = tmp_path / "photos"
    photos(src, 2)
    whole = (src / "photo_001.jpg").read_bytes()
    (src / "cut_short.jpg").write_bytes(whole[: len(whole) * 2 // 3])

    result = dataset.pack(src, tmp_path / "out.zip", settings=settings)

    assert [(r.source, r.code) for r in result.report.rejections] == [("cut_short.jpg", "corrupt")]
    assert "truncated" in result.report.rejections[0].reason
    assert len(result.report.images) == 2


def test_an_ssrf_url_list_is_refused_url_by_url_and_no_forbidden_address_is_contacted(tmp_path, settings):
    with ImageServer() as server:
        server.add("/ok.jpg", photo(tmp_path / "ok.jpg").read_bytes())
        server.redirect("/to-loopback", server.url("/ok.jpg"))  # http://127.0.0.1:PORT/ok.jpg
        server.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/iam/")
        server.redirect("/to-intranet", "http://intranet.test/secret.jpg")
        port = server.port
        urls = tmp_path / "urls.txt"
        urls.write_text("\n".join([
            f"http://photos.test:{port}/ok.jpg",
            f"http://photos.test:{port}/to-loopback",
            f"http://photos.test:{port}/to-metadata",
            f"http://photos.test:{port}/to-intranet",
            "http://intranet.test/secret.jpg",
            "http://metadata.test/latest/meta-data/",
            f"http://127.0.0.1:{port}/ok.jpg",
            f"http://[::1]:{port}/ok.jpg",
            f"http://[::ffff:127.0.0.1]:{port}/ok.jpg",
        ]) + "\n")
        resolver = static_resolver({"photos.test": ["127.0.0.1"], "intranet.test": ["10.0.0.5"],
                                    "metadata.test": ["169.254.169.254"]})
        only_photos = load_settings(home=tmp_path / "home", fetch_allow_hosts=("photos.test",))
        fetcher = dataset.Fetcher(only_photos, resolve=resolver)

        result = dataset.pack(urls, tmp_path / "out.zip", settings=only_photos, fetcher=fetcher)

        requests = list(server.requests)

    report = result.report
    assert [i.source for i in report.images] == [f"http://photos.test:{port}/ok.jpg"]
    reasons = {r.source.split("/", 3)[-1] + "@" + r.source.split("/")[2]: r.reason for r in report.rejections}
    assert all(r.code == "refused_address" for r in report.rejections), report.rejections
    assert len(report.rejections) == 8
    assert "127.0.0.1: a loopback address" in reasons[f"to-loopback@photos.test:{port}"]
    assert "cloud metadata" in reasons[f"to-metadata@photos.test:{port}"]
    assert "intranet.test (10.0.0.5): a private address" in reasons[f"to-intranet@photos.test:{port}"]
    assert "private" in reasons["secret.jpg@intranet.test"]
    assert "cloud metadata" in reasons["latest/meta-data/@metadata.test"]
    assert "loopback" in reasons[f"ok.jpg@127.0.0.1:{port}"] and "loopback" in reasons[f"ok.jpg@[::1]:{port}"]
    assert "HUBFERRY_FETCH_ALLOW_HOSTS" in reasons[f"ok.jpg@127.0.0.1:{port}"]
    # Only the allowed host was contacted, and every time by the name the guard approved.
    assert sorted(requests) == sorted([("/ok.jpg", f"photos.test:{port}"), ("/to-loopback", f"photos.test:{port}"),
                                       ("/to-metadata", f"photos.test:{port}"),
                                       ("/to-intranet", f"photos.test:{port}")])


def test_allowing_127_0_0_1_explicitly_lets_a_local_server_be_used(tmp_path):
    allowed = load_settings(home=tmp_path / "home", fetch_allow_hosts=("127.0.0.1",))
    with ImageServer() as server:
        urls = tmp_path / "urls.txt"
        urls.write_text(server.add("/a.jpg", photo(tmp_path / "a.jpg").read_bytes()) + "\n" +
                        server.redirect("/meta", "http://169.254.169.254/") + "\n")
        report = dataset.check(urls, settings=allowed)
    assert [i.name for i in report.images] == ["a.jpg"]
    assert [(r.code, "metadata" in r.reason) for r in report.rejections] == [("refused_address", True)]


@pytest.mark.parametrize("host", ["2130706433", "0x7f.0.0.1", "127.1"])
def test_numeric_spellings_of_loopback_resolve_to_it_and_are_refused(tmp_path, settings, host):
    try:
        addresses = system_resolve(host, 80)
    except socket.gaierror:
        pytest.skip(f"this resolver does not read {host} as an address")
    fetcher = dataset.Fetcher(settings)
    with pytest.raises(ValidationError, match="loopback"):
        fetcher.fetch(f"http://{host}/x.jpg", tmp_path / "f")
    assert addresses == ["127.0.0.1"]
