"""``hubferry secrets ...``: store, list, delete and rotate a user's secrets without ever echoing a value.

``hf_token`` is a Hub credential: one per Hub endpoint (``--endpoint``, default the configured one).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from hubferry.cli.console import print_json, say
from hubferry.config import load_settings
from hubferry.errors import ValidationError
from hubferry.secrets.hub_credentials import HubCredentials, is_credential_entry, normalise_endpoint
from hubferry.secrets.vault import HF_TOKEN, Vault, validate_name
from hubferry.services.identity import default_owner

secrets_app = typer.Typer(help="Encrypted per-user secrets (Hub tokens per endpoint, API keys).",
                          no_args_is_help=True)

OwnerOption = Annotated[
    str | None, typer.Option("--owner", help="Whose secrets (default: the current OS user).", show_default=False)
]
EndpointOption = Annotated[
    str | None, typer.Option("--endpoint", help="Hub URL an hf_token is for (default: HF_ENDPOINT or "
                             "huggingface.co).", show_default=False)
]


def _vault() -> Vault:
    return Vault.from_settings(load_settings())


def _owner(owner: str | None) -> str:
    if owner is None:
        return default_owner()
    if not owner.strip():
        raise ValidationError("the owner is empty", field="owner", hint="pass --owner NAME")
    return owner


def _endpoint(endpoint: str | None) -> str:
    return normalise_endpoint(endpoint or load_settings().resolved_endpoint())


@secrets_app.command("set")
def set_secret(
    name: Annotated[str, typer.Argument(help="Secret name, e.g. hf_token.")],
    owner: OwnerOption = None,
    endpoint: EndpointOption = None,
    value_stdin: Annotated[
        bool, typer.Option("--value-stdin", help="Read the value from stdin instead of a hidden prompt.")
    ] = False,
) -> None:
    """Store a secret; the value is read from a hidden prompt or stdin, never from the command line."""
    who, name = _owner(owner), validate_name(name)  # reject a typo before asking for the value
    vault = _vault()
    if value_stdin:
        value = sys.stdin.read().rstrip("\r\n")
    else:
        value = typer.prompt(f"Value of {name} for {who}", hide_input=True, err=True)
    if name == HF_TOKEN:
        where = _endpoint(endpoint)
        HubCredentials(vault).set(who, where, value)
        say(f"Stored {name} for {who} at ", where)
        return
    vault.set(who, name, value)
    say(f"Stored {name} for {who}.")


@secrets_app.command("list")
def list_secrets(
    owner: OwnerOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON line on stdout.")] = False,
) -> None:
    """List secret names and when they changed (never their values; Hub tokens by endpoint and last 4)."""
    who = _owner(owner)
    vault = _vault()
    listed: list[dict[str, str | None]] = [
        {"name": e.name, "updated_at": e.updated_at} for e in vault.entries(who) if not is_credential_entry(e.name)
    ]
    listed += [
        {"name": HF_TOKEN, "endpoint": c.endpoint, "username": c.username, "last4": c.token[-4:],
         "updated_at": c.updated_at}
        for c in HubCredentials(vault).list(who)
    ]
    listed.sort(key=lambda e: str(e["name"]))
    if json_output:
        print_json({"owner": who, "secrets": listed})
        return
    if not listed:
        say(f"No secrets for {who}.")
        return
    for entry in listed:
        extra = f"  {entry['endpoint']}  …{entry['last4']}  user={entry['username'] or '?'}" if "endpoint" in entry \
            else ""
        typer.echo(f"{entry['name']:<16}{extra}  {entry['updated_at']}")


@secrets_app.command("delete")
def delete_secret(
    name: Annotated[str, typer.Argument(help="Secret name.")],
    owner: OwnerOption = None,
    endpoint: EndpointOption = None,
) -> None:
    """Delete a secret; exits 1 if there was none."""
    who, name = _owner(owner), validate_name(name)
    vault = _vault()
    deleted = HubCredentials(vault).delete(who, _endpoint(endpoint)) if name == HF_TOKEN else vault.delete(who, name)
    if not deleted:
        say(f"No secret {name} for {who}.")
        raise typer.Exit(1)
    say(f"Deleted {name} for {who}.")


@secrets_app.command("rotate")
def rotate() -> None:
    """Re-encrypt every secret with the current key (HUBFERRY_VAULT_KEY or the key file), so the keys
    listed in HUBFERRY_VAULT_OLD_KEYS can be retired."""
    count = _vault().rotate()
    say(f"Re-encrypted {count} secret(s) with the current key; old keys may now be removed.")
