"""Property: whatever a client sends to any route, the registry answers below 500, whole, and hardened.

Hypothesis drives every route of the app (the list is read from the app itself, so a new route is
fuzzed too) with hostile path parameters, query values, content types and bodies: valid bodies
mutated field by field, random JSON, deep nesting, out-of-range numbers and random bytes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubferry.registry.app import ROUTERS
from hubferry.testing import RunningRegistry

OID = hashlib.sha256(b"fuzz").hexdigest()
#: Characters that broke parsers, headers or paths before.
NASTY = list("ab/.\\%?#&=;:\"'<> \x00\r\n\t\u202e\u2066\u0301\u00e9[]{}") + ["..", ".git", "refs/pr/1", "\ufeff"]
text = st.lists(st.sampled_from(NASTY) | st.characters(exclude_categories=["Cs"]), max_size=12).map("".join)
numbers = st.integers(min_value=-(2**80), max_value=2**80) | st.sampled_from([0, 1, -1, 2**31, 2**63, 2**70])
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)

#: A plausible body per route, mutated by the fuzzer (``None``: the route takes no body).
SEED_BODIES: dict[str, Any] = {
    "/api/repos/create": {"name": "fuzz-new", "private": False},
    "/api/repos/delete": {"name": "doomed", "organization": "mallory"},
    "/preupload/": {"files": [{"path": "a.txt", "sample": "aGk=", "size": 2}]},
    "/paths-info/": {"paths": ["a.txt", "sub"], "expand": True},
    "/branch/": {"startingPoint": "main"},
    "/tag/": {"tag": "v1"},
    "/objects/batch": {"operation": "upload", "objects": [{"oid": OID, "size": 4}], "transfers": ["basic"]},
    "/objects/verify": {"oid": OID, "size": 4},
    "/lfs-storage/{oid}/{upload_id}": {"oid": OID, "parts": [{"partNumber": 1, "etag": '"x"'}]},
    "/api/validate-yaml": {"content": "---\nlicense: mit\n---\n# card\n"},
    "/commit/": [
        {"key": "header", "value": {"summary": "fuzz", "parentCommit": None}},
        {"key": "file", "value": {"path": "f.txt", "content": "aGk=", "encoding": "base64"}},
        {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": OID, "size": 4}},
        {"key": "deletedFile", "value": {"path": "f.txt"}},
        {"key": "deletedFolder", "value": {"path": "sub/"}},
    ],
}
#: Bodies that crashed parsers before.
RAW_BODIES = ['{"size": 1e400}', '{"size": NaN}', "[1, 2]", "null", '"x"', "{", "",
              '{"files": [{"path": "a", "size": 1e400}]}', '{"key": "file", "value": []}']  # fmt: skip
FORM_ROUTES = ("/login", "/logout", "/settings/tokens", "/paths-info/")
QUERY_KEYS = ["recursive", "expand", "cursor", "p", "limit", "create_pr", "blobs", "author", "search", "sort",
              "direction", "include_prs", "filter", "size", "sig", "exp", "ns", "parts", "chunk"]  # fmt: skip


def _routes() -> list[tuple[str, str]]:
    routes = [route for router in ROUTERS for route in router.routes]
    assert len(routes) > 30, "the registry's routes were not found"
    return sorted((route.path, method) for route in routes for method in route.methods)


@st.composite
def mutated(draw: st.DrawFn, seed: Any) -> Any:
    value = copy.deepcopy(seed)
    for _ in range(draw(st.integers(0, 3))):
        value = _mutate(draw, value)
    return value


def _mutate(draw: st.DrawFn, value: Any) -> Any:
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        action = draw(st.sampled_from(["replace", "delete", "descend"]))
        if action == "delete":
            del value[key]
        else:
            value[key] = _mutate(draw, value[key]) if action == "descend" else draw(json_values)
        return value
    if isinstance(value, list) and value and draw(st.booleans()):
        index = draw(st.integers(0, len(value) - 1))
        value[index] = _mutate(draw, value[index])
        return value
    return draw(json_values)


def _seed(path: str) -> Any:
    return next((body for key, body in SEED_BODIES.items() if key in path), None)


@st.composite
def bodies(draw: st.DrawFn, path: str) -> tuple[str, bytes]:
    """``(content type, body)`` for a request to ``path``."""
    seed = _seed(path)
    kind = draw(st.sampled_from(["seed", "seed", "seed", "seed", "json", "deep", "raw", "bytes", "form"]))
    content_type = draw(st.sampled_from(["application/json", "application/x-ndjson",
                                         "application/vnd.git-lfs+json", "application/x-www-form-urlencoded",
                                         "text/plain", ""]))  # fmt: skip
    if kind == "seed" and isinstance(seed, list):  # NDJSON: each line mutated on its own
        lines = [json.dumps(draw(mutated(line))) for line in seed[: draw(st.integers(0, len(seed)))]]
        return "application/x-ndjson", "\n".join(lines).encode()
    if kind == "seed" and seed is not None:
        return draw(st.sampled_from(["application/json", content_type])), json.dumps(draw(mutated(seed))).encode()
    if kind == "deep":
        depth = draw(st.sampled_from([33, 1000, 100_000]))
        opener = draw(st.sampled_from(['[', '{"a":']))
        return content_type, (opener * depth + "1" + ("]" if opener == "[" else "}") * depth).encode()
    if kind == "raw":
        raw = draw(st.sampled_from(RAW_BODIES))
        return content_type, raw.encode()
    if kind == "bytes":
        return content_type, draw(st.binary(max_size=512))
    if kind == "form" or any(route in path for route in FORM_ROUTES):
        fields = draw(st.lists(st.tuples(st.sampled_from(["paths", "expand", "token", "csrf", "name", "role"]), text),
                               max_size=5))  # fmt: skip
        return "application/x-www-form-urlencoded", urlencode(fields).encode()
    return content_type, json.dumps(draw(json_values)).encode()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx2.Client]:
    # One client (a new one per request costs an SSL context), without keep-alive: the test registry's
    # socket lacks TCP_NODELAY, so a reused connection waits ~40 ms on delayed ACKs per request.
    with httpx2.Client(timeout=30, limits=httpx2.Limits(max_keepalive_connections=0)) as shared:
        yield shared


@pytest.fixture(scope="module")
def target(registry: RunningRegistry) -> dict[str, str]:
    """A user with a repo holding files, and real signed upload/download URLs to aim at."""
    token = registry.create_token("mallory")
    auth = {"authorization": f"Bearer {token}"}
    client = httpx2.Client(timeout=20)
    client.post(f"{registry.endpoint}/api/repos/create", json={"name": "fuzz"}, headers=auth)
    batch = client.post(
        f"{registry.endpoint}/mallory/fuzz.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": OID, "size": 2 * 1024 * 1024}]},
        headers={**auth, "content-type": "application/vnd.git-lfs+json"},
    ).json()["objects"][0]["actions"]["upload"]
    return {"token": token, "complete": batch["href"], "part": batch["header"]["1"]}


def _fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::path)?\}", lambda m: values[m.group(1)], path)


def _usually(draw: st.DrawFn, usual: Any, other: st.SearchStrategy[Any]) -> Any:
    """``usual`` four times in five: the request must get past routing and auth to reach the body."""
    return usual if draw(st.integers(0, 4)) else draw(other)


DEFAULTS = {"rtype": "models", "ns": "mallory", "name": "fuzz", "rev": "main", "path": "a.txt", "branch": "dev",
            "tag": "v1", "oid": OID, "upload_id": "0" * 32, "number": "1", "token_id": "1"}  # fmt: skip
SIGNED = {"/lfs-storage/{oid}/{upload_id}": "complete", "/lfs-storage/{oid}/{upload_id}/{number}": "part"}


@st.composite
def requests(draw: st.DrawFn, route: str, target: dict[str, str]) -> tuple[str, dict[str, str], bytes]:
    """``(path?query, headers, body)`` for ``route``: mostly valid, with hostile parts drawn in."""
    if route in SIGNED and draw(st.booleans()):  # a valid signature gets past the first check
        url = urlsplit(target[SIGNED[route]])
        path, query = url.path, url.query
    else:
        hostile = st.builds(lambda t: quote(t, safe=""), text)
        path = _fill(route, {key: _usually(draw, value, hostile) for key, value in DEFAULTS.items()})
        pairs = st.tuples(st.sampled_from(QUERY_KEYS), st.one_of(text, numbers.map(str)))
        query = urlencode(draw(st.lists(pairs, max_size=3)))
    auth = _usually(draw, f"Bearer {target['token']}", st.sampled_from(["", "Bearer hf_nope", "Basic x"]))
    content_type, body = draw(bodies(path))
    headers = {"content-type": content_type} if content_type else {}
    if auth:
        headers["authorization"] = auth
    return path + (f"?{query}" if query else ""), headers, body


ROUTES = _routes()


@pytest.mark.parametrize(("route", "method"), ROUTES, ids=[f"{m} {r}" for r, m in ROUTES])
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_request_gets_a_5xx_or_a_dropped_connection(
    registry: RunningRegistry, client: httpx2.Client, target: dict[str, str], route: str, method: str,
    data: st.DataObject,
) -> None:  # fmt: skip
    url, headers, body = data.draw(requests(route, target))
    response = client.request(method, registry.endpoint + url, headers=headers, content=body)
    assert response.status_code < 500, (method, url, response.status_code, response.text[:300])
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    is_page = response.headers.get("content-type", "").startswith("text/html")
    if response.status_code >= 400 and method != "HEAD" and not is_page:
        assert response.json()["error"], response.text
        assert response.headers["x-error-code"]


def test_every_route_is_fuzzed() -> None:
    """A route the request strategy cannot fill in would never be fuzzed."""
    for path, _method in ROUTES:
        assert "{" not in _fill(path, dict.fromkeys(re.findall(r"\{(\w+)", path), "x")), path
        assert "{" not in path or set(re.findall(r"\{(\w+)", path)) <= {
            "rtype", "ns", "name", "rev", "path", "branch", "tag", "oid", "upload_id", "number", "token_id"
        }, path  # fmt: skip
