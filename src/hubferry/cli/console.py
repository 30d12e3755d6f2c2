"""Terminal output shared by CLI commands: safe text, errors, the one-line JSON contract."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

from hubferry.errors import ConfigError, HubferryError, ValidationError
from hubferry.logs import printable as plain

#: stdout carries only results (one JSON line with --json); everything else goes to stderr.
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

def safe(text: object) -> Text:
    """``text`` as a rich :class:`Text`: printed literally, never parsed as markup."""
    return Text(plain(text))


def say(message: str, *parts: object, style: str | None = None) -> None:
    """Print ``message`` (our own words) followed by ``parts`` (anyone's words, printed as text)."""
    line = Text(message, style=style or "")
    for part in parts:
        line.append(plain(part))
    err.print(line, soft_wrap=True)


def print_json(data: dict[str, Any]) -> None:
    """The script contract: one JSON object on a single line of stdout."""
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def exit_code(error: HubferryError) -> int:
    """The documented exit codes: 2 for bad input or settings, 1 for every other failure.

    (A ``train --wait`` whose training failed exits with the trainer's own code instead.)
    """
    return 2 if isinstance(error, (ValidationError, ConfigError)) else 1


def print_error(error: HubferryError) -> None:
    """Print the error with its context and next step, secrets redacted, escapes removed."""
    line = Text("error", style="bold red")
    line.append(f" ({error.category}): {plain(error.message)}")
    err.print(line, soft_wrap=True)
    for key in ("status", "url", "attempt", "elapsed_s", "path", "repo_id", "job_id", "commit_sha", "request_id"):
        if key in error.context:
            say(f"  {key}: ", error.context[key])
    if body := error.context.get("body"):
        say("  response: ", str(body)[:1024])
    if error.hint:
        say("  next step: ", error.hint)


class _ErrorFormat:
    """Whether the running command promised JSON on stdout (its errors then print JSON too)."""

    json = False
    extra: dict[str, Any] = {}


def json_errors(enabled: bool, **extra: Any) -> None:
    """Called by a command that takes ``--json``: its failures also print ``{"error": ..., **extra}`` on stdout."""
    _ErrorFormat.json, _ErrorFormat.extra = enabled, extra


def report(error: HubferryError) -> int:
    """The error boundary's output: the error on stderr (and as JSON when promised); returns the exit code."""
    print_error(error)
    if _ErrorFormat.json:
        print_json({"error": {k: plain(v) if isinstance(v, str) else v for k, v in error.to_dict().items()},
                    **_ErrorFormat.extra})
    return exit_code(error)
