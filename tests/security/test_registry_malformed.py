"""Malformed requests get a 4xx with a JSON message: never a 500, a hang or a dropped connection.

Each case below answered 500 (or dropped the connection) before the registry validated its input.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
from typing import Any

import httpx2
import pytest
from huggingface_hub import HfApi

from hubferry.registry.app import create_app
from hubferry.registry.security import HardenedResponses
from hubferry.registry.settings import RegistrySettings
from hubferry.testing import RunningRegistry

OID = hashlib.sha256(b"x").hexdigest()
JSON, NDJSON, LFS = "application/json", "application/x-ndjson", "application/vnd.git-lfs+json"

#: (route, content type, body); ``{repo}`` is a fresh repo of alice, ``{complete}`` a signed completion URL.
MALFORMED = [
    *[("/api/models/{repo}/paths-info/main", JSON, body) for body in (
        b"not json", b"[1, 2]", b'{"paths": "a"}', b'{"paths": [1]}', b'{"paths": ["a"], "expand": [1]}',
        b'{"paths": ["a"], "x": NaN}', b"\xff\xfe")],
    *[("/api/models/{repo}/preupload/main", JSON, body) for body in (
        b"not json", b"[]", b"null", b'{"files": {}}', b'{"files": [[]]}', b'{"files": [{"path": 1}]}',
        b'{"files": [{"path": "a", "size": "12"}]}', b'{"files": [{"path": "a", "size": 1e400}]}',
        b'{"files": [{"path": "a", "size": -1}]}', b'{"files": [{"path": "a", "size": true}]}',
        b'{"files": [{"path": "a", "size": 1, "sample": 5}]}', b'{"files": [{"path": "a", "size": 2.5}]}')],
    *[("/{repo}.git/info/lfs/objects/batch", LFS, body) for body in (
        b"not json", b"[]", b'{"operation": "steal", "objects": []}', b'{"operation": "upload", "objects": {}}',
        b'{"operation": "upload", "objects": [{"oid": 1, "size": 1}]}',
        b'{"operation": "upload", "objects": [{"oid": "' + OID.encode() + b'", "size": 1e400}]}',
        b'{"operation": "download", "objects": [null]}')],
    *[("/{repo}.git/info/lfs/objects/verify", LFS, body) for body in (
        b"not json", b"[]", b'{"oid": [], "size": 1}', b'{"oid": "' + OID.encode() + b'", "size": 1e400}')],
    *[("{complete}", LFS, body) for body in (
        b"not json", b"[]", b'{"oid": 1, "parts": []}', b'{"oid": "' + OID.encode() + b'", "parts": "x"}',
        b'{"oid": "' + OID.encode() + b'", "parts": [{"partNumber": "1", "etag": 5}]}',
        b'{"oid": "' + OID.encode() + b'", "parts": [{"partNumber": 1e400, "etag": "x"}]}',
        b'{"oid": "' + OID.encode() + b'", "parts": [{"partNumber": 1180591620717411303424, "etag": "x"}]}',
        b'{"oid": "' + OID.encode() + b'", "parts": [{"partNumber": 0, "etag": "x"}]}')],
    *[("/api/models/{repo}/commit/main", NDJSON, body) for body in (
        b"not json", b"[]", b'{"key": "file"}', b'{"key": "file", "value": []}', b'{"key": "nope", "value": {}}',
        b'{"key": "file", "value": {"path": 5}}', b'{"key": "header", "value": {"parentCommit": 5}}',
        b'{"key": "lfsFile", "value": {"path": "a", "oid": "' + OID.encode() + b'", "size": 1e400}}',
        b'{"key": "file", "value": {"path": "a", "content": "!!", "encoding": "base64"}}',
        b'{"key": "file", "value": {"path": "a", "encoding": "rot13"}}', b"\xff\xfe\n")],
    *[("/api/models/{repo}/branch/dev", JSON, body) for body in (
        b"not json", b"[]", b'{"startingPoint": 5}', b'{"startingPoint": "no-such-rev"}')],
    *[("/api/models/{repo}/tag/main", JSON, body) for body in (b"not json", b'{"tag": ["x"]}', b"{}")],
    *[("/api/repos/create", JSON, body) for body in (
        b"not json", b"[]", b"{}", b'{"name": 5}', b'{"name": "x", "private": "maybe"}', b'{"name": "a/b"}')],
    *[("/api/validate-yaml", JSON, body) for body in (
        b"not json", b"[]", b'{"content": 5}', b'{"content": "---\\n' + b"[" * 5000 + b'\\n---\\n"}')],
]  # fmt: skip


@pytest.fixture(scope="module")
def completion_url(registry: RunningRegistry) -> str:
    """A signed multipart completion URL (object above the session registry's 1 MiB threshold)."""
    token = registry.create_token("carla")
    client = httpx2.Client(timeout=20)
    client.post(f"{registry.endpoint}/api/repos/create", json={"name": "parts"},
                headers={"authorization": f"Bearer {token}"})  # fmt: skip
    batch = client.post(
        f"{registry.endpoint}/carla/parts.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": OID, "size": 2 * 1024 * 1024}]},
        headers={"authorization": f"Bearer {token}", "content-type": LFS},
    )
    return batch.json()["objects"][0]["actions"]["upload"]["href"]


