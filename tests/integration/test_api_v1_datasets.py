"""``/api/v1/datasets``: uploads streamed to disk and capped, checked by the dataset packer, small cached
thumbnails of the packed images, each dataset its uploader's; and an upload used by a Replicate job."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from PIL import Image

from fakes.api_v1 import api_context
from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app


def _zip(images: int = 3, size: tuple[int, int] = (320, 400)) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(images):
            picture = io.BytesIO()
            Image.new("RGB", size, (40 * n, 120, 200 - 30 * n)).save(picture, "JPEG")
            archive.writestr(f"photo_{n}.jpg", picture.getvalue())
        archive.writestr("photo_0.txt", "a photo of [trigger] at the beach")
    return buffer.getvalue()


@pytest.fixture
def ctx(tmp_path):
    return api_context(tmp_path, dataset_max_bytes=400_000)


@pytest.fixture
def app(ctx):
    return create_app(ctx, run_consumer=False)


@pytest.fixture
def users(ctx):
    return TestUsers(ctx.jobs.engine)


def _nothing_left(ctx) -> bool:
    folder = ctx.settings.home / "uploads" / "ann"
    return not folder.exists() or not any(folder.iterdir())


def _upload(client, data: bytes, name: str = "set.zip"):
    return client.post("/api/v1/datasets", files={"file": (name, data, "application/zip")})


def test_an_upload_is_stored_checked_and_shown_as_thumbnails(app, ctx, users):
    ann = users.token_client(app, "ann")
    data = _zip()
    uploaded = _upload(ann, data, name="../../beach photos.zip")
    assert uploaded.status_code == 201, uploaded.text
    shown = uploaded.json()
    assert shown["sha256"] == hashlib.sha256(data).hexdigest() and shown["size"] == len(data)
    assert shown["filename"] == "beach photos.zip" and shown["kind"] == "zip" and shown["report"] is None
    folder = ctx.settings.home / "uploads" / "ann" / shown["id"]
    assert (folder / "dataset.zip").read_bytes() == data
    assert ann.get("/api/v1/datasets").json()["datasets"] == [shown]

    checked = ann.post(f"/api/v1/datasets/{shown['id']}/check", json={"trigger_word": "TOK", "max_side": 256})
    assert checked.status_code == 200, checked.text
    report = checked.json()["report"]
    assert report["usable"] and report["counts"]["accepted"] == 3 and report["source"] == "beach photos.zip"
    assert report["captions"]["trigger_word"] == "TOK" and str(ctx.settings.home) not in checked.text
    assert ann.get(f"/api/v1/datasets/{shown['id']}").json()["report"] == report

    first = report["images"][0]
    thumbnail = ann.get(first["thumbnail"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumbnail.content)) as image:
        assert image.format == "JPEG" and max(image.size) <= 256
    cached = next((folder / "thumbs").iterdir())
    made = cached.stat().st_mtime_ns
    assert ann.get(first["thumbnail"]).content == thumbnail.content and cached.stat().st_mtime_ns == made
    assert ann.get(f"/api/v1/datasets/{shown['id']}/thumbnails/not-in-the-set.jpg").status_code == 404

    assert ann.delete(f"/api/v1/datasets/{shown['id']}").status_code == 204
    assert ann.get(f"/api/v1/datasets/{shown['id']}").status_code == 404 and not folder.exists()


def test_an_unusable_dataset_is_reported_not_refused(app, users):
    ann = users.token_client(app, "ann")
    upload_id = _upload(ann, _zip(images=2, size=(64, 64))).json()["id"]
    report = ann.post(f"/api/v1/datasets/{upload_id}/check").json()["report"]
    assert report["usable"] is False and report["counts"]["rejected"] == 2
    assert {r["code"] for r in report["rejections"]} == {"too_small"}


def test_an_upload_over_the_size_limit_is_a_413_and_leaves_nothing(app, ctx, users):
    ann = users.token_client(app, "ann")
    big = _zip(images=1) + b"\0" * 500_000
    refused = _upload(ann, big)
    assert refused.status_code == 413 and "400000" in refused.json()["error"]["message"]
    assert _nothing_left(ctx)


def test_an_upload_streamed_without_a_declared_length_is_cut_at_the_limit(app, ctx, users):
    ann = users.token_client(app, "ann")
    boundary = "hubferryboundary"

    def body():
        yield f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.zip\"\r\n\r\n".encode()
        for _ in range(100):
            yield b"\0" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    refused = ann.post("/api/v1/datasets", content=body(),
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert refused.status_code == 413
    assert _nothing_left(ctx)


@pytest.mark.parametrize(("kwargs", "status", "field"), [
    ({"content": b"just bytes", "headers": {"Content-Type": "application/zip"}}, 415, "file"),
    ({"files": {"other": ("x.zip", b"PK")}}, 422, "file"),
    ({"files": {"file": ("notes.txt", b"these are not URLs\n")}}, 422, "file"),
    ({"content": b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n\r\nPK",
      "headers": {"Content-Type": "multipart/form-data; boundary=b"}}, 422, "file"),
])
def test_malformed_uploads_are_refused_and_leave_nothing(app, ctx, users, kwargs, status, field):
    refused = users.token_client(app, "ann").post("/api/v1/datasets", **kwargs)
    assert refused.status_code == status, refused.text
    assert refused.json()["error"]["field"] == field
    assert _nothing_left(ctx)


def test_a_url_list_upload_is_kept_as_one(app, users):
    listed = _upload(users.token_client(app, "ann"), b"https://images.example/a.jpg\nhttps://images.example/b.jpg\n",
                     name="urls.txt")
    assert listed.status_code == 201 and listed.json()["kind"] == "urls"


def test_a_replicate_job_uses_an_uploaded_dataset(tmp_path, fake_replicate, hf_env):
    ctx = api_context(tmp_path, replicate_base_url=fake_replicate.base_url)
    app = create_app(ctx, run_consumer=False)
    ann = TestUsers(ctx.jobs.engine).token_client(app, "ann")
    upload_id = _upload(ann, _zip()).json()["id"]
    created = ann.post("/api/v1/jobs", json={
        "trainer": "replicate", "dataset": {"upload_id": upload_id}, "trigger_word": "TOK", "steps": 10,
        "replicate_token": fake_replicate.token, "preflight": False, "name": "beach lora"})
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["trainer"] == "replicate" and job["owner"] == "ann"
    assert job["dataset_report"]["counts"]["accepted"] == 3
    assert fake_replicate.token not in created.text
