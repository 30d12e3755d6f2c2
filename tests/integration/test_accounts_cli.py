"""``hubferry users ...``: what the CLI creates on the server's database is what ``hubferry serve`` accepts,
secrets are printed once and stored only as hashes, and a revoked token stops working at once."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from hubferry.api.app import create_app
from hubferry.cli import app as cli
from hubferry.config import load_settings
from hubferry.services.context import open_context


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBFERRY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HUBFERRY_DATABASE_URL", raising=False)
    return tmp_path / "home"


def hubferry(*args: str, input: str | None = None, code: int = 0):
    result = CliRunner().invoke(cli, list(args), input=input)
    assert result.exit_code == code, (args, result.output, result.exception)
    return result


def serve():
    return create_app(open_context(load_settings()), run_consumer=False)


def sign_in(app, name, password):
    return TestClient(app).post("/api/v1/session", json={"username": name, "password": password})


def test_create_prints_a_password_and_token_once_that_the_server_accepts(home):
    created = json.loads(hubferry("users", "create", "alice", "--admin", "--token", "--json").stdout)
    assert created["name"] == "alice" and created["is_admin"] is True
    app = serve()
    assert sign_in(app, "alice", created["password"]).status_code == 200
    me = TestClient(app, headers={"Authorization": f"Bearer {created['token']}"}).get("/api/v1/session")
    assert me.json()["user"] == {"name": "alice", "is_admin": True}

    listed = hubferry("users", "list").stdout
    assert "alice" in listed and "admin" in listed
    tokens = hubferry("users", "tokens", "alice").stdout
    assert created["token_id"] in tokens and created["token"] not in tokens
    # Neither secret is anywhere in the database file (or its write-ahead log), even in part.
    stored = b"".join(p.read_bytes() for p in home.glob("*.db*"))
    assert b"$argon2id$" in stored  # the hashes are there: this is the file that holds the users
    assert created["password"].encode() not in stored and created["token"].encode() not in stored
    assert created["token"][4:20].encode() not in stored


def test_human_output_puts_only_the_secrets_on_stdout(home):
    result = hubferry("users", "create", "bob")
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("password: ")
    token = hubferry("users", "token", "bob", "--name", "laptop").stdout.strip()
    assert token.startswith("hfy_") and len(token) == 36
    assert "laptop" in hubferry("users", "tokens", "bob").stdout


def test_a_revoked_token_answers_401_at_once(home):
    hubferry("users", "create", "alice")
    token = hubferry("users", "token", "alice").stdout.strip()
    app = serve()
    client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    assert client.get("/api/v1/session").status_code == 200
    token_id = json.loads(hubferry("users", "tokens", "alice", "--json").stdout)["tokens"][0]["id"]
    hubferry("users", "revoke-token", "alice", token_id)
    assert client.get("/api/v1/session").status_code == 401
    hubferry("users", "revoke-token", "alice", token_id, code=1)  # already revoked
    assert json.loads(hubferry("users", "tokens", "alice", "--json").stdout)["tokens"] == []


def test_set_password_replaces_the_password_and_signs_the_user_out(home):
    first = json.loads(hubferry("users", "create", "alice", "--json").stdout)["password"]
    app = serve()
    browser = TestClient(app)
    assert browser.post("/api/v1/session", json={"username": "alice", "password": first}).status_code == 200
    hubferry("users", "set-password", "alice", "--password-stdin", input="a new long passphrase\n")
    assert browser.get("/api/v1/session").status_code == 401
    assert sign_in(app, "alice", first).status_code == 401
    assert sign_in(app, "alice", "a new long passphrase").status_code == 200
    generated = hubferry("users", "set-password", "alice", "--generate").stdout.strip()
    assert sign_in(app, "alice", generated).status_code == 200


def test_bad_input_exits_2_and_unknown_users_exit_1(home):
    hubferry("users", "create", "job:1", code=2)
    hubferry("users", "create", "alice")
    hubferry("users", "create", "alice", code=2)
    hubferry("users", "set-password", "alice", "--password-stdin", input="short\n", code=2)
    hubferry("users", "token", "nobody", code=1)
    assert json.loads(hubferry("users", "list", "--json").stdout)["users"][0]["name"] == "alice"
