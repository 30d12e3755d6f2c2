"""``hubferry dataset check|pack`` as a user runs them: exit codes, the report, the zip, --json."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from hubferry.dataset.testing import ImageServer, photo, photos


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "HUBFERRY_HOME": str(tmp_path / "home")}
    env.pop("HUBFERRY_FETCH_ALLOW_HOSTS", None)
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hubferry", "dataset", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_check_prints_a_report_and_exits_0_for_a_usable_dataset(tmp_path, env):
    src = tmp_path / "photos"
    photos(src, 3)
    (src / "photo_000.txt").write_text("TOK in the park")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")

    result = _run(env, "check", str(src), "--trigger-word", "TOK", "--json")

    assert result.returncode == 0, result.stderr
    assert "3 images accepted, 1 rejected" in result.stderr
    assert "rejected broken.jpg:" in result.stderr
    assert "captions: 1/3 (33%)" in result.stderr
    [line] = result.stdout.splitlines()
    report = json.loads(line)
    assert report["usable"] is True and report["counts"]["accepted"] == 3 and len(report["sha256"]) == 64
    assert not (tmp_path / "home" / "work").exists() or not any((tmp_path / "home" / "work").iterdir())


def test_check_exits_2_when_nothing_is_usable(tmp_path, env):
    src = tmp_path / "photos"
    photo(src / "small.jpg", size=(120, 90))

    result = _run(env, "check", str(src), "--json")

    assert result.returncode == 2
    assert json.loads(result.stdout)["usable"] is False
    assert "120x90" in result.stderr and "not usable" in result.stderr


def test_pack_writes_the_zip_whose_sha256_the_report_gives(tmp_path, env):
    src = tmp_path / "photos"
    photos(src, 2, size=(1200, 900))
    out = tmp_path / "out" / "data.zip"

    result = _run(env, "pack", str(src), "-o", str(out), "--trigger-word", "TOK", "--max-side", "512", "--json")

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["zip_path"] == str(out)
    assert data["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"wrote {out}" in result.stderr
    with zipfile.ZipFile(out) as zf:
        assert Image.open(io.BytesIO(zf.read("photo_000.jpg"))).size == (512, 384)
        assert json.loads(zf.read("manifest.json"))["options"]["trigger_word"] == "TOK"


def test_a_hostile_zip_exits_2_with_the_reason_and_a_next_step(tmp_path, env):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../../escape.jpg", b"x")

    result = _run(env, "pack", str(bad), "-o", str(tmp_path / "d.zip"), "--json")

    assert result.returncode == 2
    assert "outside the archive" in result.stderr and "next step:" in result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["category"] == "file_error" and error["path"] == str(bad)
    assert not (tmp_path / "d.zip").exists()


def test_bad_input_exits_2(tmp_path, env):
    missing = _run(env, "check", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad_side = _run(env, "check", str(tmp_path), "--max-side", "5")
    assert bad_side.returncode == 2 and "max side" in bad_side.stderr


def test_a_url_list_needs_the_allow_list_for_a_local_server(tmp_path, env):
    with ImageServer() as server:
        urls = tmp_path / "urls.txt"
        urls.write_text(server.add("/dog.jpg", photo(tmp_path / "dog.jpg").read_bytes()) + " a dog\n")

        refused = _run(env, "check", str(urls))
        allowed = _run({**env, "HUBFERRY_FETCH_ALLOW_HOSTS": '["127.0.0.1"]'}, "check", str(urls), "--json")

    assert refused.returncode == 2
    assert "loopback" in refused.stderr and "HUBFERRY_FETCH_ALLOW_HOSTS" in refused.stderr
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["images"][0]["caption"] == "a dog"
