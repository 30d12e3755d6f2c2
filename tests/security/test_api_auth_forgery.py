"""Forged requests against ``hubferry serve``: a page on another site riding the dashboard's session cookie
(CSRF), cross-site posts of any content type, forged or replayed session cookies."""

from __future__ import annotations

import pytest
from fastapi import Depends, Request
from fastapi.testclient import TestClient

from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app
from hubferry.api.auth import Authenticator, CookieSigner
from hubferry.api.errors import ApiError
from hubferry.api.principal import Principal, current_principal
from hubferry.config import Settings
from hubferry.services.context import open_context

EVIL = "https://evil.example"


@pytest.fixture
def ctx(tmp_path):
    return open_context(Settings(home=tmp_path / "home"))


@pytest.fixture
def app(ctx):
    app = create_app(ctx, run_consumer=False)

    @app.post("/test/form")
    async def read_form(request: Request, principal: Principal = Depends(current_principal)):  # noqa: B008
        return {"user": principal.name, "form": dict(await request.form())}

    return app


@pytest.fixture
def users(app):
    return TestUsers.of(app)


def token_count(ctx, users, name="alice"):
    return len(users.accounts.tokens(name))


@pytest.mark.parametrize("csrf", [None, "", "0" * 64, "forged"])
def test_cookie_authenticated_state_changes_need_the_sessions_csrf_token(app, ctx, users, csrf):
    browser = users.browser(app, "alice")
    headers = {} if csrf is None else {"X-CSRF-Token": csrf}
    attempts = [
        browser.client.post("/api/v1/tokens", json={"label": "x"}, headers=headers),
        browser.client.put("/api/v1/secrets/runpod", json={"token": "rpa_" + "k" * 40}, headers=headers),
        browser.client.delete("/api/v1/session", headers=headers),
    ]
    for response in attempts:
        assert response.status_code == 403, response.request.url
        assert response.json()["error"]["category"] == "authentication"
    assert token_count(ctx, users) == 0 and ctx.credentials.vault.get("alice", "runpod_api_key") is None
    assert browser.client.get("/api/v1/session").status_code == 200  # still signed in: sign-out was refused


def test_the_csrf_token_of_another_session_or_a_planted_cookie_does_not_pass(app, ctx, users):
    alice, bob = users.browser(app, "alice"), users.browser(app, "bob")
    assert alice.client.post("/api/v1/tokens", headers=bob.csrf_headers).status_code == 403
    # Double submit with a cookie an attacker planted (e.g. from a sibling subdomain) is not enough either.
    alice.client.cookies.set("hubferry_csrf", "planted")
    assert alice.client.post("/api/v1/tokens", headers={"X-CSRF-Token": "planted"}).status_code == 403
    assert token_count(ctx, users) == 0
    assert alice.client.post("/api/v1/tokens", headers=alice.csrf_headers).status_code == 201


def test_forms_carry_the_csrf_token_as_a_field_and_the_route_still_reads_the_whole_form(app, users):
    browser = users.browser(app, "alice")
    accepted = browser.client.post("/test/form", data={"csrf_token": browser.csrf, "note": "x" * 5000})
    assert accepted.status_code == 200 and accepted.json() == {
        "user": "alice", "form": {"csrf_token": browser.csrf, "note": "x" * 5000}}
    assert browser.client.post("/test/form", data={"note": "hi"}).status_code == 403
    assert browser.client.post("/test/form", data={"csrf_token": "nope"}).status_code == 403


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/json"])
def test_a_cross_site_post_is_refused_whatever_its_content_type(app, ctx, users, content_type):
    browser = users.browser(app, "alice")
    response = browser.client.post("/api/v1/tokens", content=b'{"label": "pwned"}',
                                   headers={"Origin": EVIL, "Content-Type": content_type, **browser.csrf_headers})
    assert response.status_code == 403 and "cross-site" in response.json()["error"]["message"]
    assert token_count(ctx, users) == 0


@pytest.mark.parametrize("headers", [
    {"Origin": "null"},
    {"Origin": "http://testserver.evil.example"},
    {"Origin": "https://testserver"},  # another scheme is another origin
    {"Origin": "http://testserver:8080"},
    {"Referer": f"{EVIL}/page"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
])
def test_every_state_changing_request_from_another_origin_is_refused_even_with_a_bearer_token(app, ctx, users,
                                                                                              headers):
    client = users.token_client(app, "alice")
    assert client.post("/api/v1/tokens", headers=headers).status_code == 403
    assert token_count(ctx, users) == 1  # only the token the client authenticates with


def test_same_origin_and_public_url_requests_pass(tmp_path, users):
    app = create_app(open_context(Settings(home=tmp_path / "h", public_url="https://ferry.example")),
                     run_consumer=False)
    users = TestUsers.of(app)
    client = users.token_client(app, "alice")
    for headers in ({"Origin": "http://testserver"}, {"Origin": "https://ferry.example"},
                    {"Origin": "https://ferry.example:443"}, {"Referer": "http://testserver/settings"},
                    {"Sec-Fetch-Site": "same-origin"}, {}):
        assert client.post("/api/v1/tokens", headers=headers).status_code == 201, headers


def test_sign_in_from_another_site_is_refused(app, users):
    response = TestClient(app).post("/api/v1/session", data={"username": "alice", "password": users.add("alice")},
                                    headers={"Origin": EVIL})
    assert response.status_code == 403 and "set-cookie" not in response.headers


def test_bearer_requests_need_no_csrf_token_even_next_to_a_session_cookie(app, ctx, users):
    browser = users.browser(app, "alice")
    token = users.token("alice")
    response = browser.client.post("/api/v1/tokens", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201


def test_forged_and_foreign_session_cookies_open_nothing(app, ctx, users, tmp_path):
    browser = users.browser(app, "alice")
    real = browser.client.cookies.get("hubferry_session")
    session_id, _, tag = real.rpartition(".")
    other_server = CookieSigner(lambda: b"another server's key").cookie(session_id)
    for cookie in (f"{session_id}.{'0' * 64}", f"{session_id}x.{tag}", session_id, other_server, "." + tag):
        client = TestClient(app, cookies={"hubferry_session": cookie})
        assert client.get("/api/v1/session").status_code == 401, cookie
        assert client.post("/api/v1/tokens").status_code == 401, cookie


def test_the_authenticator_refuses_a_cookie_on_a_state_change_the_guard_did_not_check(app, users):
    browser = users.browser(app, "alice")
    auth: Authenticator = app.state.authenticate
    cookie = browser.client.cookies.get("hubferry_session")
    scope = {"type": "http", "method": "POST", "path": "/api/v1/tokens", "headers": [
        (b"cookie", f"hubferry_session={cookie}".encode())], "query_string": b"", "state": {}}
    with pytest.raises(ApiError) as refused:
        auth(Request(scope))
    assert refused.value.status == 403
    assert auth(Request({**scope, "method": "GET"})) == Principal("alice", False, via="session")
