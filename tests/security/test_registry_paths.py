"""Hostile file paths in commits, preupload and paths-info: escapes, hidden ``.git``, look-alike names."""

from __future__ import annotations

import base64
import json
import unicodedata

import pytest
from huggingface_hub import HfApi
from huggingface_hub.utils import get_session

from hubferry.registry.httperrors import HubHTTPError
from hubferry.registry.paths import repo_path
from hubferry.testing import RunningRegistry

HOSTILE = {
    "/etc/passwd": "absolute",
    "//etc/passwd": "absolute",
    "a/../../etc/passwd": "'..'",
    "../x": "'..'",
    "./x": "'.'",
    "a//b": "empty",
    "a/": "empty",
    ".git/config": ".git",
    ".GIT/config": ".git",
    "sub/.Git/hooks/post-checkout": ".git",
    ".git./config": ".git",
    ".git /config": ".git",
    ".git.. . /config": ".git",
    "a\\b": "backslash",
    "nul\x00.txt": "U+0000",
    "line\nbreak.txt": "U+000A",
    "carriage\r.txt": "U+000D",
    "tab\t.txt": "U+0009",
    "esc\x1b[31m.txt": "U+001B",
    "c1\x85.txt": "U+0085",
    "invoice\u202egpj.exe": "U+202E",
    "lre\u202a.txt": "U+202A",
    "isolate\u2066.txt": "U+2066",
    "pdi\u2069.txt": "U+2069",
    "x" * 256: "255 bytes",
    "\u00e9" * 128: "255 bytes",  # 128 characters, 256 bytes
    "/".join(["d"] * 65): "64 levels",
    "/".join(["d" * 200] * 6): "1024 bytes",
    "": "empty",
}


@pytest.mark.parametrize("path", list(HOSTILE), ids=[repr(p)[:40] for p in HOSTILE])
def test_the_validator_refuses(path: str) -> None:
    with pytest.raises(HubHTTPError) as caught:
        repo_path(path)
    assert caught.value.status == 400
    assert HOSTILE[path] in caught.value.message


@pytest.mark.parametrize("path", ["config.json", ".gitattributes", ".github/workflows/x.yml", "a/b/c.bin", "git/x",
                                  "caf\u00e9.txt", "x" * 255, "spaced name.txt", "..hidden", "a..b"])  # fmt: skip
def test_the_validator_accepts_ordinary_names(path: str) -> None:
    assert repo_path(path) == path


def test_names_are_stored_in_nfc() -> None:
    assert repo_path("cafe\u0301.txt") == "caf\u00e9.txt"
    assert repo_path("sub/", folder=True) == "sub"


def _commit(registry: RunningRegistry, token: str, repo_id: str, *ops: dict) -> object:
    lines = [{"key": "header", "value": {"summary": "hostile"}}, *ops]
    return get_session().post(
        f"{registry.endpoint}/api/models/{repo_id}/commit/main",
        content="\n".join(json.dumps(line) for line in lines).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/x-ndjson"},
    )


def _file(path: str, data: bytes = b"x") -> dict:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}


@pytest.mark.parametrize("path", ["/etc/passwd", ".GIT/config", "a/.git./x", "x\u202egpj.exe", "a\nb", "../up"])
def test_commit_refuses_hostile_paths_and_changes_nothing(
    registry: RunningRegistry, alice_token: str, repo_id: str, api: HfApi, path: str
) -> None:
    response = _commit(registry, alice_token, repo_id, _file("fine.txt"), _file(path))
    assert response.status_code == 400
    assert response.headers["x-error-code"] == "InvalidPath"
    assert "Invalid path in repo" in response.json()["error"]
    assert api.list_repo_files(repo_id) == [".gitattributes"]


def test_absolute_path_is_not_silently_stored_relative(
    registry: RunningRegistry, alice_token: str, repo_id: str, api: HfApi
) -> None:
    assert _commit(registry, alice_token, repo_id, _file("/etc/passwd")).status_code == 400
    assert "etc/passwd" not in api.list_repo_files(repo_id)


def test_deletes_with_hostile_paths_are_refused(registry: RunningRegistry, alice_token: str, repo_id: str) -> None:
    for op in ({"key": "deletedFile", "value": {"path": "/.gitattributes"}},
               {"key": "deletedFolder", "value": {"path": "../"}}):  # fmt: skip
        response = _commit(registry, alice_token, repo_id, op)
        assert response.status_code == 400 and response.headers["x-error-code"] == "InvalidPath"


def test_preupload_and_paths_info_refuse_hostile_paths(
    registry: RunningRegistry, alice_token: str, repo_id: str
) -> None:
    session = get_session()
    headers = {"authorization": f"Bearer {alice_token}"}
    preupload = session.post(
        f"{registry.endpoint}/api/models/{repo_id}/preupload/main",
        json={"files": [{"path": "/etc/passwd", "size": 1, "sample": ""}]},
        headers=headers,
    )
    paths_info = session.post(
        f"{registry.endpoint}/api/models/{repo_id}/paths-info/main", data={"paths": ["/etc/passwd"]}, headers=headers
    )
    for response in (preupload, paths_info):
        assert response.status_code == 400 and response.headers["x-error-code"] == "InvalidPath"


def test_two_unicode_spellings_of_a_name_are_one_file(
    registry: RunningRegistry, alice_token: str, repo_id: str, api: HfApi
) -> None:
    composed, decomposed = "caf\u00e9.txt", "cafe\u0301.txt"
    assert _commit(registry, alice_token, repo_id, _file(composed, b"one")).status_code == 200
    assert _commit(registry, alice_token, repo_id, _file(decomposed, b"two")).status_code == 200
    files = [f for f in api.list_repo_files(repo_id) if f != ".gitattributes"]
    assert files == [composed]
    (info,) = api.get_paths_info(repo_id, [decomposed])
    assert unicodedata.is_normalized("NFC", info.path) and info.size == 3
