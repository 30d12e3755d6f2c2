"""Denial of service against the registry: requests that made it build huge answers, recurse, or block.

The session registry uses a 256 KiB part size, so a large ``size`` in an LFS batch used to mean
millions of signed part URLs built on the event loop.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
import time

import httpx2
import pytest

from hubferry.registry.app import ROUTERS
from hubferry.testing import RunningRegistry

LFS = {"accept": "application/vnd.git-lfs+json", "content-type": "application/vnd.git-lfs+json"}
OID = hashlib.sha256(b"never sent").hexdigest()
#: Routes that must be ``async``: they stream the request body; their blocking steps run in threads.
STREAMING_ROUTES = {"commit", "put_object", "put_part", "validate_yaml"}


def _client() -> httpx2.Client:
    return httpx2.Client(timeout=20)


def _batch(registry: RunningRegistry, token: str, repo_id: str, objects: list[dict]) -> httpx2.Response:
    return _client().post(
        f"{registry.endpoint}/{repo_id}.git/info/lfs/objects/batch",
        json={"operation": "upload", "transfers": ["basic", "multipart"], "objects": objects},
        headers={**LFS, "authorization": f"Bearer {token}"},
    )


@pytest.mark.parametrize("size", [2**44, 2**70])
def test_lfs_batch_with_a_huge_size_is_refused_at_once(
    registry: RunningRegistry, alice_token: str, repo_id: str, size: int
) -> None:
    started = time.monotonic()
    response = _batch(registry, alice_token, repo_id, [{"oid": OID, "size": size}])
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    (obj,) = response.json()["objects"]
    assert "actions" not in obj
    assert "limit per file" in obj["error"]["message"]
    assert elapsed < 2, f"{elapsed:.1f} s to refuse one object"


def test_part_count_above_the_cap_is_refused(tmp_path, alice_token: str) -> None:
    from hubferry.testing import running_registry

    with running_registry(tmp_path, multipart_threshold=1024, chunk_size=1024, max_parts=10) as hub:
        token = hub.create_token("alice")
        _client().post(f"{hub.endpoint}/api/repos/create", json={"name": "parts"},
                       headers={"authorization": f"Bearer {token}"})  # fmt: skip
        objects = [{"oid": OID, "size": 10 * 1024}, {"oid": OID, "size": 10 * 1024 + 1}]
        ok, too_many = _batch(hub, token, "alice/parts", objects).json()["objects"]
    assert len([k for k in ok["actions"]["upload"]["header"] if k.isdigit()]) == 10
    assert "actions" not in too_many and "at most 10" in too_many["error"]["message"]


def test_a_batch_asking_for_too_many_part_urls_in_total_is_413(
    registry: RunningRegistry, alice_token: str, repo_id: str
) -> None:
    # 1000 objects of 1 GiB each are within every per-object limit, but need 4M part URLs together.
    objects = [{"oid": hashlib.sha256(str(i).encode()).hexdigest(), "size": 2**30} for i in range(1000)]
    started = time.monotonic()
    response = _batch(registry, alice_token, repo_id, objects)
    assert response.status_code == 413
    assert "part URLs" in response.json()["error"]
    assert time.monotonic() - started < 2


def test_the_event_loop_keeps_answering_while_a_batch_is_built(
    registry: RunningRegistry, alice_token: str, repo_id: str
) -> None:
    # 40 objects x 2,500 parts: a legitimate, heavy answer (100k signed URLs).
    objects = [{"oid": hashlib.sha256(str(i).encode()).hexdigest(), "size": 2500 * 256 * 1024} for i in range(40)]
    timings: dict[str, float] = {}

    def heavy() -> None:
        started = time.monotonic()
        assert _batch(registry, alice_token, repo_id, objects).status_code == 200
        timings["batch"] = time.monotonic() - started

    worker = threading.Thread(target=heavy)
    worker.start()
    time.sleep(0.05)
    started = time.monotonic()
    assert _client().get(f"{registry.endpoint}/health").status_code == 200
    timings["health"] = time.monotonic() - started
    worker.join()
    assert timings["batch"] > 0.2, "the batch was too quick to tell"
    assert timings["health"] < timings["batch"] / 2, timings


def test_every_async_route_is_a_streaming_route() -> None:
    """Audit: a route doing blocking work must be a sync ``def`` (run in the threadpool)."""
    endpoints = [route.endpoint for router in ROUTERS for route in router.routes]
    assert len(endpoints) > 30, "the registry's routes were not found"
    coroutine_routes = {endpoint.__name__ for endpoint in endpoints if inspect.iscoroutinefunction(endpoint)}
    assert coroutine_routes <= STREAMING_ROUTES, coroutine_routes - STREAMING_ROUTES


@pytest.mark.parametrize(
    "route",
    [
        "/api/repos/create",
        "/api/models/{repo}/preupload/main",
        "/api/models/{repo}/paths-info/main",
        "/api/models/{repo}/branch/deep",
        "/api/models/{repo}/tag/main",
        "/{repo}.git/info/lfs/objects/batch",
        "/{repo}.git/info/lfs/objects/verify",
        "/api/validate-yaml",
        "/api/models/{repo}/commit/main",
    ],
)
def test_json_nested_100000_deep_is_400_not_a_recursion_error(
    registry: RunningRegistry, alice_token: str, repo_id: str, route: str
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = _client().post(
        registry.endpoint + route.format(repo=repo_id),
        content=deep,
        headers={"authorization": f"Bearer {alice_token}", "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "nests deeper" in response.json()["error"]


def test_json_body_over_the_limit_is_413_before_it_is_read(
    registry: RunningRegistry, alice_token: str, repo_id: str
) -> None:
    limit = registry.settings.max_json_bytes
    body = b'{"files": [' + b" " * limit + b"]}"
    response = _client().post(
        f"{registry.endpoint}/api/models/{repo_id}/preupload/main",
        content=body,
        headers={"authorization": f"Bearer {alice_token}", "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert str(limit) in response.json()["error"]


def test_commit_body_and_operation_count_are_bounded(tmp_path) -> None:
    from hubferry.testing import running_registry

    with running_registry(tmp_path, max_commit_bytes=64 * 1024, max_commit_operations=3) as hub:
        token = hub.create_token("alice")
        headers = {"authorization": f"Bearer {token}", "content-type": "application/x-ndjson"}
        client = _client()
        client.post(f"{hub.endpoint}/api/repos/create", json={"name": "c"}, headers=headers)
        deletes = b"\n".join(b'{"key": "deletedFile", "value": {"path": "f%d"}}' % i for i in range(4))
        too_many = client.post(f"{hub.endpoint}/api/models/alice/c/commit/main", content=deletes, headers=headers)
        big = b'{"key": "header", "value": {"summary": "' + b"x" * 70_000 + b'"}}'
        too_big = client.post(f"{hub.endpoint}/api/models/alice/c/commit/main", content=big, headers=headers)
    assert too_many.status_code == 413 and "at most 3" in too_many.json()["error"]
    assert too_big.status_code == 413 and "commit body" in too_big.json()["error"]


def test_preupload_and_paths_info_file_counts_are_bounded(
    registry: RunningRegistry, alice_token: str, repo_id: str
) -> None:
    client = _client()
    headers = {"authorization": f"Bearer {alice_token}"}
    files = [{"path": f"f{i}.txt", "size": 1, "sample": ""} for i in range(1001)]
    preupload = client.post(f"{registry.endpoint}/api/models/{repo_id}/preupload/main", json={"files": files},
                            headers=headers)  # fmt: skip
    paths = client.post(f"{registry.endpoint}/api/models/{repo_id}/paths-info/main",
                        data={"paths": [f"f{i}" for i in range(1001)]}, headers=headers)  # fmt: skip
    assert preupload.status_code == 413 and "at most 1000" in preupload.json()["error"]
    assert paths.status_code == 413 and "at most 1000" in paths.json()["error"]


def test_preupload_of_a_file_over_the_object_limit_is_413(
    registry: RunningRegistry, alice_token: str, repo_id: str
) -> None:
    response = _client().post(
        f"{registry.endpoint}/api/models/{repo_id}/preupload/main",
        json={"files": [{"path": "huge.bin", "size": 2**70, "sample": ""}]},
        headers={"authorization": f"Bearer {alice_token}"},
    )
    assert response.status_code == 413 and "limit per file" in response.json()["error"]


@pytest.mark.parametrize(
    "query",
    [
        "tree/main?cursor=1180591620717411303424",
        "tree/main?cursor=-1",
        "tree/main?cursor=x",
        "commits/main?p=1180591620717411303424",
        "commits/main?p=-5",
    ],
)
def test_out_of_range_page_parameters_are_400(registry: RunningRegistry, repo_id: str, query: str) -> None:
    response = _client().get(f"{registry.endpoint}/api/models/{repo_id}/{query}")
    assert response.status_code == 400
    assert response.headers["x-error-code"] == "BadRequest"
    assert query.split("?")[1].split("=")[0] in response.json()["error"]


@pytest.mark.parametrize("query", ["limit=1180591620717411303424", "limit=0", "cursor=-1", "direction=7"])
def test_out_of_range_listing_parameters_are_400(registry: RunningRegistry, query: str) -> None:
    response = _client().get(f"{registry.endpoint}/api/models?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()["error"]
