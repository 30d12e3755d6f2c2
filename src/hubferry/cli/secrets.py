"""``hubferry secrets ...``: store, list, delete and rotate a user's secrets without ever echoing a value.

``hf_token`` is a Hub credential: one per Hub endpoint (``--endpoint``, default the configured one).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from hubferry.cli.backend import local_only, secrets_backend
from hubferry.cli.console import print_json, say
from hubferry.config import load_settings
from hubferry.secrets.vault import Vault, validate_name

secrets_app = typer.Typer(help="Encrypted per-user secrets (Hub tokens per endpoint, API keys); on the service "
                          "when HUBFERRY_URL is set.", no_args_is_help=True)

OwnerOption = Annotated[
    str | None, typer.Option("--owner", help="Whose secrets (default: the current OS user; through a service: "
                             "the API token's user).", show_default=False)
]
EndpointOption = Annotated[
    str | None, typer.Option("--endpoint", help="Hub URL an hf_token is for (default: HF_ENDPOINT or "
                             "huggingface.co).", show_default=False)
]


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
    name = validate_name(name)  # reject a typo before asking for the value
    store = secrets_backend()
    who = store.owner(owner)
    if value_stdin:
        value = sys.stdin.read().rstrip("\r\n")
    else:
        value = typer.prompt(f"Value of {name} for {who}", hide_input=True, err=True)
    where = store.set(who, name, value, endpoint)
    if where is not None:
        say(f"Stored {name} for {who} at ", where)
    else:
        say(f"Stored {name} for {who}.")


@secrets_app.command("list")
def list_secrets(
    owner: OwnerOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON line on stdout.")] = False,
) -> None:
    """List secret names and when they changed (never their values; Hub tokens by endpoint and last 4)."""
    store = secrets_backend()
    who = store.owner(owner)
    listed = sorted(store.entries(who), key=lambda e: str(e["name"]))
    if json_output:
        print_json({"owner": who, "secrets": listed})
        return
    if not listed:
        say(f"No secrets for {who}.")
        return
    for entry in listed:
        extra = f"  {entry['endpoint']}  …{entry['last4'] or '????'}  user={entry['username'] or '?'}" \
            if "endpoint" in entry else ""
        typer.echo(f"{entry['name']:<16}{extra}  {entry['updated_at']}")


@secrets_app.command("delete")
def delete_secret(
    name: Annotated[str, typer.Argument(help="Secret name.")],
    owner: OwnerOption = None,
    endpoint: EndpointOption = None,
) -> None:
    """Delete a secret; exits 1 if there was none."""
    name = validate_name(name)
    store = secrets_backend()
    who = store.owner(owner)
    if not store.delete(who, name, endpoint):
        say(f"No secret {name} for {who}.")
        raise typer.Exit(1)
    say(f"Deleted {name} for {who}.")


@secrets_app.command("rotate")
def rotate() -> None:
    """Re-encrypt every secret with the current key (HUBFERRY_VAULT_KEY or the key file), so the keys
    listed in HUBFERRY_VAULT_OLD_KEYS can be retired."""
    local_only("secrets rotate")
    count = Vault.from_settings(load_settings()).rotate()
    say(f"Re-encrypted {count} secret(s) with the current key; old keys may now be removed.")
