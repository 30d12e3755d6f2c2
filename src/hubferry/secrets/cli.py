"""``hubferry secrets ...``: store, list and delete a user's secrets without ever echoing a value."""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from hubferry.console import exit_code, print_error, print_json
from hubferry.errors import HubferryError, ValidationError
from hubferry.secrets.vault import Vault, validate_name

secrets_app = typer.Typer(help="Encrypted per-user secrets (Hub token, username, API keys).", no_args_is_help=True)

OwnerOption = Annotated[
    str | None, typer.Option("--owner", help="Whose secrets (default: the current OS user).", show_default=False)
]


def _home() -> Path:
    return Path(os.environ.get("HUBFERRY_HOME") or Path.home() / ".hubferry").expanduser()


def _owner(owner: str | None) -> str:
    if owner is not None:
        return owner
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise ValidationError("Cannot tell the current user", field="owner", hint="Pass --owner.") from None


def _fail(error: HubferryError) -> typer.Exit:
    print_error(error)
    return typer.Exit(exit_code(error))


@secrets_app.command("set")
def set_secret(
    name: Annotated[str, typer.Argument(help="Secret name, e.g. hf_token or hf_username.")],
    owner: OwnerOption = None,
    value_stdin: Annotated[
        bool, typer.Option("--value-stdin", help="Read the value from stdin instead of a hidden prompt.")
    ] = False,
) -> None:
    """Store a secret; the value is read from a hidden prompt or stdin, never from the command line."""
    try:
        who, name = _owner(owner), validate_name(name)  # reject a typo before asking for the value
        vault = Vault(_home())
        if value_stdin:
            value = sys.stdin.read().rstrip("\r\n")
        else:
            value = typer.prompt(f"Value of {name} for {who}", hide_input=True, err=True)
        vault.set(who, name, value)
    except HubferryError as exc:
        raise _fail(exc) from None
    typer.echo(f"Stored {name} for {who}.", err=True)


@secrets_app.command("list")
def list_secrets(
    owner: OwnerOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON line on stdout.")] = False,
) -> None:
    """List secret names and when they changed (never their values)."""
    try:
        who = _owner(owner)
        entries = Vault(_home()).entries(who)
    except HubferryError as exc:
        raise _fail(exc) from None
    if json_output:
        print_json({"owner": who, "secrets": [asdict(e) for e in entries]})
        return
    if not entries:
        typer.echo(f"No secrets for {who}.", err=True)
        return
    width = max(len(e.name) for e in entries)
    for e in entries:
        typer.echo(f"{e.name:<{width}}  {e.updated_at}")


@secrets_app.command("delete")
def delete_secret(
    name: Annotated[str, typer.Argument(help="Secret name.")],
    owner: OwnerOption = None,
) -> None:
    """Delete a secret; exits 1 if there was none."""
    try:
        who = _owner(owner)
        deleted = Vault(_home()).delete(who, name)
    except HubferryError as exc:
        raise _fail(exc) from None
    if not deleted:
        typer.echo(f"No secret {name} for {who}.", err=True)
        raise typer.Exit(1)
    typer.echo(f"Deleted {name} for {who}.", err=True)
