"""No secret handled by accounts and ``/api/v1/secrets`` ever appears in a response body or a log line:
passwords, API tokens, session ids, Hub tokens, Replicate tokens and RunPod keys, whether the request
succeeds or fails. Logs are captured before redaction, so a secret the redactor would mask still counts."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import LogCapture

from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app
from hubferry.config import Settings
from hubferry.services.context import open_context


@pytest.fixture
def raw_logs() -> Iterator[list[dict]]:
    """Every structlog event at any level, as the code passed it (no redaction)."""
    before = structlog.get_config()
    capture = LogCapture()
    structlog.configure(processors=[capture], wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        yield capture.entries
    finally:
        structlog.configure(**before)


def test_no_secret_reaches_a_response_body_or_a_log_line(tmp_path, hf_env, fake_replicate, registry, alice_token,
                                                         raw_logs, caplog, runpod_fake):
    caplog.set_level(logging.DEBUG)
    ctx = open_context(Settings(home=tmp_path / "home", replicate_base_url=fake_replicate.base_url,
                                runpod_base_url=runpod_fake.url, retry_base_delay=0.01, max_attempts=2,
                                hub_allow_hosts=("127.0.0.1",)))
    app = create_app(ctx, run_consumer=False)
    users = TestUsers(ctx.jobs.engine)
    secrets = {"hub token": alice_token, "replicate token": fake_replicate.token,
               "bad hub token": alice_token[:-4] + "abcd", "bad replicate token": "r8_" + "b" * 37,
               "runpod key": "rpa_" + "R" * 40}
    bodies: list[str] = []

    def seen(response, *, shows: str | None = None):
        text = response.text
        if shows is not None:  # the one answer that hands a new secret over
            assert text.count(secrets[shows]) == 1
            text = text.replace(secrets[shows], "")
        bodies.append(text)
        return response

    browser = users.browser(app, "alice")
    secrets["alice password"] = users.passwords["alice"]
    secrets["session id"] = browser.client.cookies.get("hubferry_session").rpartition(".")[0]
    c, h = browser.client, browser.csrf_headers

    created = c.post("/api/v1/tokens", json={"label": "ci"}, headers=h)
    secrets["api token"] = created.json()["token"]
    seen(created, shows="api token")
    seen(c.get("/api/v1/tokens"))
    seen(c.get("/api/v1/session"))
    seen(c.put("/api/v1/secrets/hub", json={"endpoint": registry.endpoint, "token": secrets["bad hub token"]},
               headers=h))
    seen(c.put("/api/v1/secrets/hub", json={"endpoint": registry.endpoint, "token": alice_token}, headers=h))
    seen(c.put("/api/v1/secrets/hub", json={"endpoint": "ftp://x", "token": alice_token}, headers=h))
    seen(c.put("/api/v1/secrets/hub", json={"endpoint": registry.endpoint, "token": [alice_token]}, headers=h))
    seen(c.put("/api/v1/secrets/replicate", json={"token": secrets["bad replicate token"]}, headers=h))
    seen(c.put("/api/v1/secrets/replicate", json={"token": fake_replicate.token}, headers=h))
    seen(c.put("/api/v1/secrets/runpod", json={"token": secrets["runpod key"]}, headers=h))  # refused by RunPod
    runpod_fake.add_account(secrets["runpod key"])
    seen(c.put("/api/v1/secrets/runpod", json={"token": secrets["runpod key"]}, headers=h))  # accepted
    seen(c.put("/api/v1/secrets/runpod", json={"token": secrets["runpod key"] * 200}, headers=h))
    seen(c.get("/api/v1/secrets"))
    bearer = users.token_client(app, "bob")
    seen(bearer.get("/api/v1/secrets"))
    seen(bearer.get("/api/v1/session", headers={"Authorization": f"Bearer {secrets['api token']}x"}))
    seen(c.post("/api/v1/session", json={"username": "alice", "password": secrets["alice password"] + "!"}))
    again = seen(c.post("/api/v1/session", json={"username": "alice", "password": secrets["alice password"]}))
    seen(c.post("/api/v1/session", json={"username": ["alice"], "password": secrets["alice password"]}))
    seen(c.delete("/api/v1/session", headers={"X-CSRF-Token": again.json()["csrf_token"]}))
    users.accounts.token_uses.flush()

    assert c.get("/api/v1/secrets").status_code == 401  # signed out
    assert ctx.credentials.get("alice", registry.endpoint).token == alice_token  # the good ones were stored
    log_text = "\n".join(str(e) for e in raw_logs) + "\n" + caplog.text
    assert "hub token stored" in log_text and "signed in" in log_text  # the capture saw our lines
    for name, value in secrets.items():
        for body in bodies:
            assert value not in body, f"{name} in a response body: {body[:300]}"
        assert value not in log_text, f"{name} in the logs"
