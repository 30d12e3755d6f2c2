"""``/api/v1/secrets``: each user's own Hub tokens (checked with whoami against the built-in registry before
they are stored), Replicate token (checked against the fake Replicate) and RunPod key (checked against the
fake RunPod); values never returned, another user's secrets out of reach."""

from __future__ import annotations

import pytest

from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app
from hubferry.config import Settings
from hubferry.services.context import open_context

#: RunPod keys the fake RunPod knows.
RUNPOD_KEYS = ("rpa_" + "k" * 40, "rpa_" + "Q" * 36 + "9xyz")


@pytest.fixture
def ctx(tmp_path, hf_env, fake_replicate, runpod_fake):
    for key in RUNPOD_KEYS:
        runpod_fake.add_account(key)
    settings = Settings(home=tmp_path / "home", replicate_base_url=fake_replicate.base_url, retry_base_delay=0.01,
                        runpod_base_url=runpod_fake.url, max_attempts=2,
                        hub_allow_hosts=("127.0.0.1",))  # the registry is an on-prem Hub here
    return open_context(settings)


@pytest.fixture
def app(ctx):
    return create_app(ctx, run_consumer=False)


@pytest.fixture
def users(app):
    return TestUsers.of(app)


def test_a_hub_token_is_checked_with_whoami_then_stored_with_its_username(app, ctx, users, registry, alice_token):
    client = users.token_client(app, "ann")
    response = client.put("/api/v1/secrets/hub", json={"endpoint": registry.endpoint + "/", "token": alice_token})
    assert response.status_code == 200, response.text
    view = response.json()
    assert view == {"endpoint": registry.endpoint, "username": "alice", "last4": alice_token[-4:],
                    "checked_at": view["checked_at"]} and view["checked_at"]
    stored = ctx.credentials.get("ann", registry.endpoint)
    assert (stored.token, stored.username) == (alice_token, "alice")
    listed = client.get("/api/v1/secrets")
    assert listed.json()["hub"] == [view] and alice_token not in listed.text


def test_a_bad_hub_token_is_a_422_naming_token_and_nothing_is_stored(app, ctx, users, registry, alice_token):
    client = users.token_client(app, "ann")
    bad = alice_token[:-4] + "zzzz"
    response = client.put("/api/v1/secrets/hub", json={"endpoint": registry.endpoint, "token": bad})
    assert response.status_code == 422 and response.json()["error"]["field"] == "token"
    assert bad not in response.text
    assert ctx.credentials.get("ann", registry.endpoint) is None
    assert client.get("/api/v1/secrets").json()["hub"] == []


def test_a_read_only_hub_token_is_refused(app, ctx, users, registry):
    read_only = registry.create_token("alice", read_only=True)
    response = users.token_client(app, "ann").put(
        "/api/v1/secrets/hub", json={"endpoint": registry.endpoint, "token": read_only})
    assert response.status_code == 422 and response.json()["error"]["field"] == "token"
    assert ctx.credentials.get("ann", registry.endpoint) is None


@pytest.mark.parametrize("endpoint", ["ftp://hub.example", "https://user:pw@hub.example", "https://hub.example?x=1",
                                      "not a url"])
def test_an_endpoint_that_is_not_an_http_url_is_a_422_naming_endpoint(app, users, endpoint):
    response = users.token_client(app, "ann").put("/api/v1/secrets/hub", json={"endpoint": endpoint, "token": "t" * 20})
    assert response.status_code == 422 and response.json()["error"]["field"] == "endpoint"


def test_a_user_sees_and_deletes_only_their_own_secrets(app, ctx, users, registry, alice_token):
    ann, ben = users.token_client(app, "ann"), users.token_client(app, "ben", admin=True)
    assert ann.put("/api/v1/secrets/hub", json={"endpoint": registry.endpoint, "token": alice_token}).status_code == 200
    assert ann.put("/api/v1/secrets/runpod", json={"token": "rpa_" + "k" * 40}).status_code == 200
    # ben is an admin, and still sees nothing of ann's and cannot delete it
    assert ben.get("/api/v1/secrets").json()["hub"] == []
    assert ben.get("/api/v1/secrets").json()["runpod"]["set"] is False
    for path in (f"/api/v1/secrets/hub?endpoint={registry.endpoint}", "/api/v1/secrets/runpod",
                 "/api/v1/secrets/replicate"):
        refused = ben.delete(path)
        assert refused.status_code == 404 and refused.json()["error"]["category"] == "validation", path
    assert ctx.credentials.get("ann", registry.endpoint) is not None
    assert ann.delete(f"/api/v1/secrets/hub?endpoint={registry.endpoint}").status_code == 204
    assert ann.delete("/api/v1/secrets/runpod").status_code == 204
    assert ctx.credentials.get("ann", registry.endpoint) is None
    assert ann.get("/api/v1/secrets").json()["runpod"] == {"set": False, "last4": None, "updated_at": None}


def test_a_replicate_token_is_checked_with_its_account_before_it_is_stored(app, ctx, users, fake_replicate):
    client = users.token_client(app, "ann")
    bad = client.put("/api/v1/secrets/replicate", json={"token": "r8_" + "n" * 37})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "token"
    assert ctx.credentials.vault.get("ann", "replicate_token") is None
    good = client.put("/api/v1/secrets/replicate", json={"token": fake_replicate.token})
    assert good.status_code == 200, good.text
    assert good.json() == {"set": True, "username": fake_replicate.username, "last4": fake_replicate.token[-4:],
                           "checked_at": good.json()["checked_at"]}
    assert fake_replicate.token not in good.text
    assert ctx.credentials.vault.get("ann", "replicate_token") == fake_replicate.token
    assert client.delete("/api/v1/secrets/replicate").status_code == 204
    assert ctx.credentials.vault.get("ann", "replicate_token") is None


def test_a_runpod_key_is_checked_stored_encrypted_and_shown_by_its_last_four(app, ctx, users):
    client = users.token_client(app, "ann")
    refused = client.put("/api/v1/secrets/runpod", json={"token": "rpa_" + "z" * 40})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "token" and "z" * 40 not in refused.text
    assert ctx.credentials.vault.get("ann", "runpod_api_key") is None
    key = RUNPOD_KEYS[1]
    response = client.put("/api/v1/secrets/runpod", json={"token": key})
    assert response.status_code == 200 and response.json()["last4"] == "9xyz" and key not in response.text
    assert ctx.credentials.vault.get("ann", "runpod_api_key") == key
    assert key.encode() not in (ctx.settings.home / "secrets.json").read_bytes()


def test_a_missing_field_is_a_422_naming_it(app, users):
    response = users.token_client(app, "ann").put("/api/v1/secrets/hub", json={"endpoint": "https://hub.example"})
    assert response.status_code == 422 and response.json()["error"]["field"] == "token"
