"""Stored XSS on the registry's origin: uploaded HTML or SVG must never be rendered by a browser."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download

from hubferry.testing import RunningRegistry

SCRIPT = b"<html><script>fetch('/settings/tokens').then(r => r.text()).then(steal)</script></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(document.cookie)"/>'
#: A NUL in the first 512 bytes makes the sample binary, so this HTML goes through LFS.
LFS_HTML = b"<html>\x00" + SCRIPT + b"\x00" * 1000


@pytest.fixture
def hostile_repo(api: HfApi, repo_id: str) -> str:
    for path, data in (("evil.html", SCRIPT), ("evil.svg", SVG), ("big/evil.html", LFS_HTML)):
        api.upload_file(path_or_fileobj=data, path_in_repo=path, repo_id=repo_id)
    return repo_id


def _assert_inert(response: httpx2.Response) -> None:
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"].startswith("default-src 'none'; sandbox")


@pytest.mark.parametrize("path", ["evil.html", "evil.svg"])
def test_uploaded_markup_is_served_as_an_inert_download(
    hostile_repo: str, registry: RunningRegistry, path: str
) -> None:
    response = httpx2.get(f"{registry.endpoint}/{hostile_repo}/resolve/main/{path}", timeout=20)
    assert response.status_code == 200
    _assert_inert(response)


def test_lfs_markup_behind_the_redirect_is_inert_too(hostile_repo: str, registry: RunningRegistry) -> None:
    url = f"{registry.endpoint}/{hostile_repo}/resolve/main/big/evil.html"
    redirect = httpx2.get(url, timeout=20)
    assert redirect.status_code == 302
    blob = httpx2.get(redirect.headers["location"], timeout=20)
    assert blob.status_code == 200 and blob.content == LFS_HTML
    _assert_inert(blob)
    assert "filename*=UTF-8''evil.html" in blob.headers["content-disposition"]


def test_the_client_still_downloads_the_exact_bytes(
    hostile_repo: str, registry: RunningRegistry, alice_token: str, tmp_path: Path
) -> None:
    for path, data in (("evil.html", SCRIPT), ("big/evil.html", LFS_HTML)):
        local = hf_hub_download(hostile_repo, path, endpoint=registry.endpoint, token=alice_token)
        assert Path(local).read_bytes() == data
    snapshot = Path(snapshot_download(hostile_repo, endpoint=registry.endpoint, token=alice_token,
                                      cache_dir=tmp_path / "cache"))  # fmt: skip
    assert (snapshot / "evil.svg").read_bytes() == SVG


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("GET", "/health"),
        ("GET", "/api/models/{repo}"),
        ("GET", "/api/models/{repo}/tree/main"),
        ("GET", "/api/models/no/such-repo"),
        ("HEAD", "/{repo}/resolve/main/.gitattributes"),
        ("GET", "/{repo}/resolve/main/missing.txt"),
        ("POST", "/api/repos/create"),
        ("GET", "/lfs-blobs/0?sig=x"),
        ("GET", "/"),
        ("GET", "/{repo}"),
        ("GET", "/login"),
        ("GET", "/no/such/route/at/all"),
    ],
)
def test_every_answer_carries_nosniff_and_a_csp(
    registry: RunningRegistry, repo_id: str, method: str, route: str
) -> None:
    response = httpx2.request(method, registry.endpoint + route.format(repo=repo_id), timeout=20)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    policy = response.headers["content-security-policy"]
    assert policy.startswith("default-src 'none'")
    if response.headers.get("content-type", "").startswith("text/html"):
        assert "script-src" not in policy and "unsafe-inline" not in policy and "form-action 'self'" in policy
    else:
        assert "sandbox" in policy
