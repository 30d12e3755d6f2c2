"""Terminal output shared by CLI commands: errors, progress bars, the one-line JSON contract."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from hubferry.errors import ConfigError, HubferryError, ValidationError
from hubferry.hub.progress import PushProgress
from hubferry.logs import redact

#: stdout carries only results (one JSON line with --json); everything else goes to stderr.
err = Console(stderr=True, highlight=False)


def print_json(data: dict[str, Any]) -> None:
    """The script contract: one JSON object on a single line of stdout."""
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def exit_code(error: HubferryError) -> int:
    """2 for bad input or settings, 1 for every other failure."""
    return 2 if isinstance(error, (ValidationError, ConfigError)) else 1


def print_error(error: HubferryError) -> None:
    """Print the error with its context and next step, secrets redacted."""
    err.print(f"[bold red]error[/] ({error.category}): {redact(error.message)}", markup=True, soft_wrap=True)
    for key in ("status", "url", "attempt", "elapsed_s", "path", "repo_id", "commit_sha", "request_id"):
        if key in error.context:
            err.print(f"  {key}: {redact(str(error.context[key]))}", markup=False, soft_wrap=True)
    if body := error.context.get("body"):
        err.print(f"  response: {redact(str(body))[:1024]}", markup=False, soft_wrap=True)
    if error.hint:
        err.print(f"  next step: {redact(error.hint)}", markup=False, soft_wrap=True)


class PushBar:
    """A rich progress bar (bytes, rate, ETA) fed by :class:`PushProgress` events, on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(), console=err, disable=not enabled, transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> PushBar:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, event: PushProgress) -> None:
        description = f"{event.stage} {event.files_done}/{event.files_total} files"
        if self._task is None:
            self._task = self._progress.add_task(description, total=event.bytes_total or None)
        self._progress.update(
            self._task, description=description, completed=event.bytes_done, total=event.bytes_total or None,
        )
