"""``hubferry serve`` authentication: API tokens as Bearer, the dashboard's session (sign in, who am I,
sign out), cookie attributes, sign-in throttling, and the API-token routes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hubferry.accounts.testing import TestUsers
from hubferry.accounts.throttle import THRESHOLDS
from hubferry.api.app import create_app
from hubferry.config import Settings
from hubferry.services.context import open_context


@pytest.fixture
def ctx(tmp_path):
    return open_context(Settings(home=tmp_path))


@pytest.fixture
def app(ctx):
    return create_app(ctx, run_consumer=False)


@pytest.fixture
def users(app):
    return TestUsers.of(app)


def error_of(response):
    body = response.json()
    assert set(body) == {"error"} and {"category", "message", "hint"} <= set(body["error"]), body
    return body["error"]


def test_without_credentials_the_api_answers_401_with_a_bearer_challenge(app):
    response = TestClient(app).get("/api/v1/session")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert error_of(response)["category"] == "authentication"
    assert TestClient(app).get("/api/v1/secrets").status_code == 401
    assert TestClient(app).post("/api/v1/tokens").status_code == 401


def test_an_api_token_authenticates_as_its_user(app, users):
    client = users.token_client(app, "alice", admin=True)
    assert client.get("/api/v1/session").json() == {"user": {"name": "alice", "is_admin": True}, "via": "token"}
    users.add("bob")
    bob_token = users.token("bob")
    for header in (f"Bearer {bob_token}x", f"Basic {bob_token}", bob_token, "Bearer ", f"Bearer hfy_{'A' * 32}"):
        assert TestClient(app).get("/api/v1/session", headers={"Authorization": header}).status_code == 401, header


def test_a_bad_bearer_token_is_refused_even_with_a_valid_session_cookie(app, users):
    browser = users.browser(app, "alice")
    assert browser.client.get("/api/v1/session").status_code == 200
    refused = browser.client.get("/api/v1/session", headers={"Authorization": "Bearer hfy_" + "x" * 32})
    assert refused.status_code == 401


def test_sign_in_sets_an_httponly_samesite_session_cookie_and_sign_out_ends_the_session(app, users):
    password = users.add("alice")
    client = TestClient(app)
    response = client.post("/api/v1/session", json={"username": "alice", "password": password})
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["user"] == {"name": "alice", "is_admin": False} and body["via"] == "session" and body["csrf_token"]
    session_cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("hubferry_session="))
    attributes = {a.strip().split("=")[0].lower() for a in session_cookie.split(";")[1:]}
    assert {"httponly", "max-age", "samesite", "path"} <= attributes and "secure" not in attributes  # http here
    assert "samesite=lax" in session_cookie.lower()
    assert password not in response.text and password not in str(response.headers)

    me = client.get("/api/v1/session")
    assert me.json() == {"user": {"name": "alice", "is_admin": False}, "via": "session",
                         "csrf_token": body["csrf_token"]}
    cookie = client.cookies.get("hubferry_session")
    assert client.delete("/api/v1/session", headers={"X-CSRF-Token": body["csrf_token"]}).status_code == 204
    assert client.get("/api/v1/session").status_code == 401
    # The old cookie, replayed, no longer opens anything: the session ended on the server.
    replay = TestClient(app, cookies={"hubferry_session": cookie})
    assert replay.get("/api/v1/session").status_code == 401


def test_session_cookies_are_secure_under_an_https_public_url(tmp_path, users):
    app = create_app(open_context(Settings(home=tmp_path, public_url="https://hubferry.example")), run_consumer=False)
    response = TestClient(app).post("/api/v1/session", json={"username": "alice", "password": users.add("alice")})
    cookies = response.headers.get_list("set-cookie")
    assert len(cookies) == 2 and all("; secure" in c.lower() for c in cookies)


def test_a_form_sign_in_redirects_with_the_cookies(app, users):
    client = TestClient(app, follow_redirects=False)
    response = client.post("/api/v1/session", data={"username": "alice", "password": users.add("alice")})
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert client.get("/api/v1/session").json()["user"]["name"] == "alice"


def test_wrong_password_and_unknown_user_get_the_same_answer(app, users):
    users.add("alice")
    client = TestClient(app)
    wrong = client.post("/api/v1/session", json={"username": "alice", "password": "not the password"})
    unknown = client.post("/api/v1/session", json={"username": "mallory", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 401
    assert error_of(wrong) == error_of(unknown) and "set-cookie" not in wrong.headers


def test_sign_in_input_errors_name_the_field(app):
    client = TestClient(app)
    missing = client.post("/api/v1/session", json={"username": "alice"})
    assert missing.status_code == 422 and error_of(missing)["field"] == "password"
    garbage = client.post("/api/v1/session", content=b"{not json", headers={"Content-Type": "application/json"})
    assert garbage.status_code == 422 and error_of(garbage)["field"] == "body"
    huge = client.post("/api/v1/session", json={"username": "alice", "password": "x" * 20_000})
    assert huge.status_code == 413


def test_repeated_failed_sign_ins_are_locked_out_with_retry_after(app, users):
    password = users.add("alice")
    client = TestClient(app)
    for _ in range(THRESHOLDS["pair"]):
        assert client.post("/api/v1/session", json={"username": "alice", "password": "guess guess"}).status_code == 401
    locked = client.post("/api/v1/session", json={"username": "alice", "password": password})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert error_of(locked)["category"] == "rate_limit" and "set-cookie" not in locked.headers


def test_api_tokens_are_created_once_listed_without_the_token_and_revocable(app, users):
    browser = users.browser(app, "alice")
    created = browser.client.post("/api/v1/tokens", json={"label": "CI"}, headers=browser.csrf_headers)
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    token = created.json()["token"]
    assert token.startswith("hfy_") and created.json()["label"] == "CI"
    bearer = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    assert bearer.get("/api/v1/session").json()["user"]["name"] == "alice"

    listed = browser.client.get("/api/v1/tokens")
    assert [t["label"] for t in listed.json()["tokens"]] == ["CI"] and token not in listed.text
    token_id = created.json()["id"]
    assert browser.client.delete(f"/api/v1/tokens/{token_id}", headers=browser.csrf_headers).status_code == 204
    assert bearer.get("/api/v1/session").status_code == 401
    assert browser.client.get("/api/v1/tokens").json() == {"tokens": []}


def test_another_users_token_cannot_be_seen_or_revoked(app, users):
    alice = users.token_client(app, "alice")
    bob = users.token_client(app, "bob")
    alice_id = alice.get("/api/v1/tokens").json()["tokens"][0]["id"]
    refused = bob.delete(f"/api/v1/tokens/{alice_id}")
    assert refused.status_code == 404 and error_of(refused)["category"] == "validation"
    assert alice_id not in bob.get("/api/v1/tokens").text
    assert alice.get("/api/v1/session").status_code == 200


def test_a_token_label_that_is_too_long_is_a_422_naming_label(app, users):
    client = users.token_client(app, "alice")
    response = client.post("/api/v1/tokens", json={"label": "x" * 500})
    assert response.status_code == 422 and error_of(response)["field"] == "label"


def test_a_server_without_users_says_how_to_create_the_first(tmp_path):
    from structlog.testing import capture_logs

    ctx = open_context(Settings(home=tmp_path))
    with capture_logs() as empty:
        create_app(ctx, run_consumer=False)
    assert any("hubferry users create" in e["event"] and "--admin" in e["event"] for e in empty)
    TestUsers(ctx.jobs.engine).add("alice")
    with capture_logs() as populated:
        create_app(ctx, run_consumer=False)
    assert not any("hubferry users create" in e["event"] for e in populated)
