"""The secret vault: encryption at rest, permissions, keys, rotation, concurrent writers and the CLI."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hubferry.cli import app
from hubferry.config import load_settings
from hubferry.errors import ConfigError, ValidationError
from hubferry.secrets import HF_TOKEN, HF_USERNAME, Vault, generate_key
from hubferry.secrets.hub_credentials import HubCredentials

TOKEN = "hf_SuperSecretTokenValue1234567890"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HUBFERRY_VAULT_KEY", raising=False)
    monkeypatch.delenv("HUBFERRY_VAULT_OLD_KEYS", raising=False)
    monkeypatch.setenv("HUBFERRY_HOME", str(tmp_path / "home"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_round_trip(home: Path) -> None:
    vault = Vault(home)
    assert vault.get("alice", HF_TOKEN) is None
    assert not vault.path.exists(), "a read must not create the vault"

    vault.set("alice", HF_TOKEN, TOKEN)
    vault.set("alice", HF_USERNAME, "alice-hf")
    vault.set("bob", HF_TOKEN, "hf_bobs_token")

    fresh = Vault(home)
    assert fresh.get("alice", HF_TOKEN) == TOKEN
    assert fresh.get("bob", HF_TOKEN) == "hf_bobs_token"
    assert fresh.get("bob", HF_USERNAME) is None
    assert fresh.names("alice") == [HF_TOKEN, HF_USERNAME]
    assert fresh.names("carol") == []

    fresh.set("alice", HF_TOKEN, "hf_replaced")
    assert Vault(home).get("alice", HF_TOKEN) == "hf_replaced"

    assert fresh.delete("alice", HF_TOKEN) is True
    assert fresh.delete("alice", HF_TOKEN) is False
    assert Vault(home).get("alice", HF_TOKEN) is None
    assert Vault(home).names("alice") == [HF_USERNAME]


def test_unicode_value_round_trips(home: Path) -> None:
    Vault(home).set("zoë", "api_key", "clé-секрет-🔑")
    assert Vault(home).get("zoë", "api_key") == "clé-секрет-🔑"


def test_permissions(home: Path) -> None:
    vault = Vault(home)
    vault.set("alice", HF_TOKEN, TOKEN)
    assert _mode(vault.path) == 0o600
    assert _mode(home / "keys") == 0o700
    assert _mode(home / "keys" / "vault.key") == 0o600
    vault.set("alice", HF_USERNAME, "alice")  # a rewrite keeps 0600
    assert _mode(vault.path) == 0o600
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp")], "temp files left behind"


def test_values_are_not_stored_in_plaintext(home: Path) -> None:
    vault = Vault(home)
    vault.set("alice", HF_TOKEN, TOKEN)
    raw = vault.path.read_text()
    assert TOKEN not in raw
    assert "SuperSecret" not in raw
    stored = json.loads(raw)["owners"]["alice"][HF_TOKEN]
    assert set(stored) == {"ciphertext", "updated_at"}


def test_env_key_is_used_and_no_key_file_is_written(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("HUBFERRY_VAULT_KEY", key)
    Vault.from_settings(load_settings()).set("alice", HF_TOKEN, TOKEN)
    assert not (home / "keys" / "vault.key").exists()
    assert Vault(home, key=key).get("alice", HF_TOKEN) == TOKEN  # another machine with the same key
    monkeypatch.delenv("HUBFERRY_VAULT_KEY")
    with pytest.raises(ConfigError, match="HUBFERRY_VAULT_KEY"):
        Vault.from_settings(load_settings()).get("alice", HF_TOKEN)


def test_wrong_key_is_a_config_error(home: Path) -> None:
    Vault(home).set("alice", HF_TOKEN, TOKEN)
    wrong = Vault(home, key=generate_key())
    with pytest.raises(ConfigError) as info:
        wrong.get("alice", HF_TOKEN)
    assert "HUBFERRY_VAULT_KEY" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(ConfigError):
        wrong.get("someone-else", HF_TOKEN)  # even with nothing stored for them
    with pytest.raises(ConfigError):
        wrong.set("bob", HF_TOKEN, "hf_bob")  # must not mix keys in one vault
    assert Vault(home).names("bob") == []
    assert Vault(home).get("alice", HF_TOKEN) == TOKEN


def test_missing_key_file_on_existing_vault(home: Path) -> None:
    Vault(home).set("alice", HF_TOKEN, TOKEN)
    (home / "keys" / "vault.key").unlink()
    with pytest.raises(ConfigError, match="vault.key") as info:
        Vault(home).get("alice", HF_TOKEN)
    assert "HUBFERRY_VAULT_KEY" in str(info.value)
    with pytest.raises(ConfigError):
        Vault(home).set("alice", HF_USERNAME, "alice")
    assert not (home / "keys" / "vault.key").exists(), "a new key must not be minted over an existing vault"


def test_malformed_key_is_not_echoed(home: Path) -> None:
    bad = "not-a-valid-fernet-key-but-very-secret"
    with pytest.raises(ConfigError) as info:
        Vault(home, key=bad).set("alice", HF_TOKEN, TOKEN)
    assert bad not in str(info.value) and bad not in repr(info.value)


def test_corrupt_vault_is_reported_and_left_alone(home: Path) -> None:
    home.mkdir()
    (home / "secrets.json").write_text("{not json")
    with pytest.raises(ConfigError, match="secrets.json"):
        Vault(home).set("alice", HF_TOKEN, TOKEN)
    assert (home / "secrets.json").read_text() == "{not json"


def test_rotation(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = generate_key(), generate_key()
    Vault(home, key=old).set("alice", HF_TOKEN, TOKEN)
    Vault(home, key=old).set("bob", HF_USERNAME, "bob")

    with pytest.raises(ConfigError):
        Vault(home, key=new).get("alice", HF_TOKEN)

    monkeypatch.setenv("HUBFERRY_VAULT_OLD_KEYS", f" {generate_key()} ,{old}")
    monkeypatch.setenv("HUBFERRY_VAULT_KEY", new)
    both = Vault.from_settings(load_settings())
    assert both.get("alice", HF_TOKEN) == TOKEN  # reads try every key
    both.set("carol", HF_TOKEN, "hf_carol")  # writes use the primary
    assert both.rotate() == 3
    monkeypatch.delenv("HUBFERRY_VAULT_OLD_KEYS")
    monkeypatch.delenv("HUBFERRY_VAULT_KEY")

    only_new = Vault(home, key=new)
    assert only_new.get("alice", HF_TOKEN) == TOKEN
    assert only_new.get("bob", HF_USERNAME) == "bob"
    assert only_new.get("carol", HF_TOKEN) == "hf_carol"
    with pytest.raises(ConfigError):
        Vault(home, key=old).get("alice", HF_TOKEN)


def test_rotation_with_an_unreadable_entry_writes_nothing(home: Path) -> None:
    old, new = generate_key(), generate_key()
    Vault(home, key=old).set("alice", HF_TOKEN, TOKEN)
    before = (home / "secrets.json").read_text()
    with pytest.raises(ConfigError):
        Vault(home, key=new).rotate()
    assert (home / "secrets.json").read_text() == before


@pytest.mark.parametrize("name", ["", "HF_TOKEN", "hf token", "hf.token", "a" * 65, "hf_token\n", "tok/../x"])
def test_invalid_names(home: Path, name: str) -> None:
    with pytest.raises(ValidationError, match="secret name") as info:
        Vault(home).set("alice", name, TOKEN)
    assert info.value.context["field"] == "name"
    assert not (home / "secrets.json").exists()


@pytest.mark.parametrize("owner", ["", "x" * 129, "al\nice", "al\x00ice", "al\u200bice", " alice"])
def test_invalid_owners(home: Path, owner: str) -> None:
    with pytest.raises(ValidationError, match="owner"):
        Vault(home).set(owner, HF_TOKEN, TOKEN)
    with pytest.raises(ValidationError):
        Vault(home).names(owner)


def test_owner_limits_accept_valid_values(home: Path) -> None:
    owner = "o" * 128
    Vault(home).set(owner, "a" * 64, TOKEN)
    assert Vault(home).names(owner) == ["a" * 64]


@pytest.mark.parametrize("value", ["", "x" * (16 * 1024 + 1), "bad\ud800surrogate-secretvalue"])
def test_invalid_values_are_never_quoted(home: Path, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        Vault(home).set("alice", HF_TOKEN, value)
    assert info.value.context["field"] == "value"
    if value:
        assert value[:10] not in str(info.value)


def test_repr_shows_the_path_only(home: Path) -> None:
    key = generate_key()
    vault = Vault(home, key=key)
    vault.set("alice", HF_TOKEN, TOKEN)
    vault.get("alice", HF_TOKEN)
    assert repr(vault) == f"Vault(path={str(home / 'secrets.json')!r})"
    assert key not in repr(vault) and TOKEN not in repr(vault)


def _writer(home: str, prefix: str, count: int, start: Any) -> None:
    vault = Vault(Path(home))
    start.wait(30)
    for i in range(count):
        vault.set("alice", f"{prefix}-{i}", f"value-{prefix}-{i}")


def test_concurrent_writers_lose_nothing(home: Path) -> None:
    # Spawn, not fork: the test process may already run threads (e.g. the session registry).
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    workers = [ctx.Process(target=_writer, args=(str(home), prefix, 50, start)) for prefix in ("a", "b")]
    for w in workers:
        w.start()
    start.set()  # both start at once, racing to create the key file and the vault
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    vault = Vault(home)
    expected = sorted(f"{p}-{i}" for p in ("a", "b") for i in range(50))
    assert vault.names("alice") == expected
    assert all(vault.get("alice", n) == f"value-{n}" for n in expected)


# -- CLI -----------------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_cli_set_prompts_hidden_and_lists_without_values(home: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["secrets", "set", HF_TOKEN, "--owner", "alice"], input=TOKEN + "\n")
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.stdout and TOKEN not in result.stderr
    result = runner.invoke(app, ["secrets", "set", HF_USERNAME, "--owner", "alice", "--value-stdin"],
                           input="alice-hf\n")
    assert result.exit_code == 0, result.output
    assert HubCredentials(Vault(home)).get("alice", "https://huggingface.co").token == TOKEN
    assert Vault(home).get("alice", HF_USERNAME) == "alice-hf"

    result = runner.invoke(app, ["secrets", "list", "--owner", "alice", "--json"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    listed = json.loads(lines[0])
    assert listed["owner"] == "alice"
    assert [s["name"] for s in listed["secrets"]] == [HF_TOKEN, HF_USERNAME]
    assert all(s["updated_at"] for s in listed["secrets"])
    hub = next(s for s in listed["secrets"] if s["name"] == HF_TOKEN)
    assert hub["endpoint"] == "https://huggingface.co" and hub["last4"] == TOKEN[-4:]
    assert TOKEN not in result.stdout and "alice-hf" not in result.stdout

    result = runner.invoke(app, ["secrets", "list", "--owner", "alice"])
    assert result.exit_code == 0
    assert HF_TOKEN in result.stdout and TOKEN not in result.stdout


def test_cli_value_is_not_accepted_from_argv(runner: CliRunner) -> None:
    result = runner.invoke(app, ["secrets", "set", HF_TOKEN, TOKEN, "--owner", "alice"])
    assert result.exit_code == 2
    assert TOKEN not in result.stdout


def test_cli_default_owner_is_the_os_account_not_logname(
    home: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os
    import pwd

    monkeypatch.setenv("LOGNAME", "victim")  # anyone can set this: it must not pick whose secrets are used
    monkeypatch.setenv("USER", "victim")
    result = runner.invoke(app, ["secrets", "set", HF_TOKEN, "--value-stdin"], input=TOKEN)
    assert result.exit_code == 0, result.output
    me = pwd.getpwuid(os.getuid()).pw_name
    assert [c.token for c in HubCredentials(Vault(home)).list(me)] == [TOKEN]
    assert HubCredentials(Vault(home)).list("victim") == []


def test_cli_delete(home: Path, runner: CliRunner) -> None:
    HubCredentials(Vault(home)).set("alice", "https://huggingface.co", TOKEN)
    result = runner.invoke(app, ["secrets", "delete", HF_TOKEN, "--owner", "alice"])
    assert result.exit_code == 0, result.output
    assert Vault(home).names("alice") == []
    result = runner.invoke(app, ["secrets", "delete", HF_TOKEN, "--owner", "alice"])
    assert result.exit_code == 1
    assert "No secret" in result.stderr


def test_cli_validation_exits_2_before_asking_for_the_value(home: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["secrets", "set", "Bad Name", "--owner", "alice"], input=TOKEN + "\n")
    assert result.exit_code == 2
    assert "secret name" in result.stderr
    assert "Value of" not in result.output
    assert not (home / "secrets.json").exists()
    result = runner.invoke(app, ["secrets", "list", "--owner", "", "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""


def test_cli_wrong_key_is_reported_without_traceback(
    home: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    Vault(home).set("alice", HF_TOKEN, TOKEN)
    monkeypatch.setenv("HUBFERRY_VAULT_KEY", generate_key())
    result = runner.invoke(app, ["secrets", "set", HF_USERNAME, "--owner", "alice", "--value-stdin"], input="x")
    assert result.exit_code == 2
    assert "HUBFERRY_VAULT_KEY" in result.stderr
    assert "Traceback" not in result.output and "InvalidToken" not in result.output
