"""``hubferry logs show|parse``: read a job's trainer log, or parse any log into a progress snapshot."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from hubferry.cli.backend import jobs_backend
from hubferry.cli.console import plain, print_json
from hubferry.cli.render import ended
from hubferry.errors import ValidationError
from hubferry.tracking import parse_log

logs_app = typer.Typer(no_args_is_help=True, help="Read trainer logs.")
#: How often ``logs show --follow`` looks for new lines.
FOLLOW_INTERVAL_S = 0.5


@logs_app.command("show")
def logs_show(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, max=100_000, help="Last lines to show.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the job ends.")]
    = False,
) -> None:
    """Print a job's trainer log (escape sequences removed, secrets redacted)."""
    backend = jobs_backend()
    text, cursor = backend.log_tail(job_id, lines)
    if text:
        sys.stdout.write(plain(text) + "\n")
    if not follow:
        return
    while True:
        done = ended(backend.show(job_id))
        new, cursor = backend.log_after(job_id, cursor, final=done)
        for line in new:
            sys.stdout.write(plain(line) + "\n")
        sys.stdout.flush()
        if done:
            return
        time.sleep(FOLLOW_INTERVAL_S)


@logs_app.command("parse")
def logs_parse(
    file: Annotated[str, typer.Argument(help="Log file, or - for stdin.")] = "-",
    total_steps: Annotated[int | None, typer.Option(help="Steps of the training bar.")] = None,
) -> None:
    """Print the progress snapshot of a trainer log as one line of JSON."""
    try:
        if file == "-":
            snapshot = parse_log(sys.stdin, total_steps=total_steps)
        else:
            with open(file, encoding="utf-8", errors="replace") as fh:
                snapshot = parse_log(fh, total_steps=total_steps)
    except OSError as exc:
        raise ValidationError(f"cannot read {file}: {exc.strerror}", category="file_error", path=file,
                              hint="check the path") from None
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    print_json(snapshot.to_dict())
