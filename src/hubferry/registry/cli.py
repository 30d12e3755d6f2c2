"""``hubferry hub ...``: serve the registry, and manage its tokens and repos from the data directory."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError as PydanticValidationError

from hubferry.errors import ConfigError, ValidationError

from .settings import RegistrySettings

if TYPE_CHECKING:
    from sqlalchemy import Engine

hub_app = typer.Typer(help="The built-in Hugging Face Hub-compatible registry.", no_args_is_help=True)
token_app = typer.Typer(help="Access tokens.", no_args_is_help=True)
hub_app.add_typer(token_app, name="token")

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Data directory of the registry.",
        show_default="$HUBFERRY_HUB_DATA_DIR, else $HUBFERRY_HOME/hub, with HUBFERRY_HOME ~/.hubferry by default",
    ),
]
UserOption = Annotated[str | None, typer.Option("--user", help="Only this user's.", show_default=False)]


def load_settings(**overrides: Any) -> RegistrySettings:
    """Settings from ``HUBFERRY_HUB_*`` plus the given non-``None`` overrides.

    Raises:
        ConfigError: naming the invalid setting.
    """
    try:
        return RegistrySettings(**{k: v for k, v in overrides.items() if v is not None})
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        raise ConfigError(f"Invalid registry setting {field}: {first.get('msg')}", setting=field) from None


@hub_app.command()
def serve(
    data: DataOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8480).")] = None,
    multipart_threshold: Annotated[
        int | None, typer.Option(help="LFS objects above this many bytes go multipart.")
    ] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Multipart part size in bytes.")] = None,
    lfs_threshold: Annotated[int | None, typer.Option(help="Files above this many bytes go through LFS.")] = None,
    tree_page_size: Annotated[int | None, typer.Option(help="Entries per tree page.")] = None,
    public_url: Annotated[
        str | None,
        typer.Option(help="Base URL clients use (in links and signed URLs); default http://HOST:PORT."),
    ] = None,
    fault_rate: Annotated[float | None, typer.Option(help="Share of requests that fail on purpose (0..1).")] = None,
    fault_seed: Annotated[int | None, typer.Option(help="Seed of the fault sequence.")] = None,
    fault_kinds: Annotated[str | None, typer.Option(help="Any of 500,503,429,cut,lost,text429,html502,html503")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the registry until interrupted."""
    import uvicorn

    from .app import create_app

    with _usage_errors():
        settings = load_settings(
            data_dir=data, host=host, port=port, multipart_threshold=multipart_threshold, chunk_size=chunk_size,
            lfs_threshold=lfs_threshold, tree_page_size=tree_page_size, public_url=public_url,
            fault_rate=fault_rate, fault_seed=fault_seed, fault_kinds=fault_kinds,
        )  # fmt: skip
    app = create_app(settings)
    url = settings.public_url or settings.default_url
    typer.echo(f"hubferry registry on {url} (data: {settings.data_dir}); sign in at {url}/login", err=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, timeout_keep_alive=30)


@contextmanager
def _usage_errors() -> Iterator[None]:
    """Bad input and bad settings end the command with a one-line message and exit code 2."""
    try:
        yield
    except (ConfigError, ValidationError) as exc:
        typer.echo(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), err=True)
        raise typer.Exit(2) from None


def _engine(data: Path | None, *, create: bool = False) -> Engine:
    """The registry database in the data directory; unless ``create``, the directory must hold one."""
    from . import storage

    settings = load_settings(data_dir=data)
    if not create and not (settings.data_dir / "registry.sqlite3").exists():
        raise ConfigError(
            f"no registry data in {settings.data_dir}",
            hint="pass --data DIR (or set HUBFERRY_HUB_DATA_DIR), or create a token there first",
            setting="data_dir",
        )
    return storage.make_engine(settings.data_dir)


def _known_user(engine: Engine, user: str | None) -> None:
    from sqlalchemy import select

    from . import storage
    from .auth import validate_user_name

    if user is None:
        return
    validate_user_name(user)
    with storage.reading(engine) as conn:
        if conn.execute(select(storage.users.c.name).where(storage.users.c.name == user)).first() is None:
            raise ValidationError(f"No user {user!r} in this registry", field="user")


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        typer.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Argument(help="User name (created if new); also the user's namespace.")],
    data: DataOption = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="A token that can only read.")] = False,
    name: Annotated[str, typer.Option(help="Display name of the token.")] = "",
) -> None:
    """Create a token for USER and print it alone on stdout."""
    from .auth import create_token

    with _usage_errors():
        token = create_token(_engine(data, create=True), user, read_only=read_only, display_name=name)
    typer.echo(f"created a {'read' if read_only else 'write'} token for {user!r}", err=True)
    typer.echo(token)


@token_app.command("list")
def token_list(data: DataOption = None, user: UserOption = None) -> None:
    """List tokens: id, user, name, role, prefix, created, last used (never the tokens themselves)."""
    from .auth import list_tokens

    with _usage_errors():
        engine = _engine(data)
        _known_user(engine, user)
        tokens = list_tokens(engine, user)
    if not tokens:
        typer.echo("no tokens", err=True)
        return
    rows = [
        (str(t.id), t.user, t.name, t.role, f"{t.prefix}...", _when(t.created_at), _when(t.last_used_at))
        for t in tokens
    ]
    _table(("ID", "USER", "NAME", "ROLE", "TOKEN", "CREATED", "LAST USED"), rows)


@token_app.command("revoke")
def token_revoke(
    token: Annotated[str, typer.Argument(help="The token's id or prefix (as 'token list' shows them).")],
    data: DataOption = None,
) -> None:
    """Revoke a token: it stops working at once, and so do page sessions signed in with it."""
    from .auth import find_token, revoke_token

    with _usage_errors():
        engine = _engine(data)
        info = find_token(engine, token.strip())
        revoke_token(engine, info.id)
    typer.echo(f"revoked token {info.id} ({info.name}, {info.role}) of {info.user!r}", err=True)


@hub_app.command("repos")
def repos(
    data: DataOption = None,
    user: UserOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list on stdout.")] = False,
) -> None:
    """List repositories, private ones included (this reads the data directory directly)."""
    from .auth import ANONYMOUS
    from .blobs import BlobStore
    from .repos import RepoStore

    with _usage_errors():
        settings = load_settings(data_dir=data)
        engine = _engine(data)
        _known_user(engine, user)
        store = RepoStore(engine, BlobStore(settings.data_dir / "blobs"), settings.lfs_extensions)
        found = store.list_repos(ANONYMOUS, author=user, everything=True)
    if as_json:
        items = [
            {
                "id": repo.repo_id,
                "type": repo.type,
                "private": repo.private,
                "owner": repo.owner,
                "head": head,
                "created": _when(repo.created_at),
                "updated": _when(date),
            }
            for repo, head, date in found
        ]
        typer.echo(json.dumps(items, indent=2))
        return
    if not found:
        typer.echo("no repositories", err=True)
        return
    rows = [
        (repo.repo_id, repo.type, "private" if repo.private else "public", (head or "")[:12], _when(date))
        for repo, head, date in found
    ]
    _table(("REPO", "TYPE", "VISIBILITY", "HEAD", "UPDATED"), rows)


if __name__ == "__main__":
    hub_app()
