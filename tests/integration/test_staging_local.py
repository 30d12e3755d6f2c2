"""The ``local`` staging: dataset zips served by ``hubferry serve`` under HMAC-signed, expiring URLs,
fetched here through the real app (``create_app``) as a remote trainer would."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from hubferry import staging
from hubferry.api.app import create_app
from hubferry.config import Settings
from hubferry.errors import ConfigError, ValidationError
from hubferry.services.context import open_context
from hubferry.staging.local import LocalStaging

PUBLIC_URL = "http://testserver/"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", public_url=PUBLIC_URL, staging_ttl_s=600)


@pytest.fixture
def client(settings: Settings) -> TestClient:
    return TestClient(create_app(open_context(settings), run_consumer=False))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "dataset.zip"
    path.write_bytes(os.urandom(2 * 1024 * 1024 + 17))  # more than one streamed chunk
    return path


def _path_and_query(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


def test_the_signed_url_serves_the_exact_bytes_with_no_token(settings, client, dataset):
    store = staging.for_setting(settings, "runpod")  # auto: public_url set, so local
    staged = store.stage(dataset, key="job-1/dataset.zip")

    assert store.kind == "local"
    assert staged.url.startswith("http://testserver/staging/") and "exp=" in staged.url and "sig=" in staged.url
    response = client.get(staged.url)
    assert response.status_code == 200
    assert response.content == dataset.read_bytes()
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["cache-control"] == "no-store"
    assert abs(staged.expires_at.timestamp() - (time.time() + 600)) < 5


def test_staged_copies_and_the_signing_key_are_private(settings, dataset):
    staging.for_setting(settings, "runpod").stage(dataset, key="job-1/dataset.zip")

    key_file = settings.home / "keys" / "staging.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    files = settings.home / "staging" / "files"
    assert stat.S_IMODE(files.stat().st_mode) == 0o700
    assert [stat.S_IMODE(p.stat().st_mode) for p in files.iterdir()] == [0o600]


def test_a_tampered_or_missing_signature_is_refused(settings, client, dataset):
    staged = staging.for_setting(settings, "runpod").stage(dataset, key="job-1/dataset.zip")
    other = staging.for_setting(settings, "runpod").stage(dataset, key="job-2/dataset.zip")
    path, query = _path_and_query(staged.url)
    other_path, _ = _path_and_query(other.url)
    flipped = query["sig"][:-1] + ("0" if query["sig"][-1] != "0" else "1")

    attempts = {
        "flipped signature": (path, {**query, "sig": flipped}),
        "later expiry": (path, {**query, "exp": str(int(query["exp"]) + 3600)}),
        "no signature": (path, {"exp": query["exp"]}),
        "no expiry": (path, {"sig": query["sig"]}),
        "another file's name": (other_path, query),
        "non-ASCII signature": (path, {**query, "sig": "é" * 64}),
        "huge expiry": (path, {**query, "exp": "9" * 5000}),
    }
    for what, (url_path, params) in attempts.items():
        response = client.get(url_path, params=params)
        assert response.status_code == 403, what
        assert query["sig"] not in response.text
    assert client.get(staged.url).status_code == 200


def test_an_expired_signature_is_refused(settings, client, dataset):
    an_hour_ago = time.time() - 3600
    staged = LocalStaging(settings, clock=lambda: an_hour_ago).stage(dataset, key="job-1/dataset.zip")

    assert staged.expires_at.timestamp() < time.time()
    assert client.get(staged.url).status_code == 403


def test_path_traversal_names_are_refused_even_when_signed(settings, client, dataset):
    store = LocalStaging(settings)
    store.stage(dataset, key="job-1/dataset.zip")
    secret = (settings.home / "keys" / "staging.key").read_bytes().strip()
    # A file in the folder whose name staging never gives out (an upload in progress looks like this).
    (store.folder / ".incoming.x").write_bytes(secret)
    exp = int(time.time()) + 600
    for name in ["../keys/staging.key", "..%2Fkeys%2Fstaging.key", "%2e%2e%2fkeys%2fstaging.key", "..",
                 ".incoming.x", "0123456789abcdef-a/../../keys/staging.key", "0123456789abcdef-a%00.zip",
                 "0123456789abcdef-" + "a" * 300]:
        signed = f"/staging/{name}?exp={exp}&sig={store.signature(name, exp)}"
        response = client.get(signed)
        if client.build_request("GET", signed).url.path.startswith("/staging/"):
            assert response.status_code in (403, 404), name
        # else the client resolved the dot segments itself ("/staging/.." is "/"): not a staging request
        assert secret not in response.content, name


def test_keys_that_could_escape_are_refused_when_staging(settings, dataset):
    store = staging.for_setting(settings, "runpod")
    for key in ["../x.zip", "a/../../x.zip", "/abs.zip", ".hidden", "a//b", "a\\b", "a b", "", "é.zip"]:
        with pytest.raises(ValidationError):
            store.stage(dataset, key=key)
    assert not any((settings.home / "staging" / "files").glob("*"))


def test_a_symlink_in_the_staging_folder_is_not_followed(settings, client, dataset, tmp_path):
    store = LocalStaging(settings)
    store.stage(dataset, key="job-1/dataset.zip")  # creates the folder and the key
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not for trainers")
    name = "0123456789abcdef-link.zip"
    (store.folder / name).symlink_to(secret)
    exp = int(time.time()) + 600

    response = client.get(f"/staging/{name}?exp={exp}&sig={store.signature(name, exp)}")

    assert response.status_code == 404
    assert b"not for trainers" not in response.content


def test_a_symlinked_staging_folder_is_not_followed(settings, client, dataset, tmp_path):
    store = LocalStaging(settings)
    staged = store.stage(dataset, key="job-1/dataset.zip")
    elsewhere = tmp_path / "elsewhere"
    store.folder.rename(elsewhere)
    store.folder.symlink_to(elsewhere, target_is_directory=True)

    assert client.get(staged.url).status_code == 404


def test_a_fifo_is_not_served_and_does_not_hang_the_server(settings, client, dataset):
    store = LocalStaging(settings)
    store.stage(dataset, key="job-1/dataset.zip")
    name = "0123456789abcdef-pipe.zip"
    os.mkfifo(store.folder / name)
    exp = int(time.time()) + 600

    assert client.get(f"/staging/{name}?exp={exp}&sig={store.signature(name, exp)}").status_code == 404


def test_a_deleted_file_is_gone_and_deleting_again_is_fine(settings, client, dataset):
    staged = staging.for_setting(settings, "runpod").stage(dataset, key="job-1/dataset.zip")

    staging.delete(settings, staged.ref)

    assert client.get(staged.url).status_code == 404
    assert list((settings.home / "staging" / "files").iterdir()) == []
    staging.delete(settings, staged.ref)


def test_cleanup_deletes_expired_files_only(settings, client, dataset):
    long_ago = time.time() - 3600
    old = LocalStaging(settings, clock=lambda: long_ago).stage(dataset, key="old/dataset.zip")
    fresh = staging.for_setting(settings, "runpod").stage(dataset, key="fresh/dataset.zip")

    assert staging.cleanup(settings) == 1

    files = [p.name for p in (settings.home / "staging" / "files").iterdir()]
    assert files == [fresh.ref.removeprefix("local:")]
    assert client.get(fresh.url).status_code == 200
    assert old.ref.removeprefix("local:") not in files
    assert staging.cleanup(settings) == 0


def test_the_signing_key_is_kept_across_restarts_and_revoked_by_deleting_it(settings, dataset):
    staged = staging.for_setting(settings, "runpod").stage(dataset, key="job-1/dataset.zip")
    assert TestClient(create_app(open_context(settings), run_consumer=False)).get(staged.url).status_code == 200

    (settings.home / "keys" / "staging.key").unlink()

    assert TestClient(create_app(open_context(settings), run_consumer=False)).get(staged.url).status_code == 403


def test_without_a_public_url_local_staging_names_the_setting(tmp_path, dataset):
    settings = Settings(home=tmp_path / "home", staging="local")
    with pytest.raises(ConfigError) as caught:
        staging.for_setting(settings, "runpod").stage(dataset, key="job-1/dataset.zip")
    assert caught.value.setting == "HUBFERRY_PUBLIC_URL"
