"""The ``hubferry`` command line: one module per command group, one error boundary for all of them.

Exit codes: 0 ok; 2 bad input or settings; 1 any other failure; ``train --wait`` whose training
failed exits with the trainer's own exit code.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from hubferry import logs
from hubferry.cli.console import report
from hubferry.config import load_settings
from hubferry.errors import HubferryError


class _Boundary(TyperGroup):
    """Turns every :class:`HubferryError` of every command (including bad settings) into its message and
    exit code, never a traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context, which typer does not export
        try:
            return super().invoke(ctx)
        except HubferryError as error:
            raise typer.Exit(report(error)) from None


app = typer.Typer(
    name="hubferry", cls=_Boundary, no_args_is_help=True, add_completion=False,
    help="From training data to a published, verified model on the Hugging Face Hub.",
)


@app.callback()
def main(
    typer_ctx: typer.Context,
    log_json: Annotated[bool, typer.Option("--log-json", help="Structured JSON logs on stderr "
                                           "(or HUBFERRY_LOG_JSON=1).")] = False,
) -> None:
    """Configure logging: interactive commands stay quiet unless --verbose; worker and serve log INFO."""
    log_json = log_json or load_settings().log_json
    service = typer_ctx.invoked_subcommand in ("worker", "serve") or log_json
    logs.configure(json=log_json, quiet=not service)
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # an entry point may: hubferry draws its own progress (jobs, pushes)


def _register() -> None:
    from hubferry.cli import adopt, jobs, logs_cmd, push, secrets, service, train
    from hubferry.registry.cli import hub_app

    app.add_typer(hub_app, name="hub", help="The built-in Hugging Face Hub-compatible registry.")
    app.add_typer(jobs.jobs_app, name="jobs")
    app.add_typer(logs_cmd.logs_app, name="logs")
    app.add_typer(secrets.secrets_app, name="secrets")
    from hubferry.cli import users
    app.add_typer(users.users_app, name="users")
    from hubferry.cli.dataset import dataset_app
    app.add_typer(dataset_app, name="dataset", help="Check and pack training images into a dataset zip.")
    app.add_typer(adopt.adopt_app, name="adopt")
    from hubferry.cli import config_cmd
    app.add_typer(config_cmd.config_app, name="config")
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train.train)
    for command in (jobs.watch, jobs.cancel, jobs.retry, service.worker, service.serve, push.push):
        app.command()(command)
    from hubferry.cli.agent import agent
    app.command()(agent)


_register()