@pytest.mark.parametrize(("route", "content_type", "body"), MALFORMED, ids=[f"{r}:{b[:40]!r}" for r, _, b in MALFORMED])
def test_malformed_body_is_a_4xx_with_a_message(
    registry: RunningRegistry, alice_token: str, repo_id: str, completion_url: str, route: str, content_type: str,
    body: bytes,
) -> None:  # fmt: skip
    url = completion_url if route == "{complete}" else registry.endpoint + route.format(repo=repo_id)
    headers = {"authorization": f"Bearer {alice_token}", "content-type": content_type}
    response = httpx2.post(url, content=body, timeout=20, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]
    assert response.headers["x-error-code"]


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("GET", "/api/models/{repo}/revision/{rev}"),
        ("GET", "/api/models/{repo}/tree/{rev}"),
        ("GET", "/api/models/{repo}/commits/{rev}"),
        ("GET", "/{repo}/resolve/{rev}/.gitattributes"),
        ("HEAD", "/{repo}/resolve/{rev}/.gitattributes"),
        ("POST", "/api/models/{repo}/preupload/{rev}"),
        ("POST", "/api/models/{repo}/commit/{rev}"),
        ("POST", "/api/models/{repo}/branch/{rev}"),
        ("DELETE", "/api/models/{repo}/tag/{rev}"),
    ],
)
@pytest.mark.parametrize("rev", ["ma%00in", "ma%0D%0ASet-Cookie:%20pwned=1", "%E2%80%AEniam"])
def test_control_characters_in_a_revision_never_reach_a_header(
    registry: RunningRegistry, alice_token: str, repo_id: str, method: str, route: str, rev: str
) -> None:
    body = b'{"files": []}' if route.endswith("preupload/{rev}") else b""
    response = httpx2.request(
        method, registry.endpoint + route.format(repo=repo_id, rev=rev), content=body, timeout=20,
        headers={"authorization": f"Bearer {alice_token}", "content-type": JSON},
    )  # fmt: skip
    assert 400 <= response.status_code < 500
    assert "set-cookie" not in response.headers
    for value in response.headers.values():
        assert not any(ord(c) < 32 and c != "\t" for c in value), value


def test_create_pr_when_refs_pr_1_already_exists(
    registry: RunningRegistry, alice_token: str, repo_id: str, api: HfApi
) -> None:
    # A branch may no longer be called refs/pr/...; data dirs from before may still hold one.
    refused = httpx2.post(f"{registry.endpoint}/api/models/{repo_id}/branch/refs%2Fpr%2F1", timeout=20,
                          headers={"authorization": f"Bearer {alice_token}"})  # fmt: skip
    assert refused.status_code == 400 and "refs/" in refused.json()["error"]
    with sqlite3.connect(registry.data_dir / "registry.sqlite3") as db:
        (pk,) = db.execute("SELECT id FROM repos WHERE namespace || '/' || name = ?", (repo_id,)).fetchone()
        (head,) = db.execute("SELECT commit_oid FROM refs WHERE repo_id = ? AND name = 'main'", (pk,)).fetchone()
        db.execute("INSERT INTO refs VALUES (?, 'refs/pr/1', 'branch', ?)", (pk, head))
    info = api.upload_file(path_or_fileobj=b"pr", path_in_repo="pr.txt", repo_id=repo_id, create_pr=True)
    assert info.pr_num == 2
    again = api.upload_file(path_or_fileobj=b"pr2", path_in_repo="pr.txt", repo_id=repo_id, create_pr=True)
    assert again.pr_num == 3


def _asgi(app: Any, method: str, path: str) -> tuple[dict[str, Any], bytes]:
    """Call an ASGI app in-process; returns the response start message and the body."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [],
        "server": ("127.0.0.1", 8480), "client": ("127.0.0.1", 50000),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except RuntimeError:
            pass  # re-raised for the server log after the answer was sent

    asyncio.run(run())
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_an_exception_outside_the_routes_still_gets_a_json_answer() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("a bug in a middleware")

    start, body = _asgi(HardenedResponses(broken), "GET", "/anything")
    headers = dict(start["headers"])
    assert start["status"] == 500
    assert headers[b"content-type"] == b"application/json"
    assert b"error" in body and b"a bug" not in body  # no internals leak to the client
    assert headers[b"x-content-type-options"] == b"nosniff"


def test_an_exception_in_a_route_gets_a_hub_shaped_json_500(tmp_path) -> None:
    app = create_app(RegistrySettings(data_dir=tmp_path))

    def explode() -> None:
        raise RuntimeError("boom")

    app.fastapi.add_api_route("/test/explode/now", explode)
    start, body = _asgi(app, "GET", "/test/explode/now")
    headers = dict(start["headers"])
    assert start["status"] == 500
    assert headers[b"x-error-code"] == b"InternalError"
    assert b'"error"' in body and b"boom" not in body


def test_random_bytes_to_every_write_route_are_4xx(registry: RunningRegistry, alice_token: str, repo_id: str) -> None:
    noise = os.urandom(4096)
    for route in ("/api/repos/create", f"/api/models/{repo_id}/preupload/main", f"/api/models/{repo_id}/commit/main",
                  f"/{repo_id}.git/info/lfs/objects/batch", f"/api/models/{repo_id}/paths-info/main"):  # fmt: skip
        for content_type in (JSON, NDJSON, "application/x-www-form-urlencoded"):
            headers = {"authorization": f"Bearer {alice_token}", "content-type": content_type}
            response = httpx2.post(registry.endpoint + route, content=noise, timeout=20, headers=headers)
            assert 400 <= response.status_code < 500, (route, content_type, response.text)
