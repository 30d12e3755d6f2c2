"""The ``hubferry`` command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from hubferry import logs
from hubferry.config import load_settings
from hubferry.console import PushBar, err, exit_code, print_error, print_json
from hubferry.errors import HubferryError
from hubferry.hub import CardInfo, publish
from hubferry.jobs_cli import cancel, jobs_app, logs_app, retry, serve, train, watch, worker
from hubferry.registry.cli import hub_app
from hubferry.secrets.cli import secrets_app

app = typer.Typer(
    name="hubferry", no_args_is_help=True, add_completion=False,
    help="From training data to a published, verified model on the Hugging Face Hub.",
)
app.add_typer(hub_app, name="hub", help="The built-in Hugging Face Hub-compatible registry.")
app.add_typer(jobs_app, name="jobs")
app.add_typer(logs_app, name="logs")
app.add_typer(secrets_app, name="secrets", help="Per-user encrypted secrets (hf_token, hf_username).")
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train)
app.command()(watch)
app.command()(cancel)
app.command()(retry)
app.command()(worker)
app.command()(serve)


@app.callback()
def main(
    typer_ctx: typer.Context,
    log_json: Annotated[bool, typer.Option("--log-json", help="Structured JSON logs on stderr.")] = False,
) -> None:
    """Configure logging: interactive commands stay quiet unless --verbose; worker and serve log INFO."""
    json_logs = log_json or os.environ.get("HUBFERRY_LOG_JSON", "").lower() in ("1", "true")
    service = typer_ctx.invoked_subcommand in ("worker", "serve") or json_logs
    logs.configure(json=json_logs, quiet=not service)


@app.command()
def push(
    path: Annotated[Path, typer.Argument(help="Folder to publish.")],
    repo: Annotated[str, typer.Option("--repo", help="Target repo OWNER/NAME (created if missing).")],
    endpoint: Annotated[str | None, typer.Option(help="Hub URL (default: HF_ENDPOINT or huggingface.co).")] = None,
    token: Annotated[str | None, typer.Option(help="Hub token (default: HF_TOKEN or the saved login).")] = None,
    private: Annotated[bool, typer.Option("--private/--public", help="Visibility of a new repo.")] = True,
    revision: Annotated[str | None, typer.Option(help="Branch to push to (created if missing).")] = None,
    message: Annotated[str | None, typer.Option(help="Commit message.")] = None,
    include: Annotated[list[str] | None, typer.Option(help="Only paths matching this glob (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Skip paths matching this glob (repeatable).")] = None,
    base_model: Annotated[str | None, typer.Option(help="Base model, for a generated model card.")] = None,
    license: Annotated[str | None, typer.Option(help="License id, for a generated model card.")] = None,
    trigger_word: Annotated[str | None, typer.Option(help="Trigger word, for a generated model card.")] = None,
    allow_secrets: Annotated[bool, typer.Option(help="Publish even if files look like they hold secrets.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as one JSON line.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Log every HTTP request and response.")] = False,
) -> None:
    """Publish a folder to the Hub, resumably, and verify it by reading it back."""
    if verbose:
        logs.configure(verbose=True)
    try:
        settings = load_settings()
        with PushBar(enabled=err.is_terminal or not json_output) as bar:
            publication = publish(
                path, repo, endpoint=endpoint, token=token, private=private, revision=revision, message=message,
                include=include or (), exclude=exclude or (), allow_secrets=allow_secrets,
                card=CardInfo(base_model=base_model, license=license, trigger_word=trigger_word),
                progress=bar, settings=settings, verbose=verbose,
            )
    except HubferryError as error:
        print_error(error)
        if json_output:
            print_json({"error": error.to_dict(), "verified": False})
        raise typer.Exit(exit_code(error)) from None
    err.print(
        f"[green]published and verified[/] {len(publication.files)} files, "
        f"{publication.bytes_uploaded} bytes sent, commit {publication.commit_sha[:12]}: {publication.repo_url}",
    )
    if json_output:
        print_json(publication.to_dict())
