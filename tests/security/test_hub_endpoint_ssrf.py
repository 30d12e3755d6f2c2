"""``PUT /api/v1/secrets/hub`` checks a token with whoami at an endpoint the user names: it must not let them
make the server call its own loopback, its private network or a cloud metadata service. The endpoint's
host is resolved and every address checked before anything is sent (``hub_allow_hosts`` lets an on-prem
Hub through, the server's own endpoint is always allowed), the request goes to the checked address, and
redirects are not followed."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
import pytest
from fastapi.testclient import TestClient

from fakes.api_v1 import api_context, as_user, header_app
from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app
from hubferry.api.v1_secrets import secrets_router

TOKEN = "hf_" + "s" * 30 + "ab12"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET as ``server.answer`` says, and records the path."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        status, headers, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def recording_server(status: int = 200, headers: dict[str, str] | None = None,
                     body: bytes = b"") -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    server.answer = (status, headers or {}, body)  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _endpoint(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _put(client: TestClient, endpoint: str, **kwargs: object) -> httpx2.Response:
    return client.put("/api/v1/secrets/hub", json={"endpoint": endpoint, "token": TOKEN}, **kwargs)


@pytest.fixture
def app(tmp_path, hf_env):
    return create_app(api_context(tmp_path, fetch_allow_hosts=(), hub_allow_hosts=()), run_consumer=False)


def _refused(response, *words: str) -> dict:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "endpoint", error
    for word in words:
        assert word in error["message"] + " " + (error.get("hint") or ""), error
    assert TOKEN not in response.text
    return error


def test_a_loopback_endpoint_is_refused_before_anything_is_sent(app):
    with recording_server(body=b'{"name": "mallory"}') as server:
        response = _put(TestUsers.of(app).token_client(app, "ann"), _endpoint(server))
        error = _refused(response, "loopback", "HUBFERRY_HUB_ALLOW_HOSTS")
        assert server.seen == []  # type: ignore[attr-defined]
    assert "refused to contact the Hub at 127.0.0.1" in error["message"]


@pytest.mark.parametrize(("endpoint", "reason"), [
    ("http://169.254.169.254", "metadata"), ("http://10.1.2.3", "private"), ("http://192.168.0.1:8080", "private"),
    ("http://[::1]:9", "loopback"), ("http://[fe80::1]", "link-local"), ("http://224.0.0.1", "multicast"),
    ("http://240.0.0.1", "reserved"), ("http://0.0.0.0:80", "unspecified"), ("http://[::ffff:127.0.0.1]", "loopback"),
    ("http://100.100.100.200", "metadata"),
])
def test_private_link_local_multicast_reserved_and_metadata_endpoints_are_refused(app, endpoint, reason):
    _refused(_put(TestUsers.of(app).token_client(app, "ann"), endpoint), reason)


def _router_app(tmp_path, resolve, transport=None, **settings):
    ctx = api_context(tmp_path, **{"fetch_allow_hosts": (), "hub_allow_hosts": (), **settings})
    return ctx, header_app(ctx, secrets_router(ctx, resolve=resolve, transport=transport))


def test_a_name_is_checked_after_resolution_and_every_address_counts(tmp_path, hf_env):
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return {"hub.evil.test": ["93.184.216.34", "10.0.0.7"], "meta.evil.test": ["169.254.169.254"]}[host]

    def never(request: httpx2.Request) -> httpx2.Response:
        raise AssertionError(f"nothing may be sent, but {request.url} was")

    ctx, app = _router_app(tmp_path, resolve, httpx2.MockTransport(never))
    client = TestClient(app)
    _refused(_put(client, "https://hub.evil.test", headers=as_user("ann")), "hub.evil.test (10.0.0.7)", "private")
    _refused(_put(client, "https://meta.evil.test", headers=as_user("ann")), "metadata")
    assert asked == ["hub.evil.test", "meta.evil.test"]
    assert ctx.credentials.list("ann") == []


def test_whoami_goes_to_the_checked_address_with_the_endpoints_host(tmp_path, hf_env):
    resolved: list[str] = []
    sent: list[httpx2.Request] = []

    def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["93.184.216.34"]

    def hub(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, json={"name": "ann-hub", "auth": {"accessToken": {"role": "write"}}})

    ctx, app = _router_app(tmp_path, resolve, httpx2.MockTransport(hub))
    response = _put(TestClient(app), "https://hub.example.org/", headers=as_user("ann"))
    assert response.status_code == 200, response.text
    assert response.json()["username"] == "ann-hub" and TOKEN not in response.text
    [request] = sent
    assert resolved == ["hub.example.org"]  # resolved once: the answer that was checked is the one used
    assert request.url.host == "93.184.216.34" and request.url.path == "/api/whoami-v2"
    assert request.headers["host"] == "hub.example.org"
    assert request.extensions.get("sni_hostname") == "hub.example.org"
    assert ctx.credentials.get("ann", "https://hub.example.org").username == "ann-hub"


def test_a_redirect_is_not_followed_and_nothing_is_stored(tmp_path, hf_env):
    with recording_server(302, {"Location": "http://169.254.169.254/latest/meta-data/"}) as server:
        ctx = api_context(tmp_path, fetch_allow_hosts=(), hub_allow_hosts=("127.0.0.1",))
        app = create_app(ctx, run_consumer=False)
        response = _put(TestUsers.of(app).token_client(app, "ann"), _endpoint(server))
        _refused(response, "redirect", "not followed")
        assert server.seen == ["/api/whoami-v2"]  # type: ignore[attr-defined]
    assert ctx.credentials.list("ann") == []


@pytest.mark.parametrize(("status", "body", "field", "code"), [
    (401, b"{}", "token", 422), (200, b"<html>router login</html>", "endpoint", 422),
    (200, b'{"name": "x", "pad": "' + b"y" * 300_000 + b'"}', "endpoint", 422), (404, b"", "endpoint", 422),
    (503, b"", None, 502),
])
def test_answers_that_are_not_a_hubs_are_named_and_nothing_is_stored(tmp_path, hf_env, status, body, field, code):
    with recording_server(status, {"Content-Type": "application/json"}, body) as server:
        ctx = api_context(tmp_path, fetch_allow_hosts=(), hub_allow_hosts=("127.0.0.1",))
        app = create_app(ctx, run_consumer=False)
        response = _put(TestUsers.of(app).token_client(app, "ann"), _endpoint(server))
    assert response.status_code == code, response.text
    assert response.json()["error"].get("field") == field
    assert TOKEN not in response.text and "router login" not in response.text  # the answer is never echoed
    assert ctx.credentials.list("ann") == []


def test_an_allowed_on_prem_hub_and_the_servers_own_endpoint_work(tmp_path, hf_env, registry, alice_token):
    allowed = api_context(tmp_path / "a", fetch_allow_hosts=(), hub_allow_hosts=("127.0.0.0/8",))
    app = create_app(allowed, run_consumer=False)
    response = TestUsers.of(app).token_client(app, "ann").put(
        "/api/v1/secrets/hub", json={"endpoint": registry.endpoint, "token": alice_token})
    assert response.status_code == 200 and response.json()["username"] == "alice", response.text

    own = api_context(tmp_path / "b", fetch_allow_hosts=(), hub_allow_hosts=(), endpoint=registry.endpoint)
    app = create_app(own, run_consumer=False)
    response = TestUsers.of(app).token_client(app, "ann").put(
        "/api/v1/secrets/hub", json={"endpoint": registry.endpoint + "/", "token": alice_token})
    assert response.status_code == 200 and response.json()["username"] == "alice", response.text
    # the allowance is for the server's endpoint, not for its host on another port
    other_port = registry.endpoint.rsplit(":", 1)[0] + ":9"
    _refused(TestUsers.of(app).token_client(app, "ben").put(
        "/api/v1/secrets/hub", json={"endpoint": other_port, "token": alice_token}), "loopback")


def test_the_dashboards_session_goes_through_the_same_guard(app):
    browser = TestUsers.of(app).browser(app, "ann")
    with recording_server(body=b'{"name": "mallory"}') as server:
        response = browser.client.put("/api/v1/secrets/hub", json={"endpoint": _endpoint(server), "token": TOKEN},
                                      headers=browser.csrf_headers)
        _refused(response, "loopback")
        assert server.seen == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("endpoint", ["http://169.254.169.254", "http://10.0.0.5:8080", "http://127.0.0.1:9"])
def test_a_job_retry_or_preview_naming_a_private_hub_is_refused_before_any_call(tmp_path, hf_env, endpoint):
    from fakes.api_v1 import local_job, stored_job
    from hubferry.domain.jobs import ErrorInfo, JobState

    ctx = api_context(tmp_path, fetch_allow_hosts=(), hub_allow_hosts=())
    app = create_app(ctx, run_consumer=False)
    root = TestUsers.of(app).token_client(app, "root", admin=True)
    created = root.post("/api/v1/jobs", json={**local_job(tmp_path / "out"), "endpoint": endpoint, "token": TOKEN})
    _refused(created, "refused to contact the Hub")
    assert ctx.jobs.list_jobs(limit=5) == []
    _refused(root.get("/api/v1/naming/preview", params={"name": "x", "endpoint": endpoint}))
    failed = stored_job(ctx, "root")
    ctx.jobs.transition(failed.id, JobState.QUEUED, JobState.FAILED, error=ErrorInfo("network", "down", "retry"))
    _refused(root.post(f"/api/v1/jobs/{failed.id}/retry", json={"endpoint": endpoint, "token": TOKEN}))
    assert ctx.jobs.require(failed.id).state is JobState.FAILED
