"""``hubferry users ...``: the accounts of ``hubferry serve``, managed on the server's own database.

Passwords and API tokens are printed once, on stdout (everything else goes to stderr), and are
stored only as hashes: a lost one is replaced, never shown again.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from hubferry.cli.console import print_json, safe, say
from hubferry.config import load_settings
from hubferry.errors import ValidationError

if TYPE_CHECKING:
    from hubferry.accounts import Accounts

users_app = typer.Typer(help="Accounts of `hubferry serve`: users, passwords and API tokens.", no_args_is_help=True)

NameArgument = Annotated[str, typer.Argument(help="The user name (also the owner of their jobs and secrets).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON line on stdout.")]


def _accounts() -> Accounts:
    """The accounts in the configured job database (migrated first)."""
    from hubferry.accounts import Accounts
    from hubferry.store import make_engine, upgrade

    settings = load_settings()
    if settings.url:  # the other commands would go to that service: say that these do not
        say("note: users are managed in this machine's database ", settings.database_display(),
            f", not on the service at HUBFERRY_URL ({settings.url.strip()}); run this on the service's machine")
    settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = make_engine(settings.resolved_database_url())
    upgrade(engine)
    return Accounts.on(engine)


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M") if at else "never"


@users_app.command("create")
def create(
    name: NameArgument,
    admin: Annotated[bool, typer.Option("--admin", help="May see every user's jobs (never their secrets).")] = False,
    token: Annotated[bool, typer.Option("--token", help="Also create an API token.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Create a user; prints a random initial password (and with --token an API token) once."""
    accounts = _accounts()
    user, password = accounts.create_user(name, admin=admin)
    created = accounts.create_token(user.name, "created with the user") if token else None
    if json_output:
        print_json({"name": user.name, "is_admin": user.is_admin, "password": password,
                    **({"token": created.secret, "token_id": created.record.id} if created else {})})
        return
    say(f"Created {'admin ' if admin else ''}user ", user.name,
        ". Shown once: sign in with this password, then change it with `hubferry users set-password NAME`.")
    typer.echo(f"password: {password}")
    if created:
        typer.echo(f"token: {created.secret}")


@users_app.command("token")
def create_token(
    name: NameArgument,
    label: Annotated[str, typer.Option("--name", help="What the token is for, e.g. 'laptop' or 'CI'.")] = "",
    json_output: JsonOption = False,
) -> None:
    """Create an API token for NAME; prints it alone on stdout, once."""
    created = _accounts().create_token(name, label)
    if json_output:
        print_json({"id": created.record.id, "label": created.record.label, "token": created.secret})
        return
    say(f"Created API token {created.record.id} for ", name, " (shown once; send it as 'Authorization: Bearer ...').")
    typer.echo(created.secret)


@users_app.command("tokens")
def list_tokens(name: NameArgument, json_output: JsonOption = False) -> None:
    """List NAME's API tokens: id, label, created, last used (never the tokens)."""
    found = _accounts().tokens(name)
    if json_output:
        print_json({"user": name, "tokens": [t.to_dict() for t in found]})
        return
    if not found:
        say("No API tokens for ", name, ".")
        return
    for t in found:
        typer.echo(f"{t.id}  created {_when(t.created_at)}  last used {_when(t.last_used_at)}  {safe(t.label)}")


@users_app.command("revoke-token")
def revoke_token(
    name: NameArgument,
    token_id: Annotated[str, typer.Argument(help="The token's id, as `hubferry users tokens NAME` lists it.")],
) -> None:
    """Revoke one of NAME's API tokens (at once: the next request with it gets 401); exits 1 if there is none."""
    if not _accounts().revoke_token(name, token_id):
        say("No live API token ", token_id, " for ", name, ".")
        raise typer.Exit(1)
    say("Revoked ", token_id, ".")


@users_app.command("list")
def list_users(json_output: JsonOption = False) -> None:
    """List the users."""
    found = _accounts().store.users()
    if json_output:
        print_json({"users": [{"name": u.name, "is_admin": u.is_admin, "created_at": u.created_at.isoformat()}
                              for u in found]})
        return
    if not found:
        say("No users yet: create the first with `hubferry users create NAME --admin`.")
        return
    for u in found:
        typer.echo(f"{u.name:<24}{'admin' if u.is_admin else 'user':<7}created {_when(u.created_at)}")


@users_app.command("set-password")
def set_password(
    name: NameArgument,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the new password from stdin.")]
    = False,
    generate: Annotated[bool, typer.Option("--generate", help="Set a random password and print it once.")] = False,
) -> None:
    """Set NAME's password (hidden prompt, stdin or --generate); NAME's dashboard sessions end."""
    if password_stdin and generate:
        raise ValidationError("--password-stdin and --generate exclude each other", field="password")
    accounts = _accounts()
    accounts.user(name)  # before asking for a password
    if generate:
        from hubferry.accounts.passwords import generate_password

        password = generate_password()
    elif password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = typer.prompt(f"New password for {name}", hide_input=True, confirmation_prompt=True, err=True)
    accounts.set_password(name, password)
    say("Password of ", name, " changed; their dashboard sessions have ended.")
    if generate:
        typer.echo(password)
