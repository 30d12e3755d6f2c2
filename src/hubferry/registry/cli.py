"""``hubferry hub ...``: serve the registry and manage its tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError as PydanticValidationError

from hubferry.errors import ConfigError, ValidationError

from .settings import RegistrySettings

hub_app = typer.Typer(help="The built-in Hugging Face Hub-compatible registry.", no_args_is_help=True)
token_app = typer.Typer(help="Access tokens.", no_args_is_help=True)
hub_app.add_typer(token_app, name="token")

DataOption = Annotated[
    Path | None, typer.Option("--data", help="Data directory (env HUBFERRY_HUB_DATA_DIR).", show_default=False)
]


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
    public_url: Annotated[str | None, typer.Option(help="Base URL clients use, if behind a proxy.")] = None,
    fault_rate: Annotated[float | None, typer.Option(help="Share of requests that fail on purpose (0..1).")] = None,
    fault_seed: Annotated[int | None, typer.Option(help="Seed of the fault sequence.")] = None,
    fault_kinds: Annotated[str | None, typer.Option(help="Comma-separated: 500,503,429,cut,lost.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the registry until interrupted."""
    import uvicorn

    from .app import create_app

    try:
        settings = load_settings(
            data_dir=data, host=host, port=port, multipart_threshold=multipart_threshold, chunk_size=chunk_size,
            lfs_threshold=lfs_threshold, tree_page_size=tree_page_size, public_url=public_url,
            fault_rate=fault_rate, fault_seed=fault_seed, fault_kinds=fault_kinds,
        )  # fmt: skip
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    app = create_app(settings)
    typer.echo(f"hubferry registry on http://{settings.host}:{settings.port} (data: {settings.data_dir})", err=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, timeout_keep_alive=30)


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Argument(help="User name (created if new); also the user's namespace.")],
    data: DataOption = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="A token that can only read.")] = False,
    name: Annotated[str, typer.Option(help="Display name of the token.")] = "",
) -> None:
    """Create a token for USER and print it alone on stdout."""
    from . import storage
    from .auth import create_token

    try:
        settings = load_settings(data_dir=data)
        token = create_token(storage.make_engine(settings.data_dir), user, read_only=read_only, display_name=name)
    except (ConfigError, ValidationError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"created a {'read' if read_only else 'write'} token for {user!r}", err=True)
    typer.echo(token)


if __name__ == "__main__":
    hub_app()
