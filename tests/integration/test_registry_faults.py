"""Fault injection: retried huggingface_hub calls survive it, and a seed replays the same faults."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import get_session

from hubferry.registry.faults import FaultPlan
from hubferry.testing import running_registry

#: Routes huggingface_hub retries (commit, repo_info and paths-info are single attempts).
RETRIED_ROUTES = r"/preupload/|/info/lfs/|/lfs-storage/|/tree/"


def test_plan_is_deterministic_by_seed() -> None:
    def sequence(seed: int) -> list[str | None]:
        plan = FaultPlan(0.2, seed, ("500", "503", "429", "cut", "lost"))
        out = []
        for i in range(300):
            drawn = plan.draw("POST", f"/api/models/a/b/preupload/{i}")
            out.append(drawn[0] if drawn else None)
        return out

    first = sequence(11)
    assert first == sequence(11)
    assert first != sequence(12)
    hits = [kind for kind in first if kind]
    assert 30 <= len(hits) <= 90
    assert set(hits) == {"500", "503", "429", "cut", "lost"}


def test_pages_and_health_never_fail() -> None:
    plan = FaultPlan(1.0, 0, ("500",))
    for path in ("/", "/health", "/alice/demo", "/datasets/alice/demo"):
        assert plan.draw("GET", path) is None
    assert plan.draw("GET", "/api/whoami-v2") is not None
    assert plan.draw("GET", "/lfs-blobs/abc") is not None


def test_uploads_survive_20_percent_faults(tmp_path: Path, hf_env, fast_retries) -> None:
    settings = dict(
        multipart_threshold=512 * 1024, chunk_size=128 * 1024, tree_page_size=2,
        fault_rate=0.2, fault_seed=1234, fault_paths=RETRIED_ROUTES,
    )  # fmt: skip
    with running_registry(tmp_path / "hub", **settings) as hub:
        api = HfApi(endpoint=hub.endpoint, token=hub.create_token("alice"))
        api.create_repo("alice/flaky")
        folder = tmp_path / "model"
        folder.mkdir()
        contents = {f"shard-{i}.bin": os.urandom(300 * 1024 * (i + 1)) for i in range(4)}  # basic and multipart
        contents["config.json"] = b'{"a": 1}'
        for name, data in contents.items():
            (folder / name).write_bytes(data)
        api.upload_folder(folder_path=folder, repo_id="alice/flaky")
        tree = {f.path: f for f in api.list_repo_tree("alice/flaky", recursive=True)}
        for name, data in contents.items():
            if tree[name].lfs is not None:
                assert tree[name].lfs.sha256 == hashlib.sha256(data).hexdigest()
        assert hub.faults is not None and len(hub.faults.injected) >= 3
        kinds = {kind for kind, _, _ in hub.faults.injected}
        assert len(kinds) >= 2


def _replay(tmp_path: Path, seed: int) -> list[tuple[str, str, str]]:
    with running_registry(tmp_path, fault_rate=0.3, fault_seed=seed, fault_paths="/tree/", tree_page_size=1) as hub:
        api = HfApi(endpoint=hub.endpoint, token=hub.create_token("alice"))
        api.create_repo("alice/replay")
        for _ in range(5):
            assert [f.path for f in api.list_repo_tree("alice/replay")] == [".gitattributes"]
        assert hub.faults is not None
        return [(kind, method, path) for kind, method, path in hub.faults.injected]


def test_same_seed_replays_the_same_faults(tmp_path: Path, hf_env, fast_retries) -> None:
    first = _replay(tmp_path / "one", seed=99)
    assert first, "expected some faults at 30%"
    assert _replay(tmp_path / "two", seed=99) == first


def test_lost_response_commit_is_applied(tmp_path: Path, hf_env) -> None:
    with running_registry(tmp_path / "hub", fault_rate=1.0, fault_kinds="lost", fault_paths="/commit/") as hub:
        api = HfApi(endpoint=hub.endpoint, token=hub.create_token("alice"))
        api.create_repo("alice/lost")
        # The commit POST is not retried: the client sees a 503 or a dropped connection.
        with pytest.raises((HfHubHTTPError, httpx2.TransportError)):
            api.upload_file(path_or_fileobj=b"landed", path_in_repo="landed.txt", repo_id="alice/lost")
        assert "landed.txt" in api.list_repo_files("alice/lost")  # the commit happened despite the error


@pytest.mark.parametrize("kind", ["500", "503", "429", "cut"])
def test_each_kind_reaches_the_client(tmp_path: Path, kind: str) -> None:
    with running_registry(tmp_path / "hub", fault_rate=1.0, fault_kinds=kind, fault_paths="/api/whoami") as hub:
        token = hub.create_token("alice")
        session = get_session()
        if kind == "cut":
            with pytest.raises((httpx2.RemoteProtocolError, httpx2.NetworkError)):
                session.get(f"{hub.endpoint}/api/whoami-v2", headers={"authorization": f"Bearer {token}"})
            return
        response = session.get(f"{hub.endpoint}/api/whoami-v2", headers={"authorization": f"Bearer {token}"})
        assert response.status_code == int(kind)
        assert response.headers["x-error-code"] == "InjectedFault"
        if kind == "429":
            assert response.headers["retry-after"] == "0"
            assert response.headers["ratelimit"] == '"api";r=0;t=0'
        assert session.get(f"{hub.endpoint}/health").status_code == 200


@pytest.mark.parametrize(("kind", "status", "content_type", "text"), [
    ("text429", 429, "text/plain", "Too Many Requests"),
    ("html502", 502, "text/html", "<title>502 Bad Gateway</title>"),
    ("html503", 503, "text/html", "Service Temporarily Unavailable"),
])
def test_proxy_kinds_answer_like_a_proxy_not_like_the_hub(tmp_path: Path, kind, status, content_type, text) -> None:
    with running_registry(tmp_path / "hub", fault_rate=1.0, fault_kinds=kind, fault_paths="/api/validate-yaml") as hub:
        response = httpx2.post(f"{hub.endpoint}/api/validate-yaml", json={"content": "# x", "repoType": "model"})
        assert response.status_code == status and response.headers["content-type"].startswith(content_type)
        assert text in response.text and "x-error-code" not in response.headers
        assert "retry-after" not in response.headers
        with pytest.raises(ValueError):
            response.json()  # what made huggingface_hub fail with JSONDecodeError


def test_proxy_kinds_are_known_to_the_settings_and_the_plan() -> None:
    from hubferry.registry.settings import FAULT_KINDS, RegistrySettings

    assert {"text429", "html502", "html503"} <= set(FAULT_KINDS)
    assert RegistrySettings(fault_kinds="text429,html503").fault_kinds == ("text429", "html503")
    plan = FaultPlan(1.0, 0, ("html502",))
    assert plan.draw("POST", "/api/models/a/b/commit/main") is not None
