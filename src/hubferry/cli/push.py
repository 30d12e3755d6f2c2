"""``hubferry push``: publish a folder to the Hub, resumably, and verify it by reading it back."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from hubferry import logs
from hubferry.cli.console import err, json_errors, print_json, say
from hubferry.config import load_settings
from hubferry.hub.progress import PushProgress, TransferRate, format_size

#: Stages after the bytes have all left: the transfer rate stops moving there.
_AFTER_UPLOAD = ("committing", "verifying", "done")


class PushBar:
    """A progress bar (bytes, average rate, time left) fed by :class:`PushProgress` events, on stderr.

    Sizes read as people write them (``15.7/15.7 MB``); the rate is the average since the upload
    started (see :class:`TransferRate`), so a fast upload does not end on a nonsense figure.
    """

    def __init__(self, enabled: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[sizes]}"),
            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[left]}"),
            console=err, disable=not enabled, transient=False,
        )
        self._task: TaskID | None = None
        self._rate = TransferRate(clock)

    def __enter__(self) -> PushBar:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def fields(self, event: PushProgress) -> dict[str, str]:
        """What the bar shows for ``event``: sizes, rate and time left."""
        if event.stage == "uploading" or (event.stage in _AFTER_UPLOAD and self._rate.per_second() is not None):
            self._rate.update(event.bytes_done, finished=event.bytes_done >= event.bytes_total > 0)
        rate = self._rate.per_second()
        left = ""
        if rate and event.stage == "uploading" and event.bytes_done < event.bytes_total:
            left = f"{(event.bytes_total - event.bytes_done) / rate:.0f} s left"
        sizes = f"{format_size(event.bytes_done)}/{format_size(event.bytes_total)}" if event.bytes_total else ""
        return {"sizes": sizes, "rate": self._rate.text(), "left": left}

    def __call__(self, event: PushProgress) -> None:
        description = f"{event.stage} {event.files_done}/{event.files_total} files"
        fields = self.fields(event)
        total = event.bytes_total or None
        if self._task is None:
            self._task = self._progress.add_task(
                description, total=total, sizes=fields["sizes"], rate=fields["rate"], left=fields["left"])
        self._progress.update(self._task, description=description, completed=event.bytes_done, total=total,
                              sizes=fields["sizes"], rate=fields["rate"], left=fields["left"])


def push(
    path: Annotated[Path, typer.Argument(help="Folder to publish.")],
    repo: Annotated[str, typer.Option("--repo", help="Target repo OWNER/NAME (created if missing).")],
    endpoint: Annotated[str | None, typer.Option(help="Hub URL (default: HF_ENDPOINT or huggingface.co).")] = None,
    token: Annotated[str | None, typer.Option(help="Hub token (default: HF_TOKEN or the saved login).")] = None,
    private: Annotated[
        bool | None,
        typer.Option("--private/--public", help="Visibility of a new repo (default private); an existing repo "
                     "keeps its own unless --update-visibility.", show_default=False),
    ] = None,
    update_visibility: Annotated[
        bool, typer.Option(help="Give an existing repo the visibility of --private/--public.")
    ] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to push to (created if missing).")] = None,
    message: Annotated[str | None, typer.Option(help="Commit message.")] = None,
    include: Annotated[list[str] | None, typer.Option(help="Only paths matching this glob (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Skip paths matching this glob (repeatable).")] = None,
    follow_symlinks: Annotated[
        bool, typer.Option(help="Publish links inside the folder as the files they point to (links out of the "
                           "folder are always refused).")
    ] = False,
    base_model: Annotated[str | None, typer.Option(help="Base model, for a generated model card.")] = None,
    license: Annotated[str | None, typer.Option(help="License id, for a generated model card.")] = None,
    trigger_word: Annotated[str | None, typer.Option(help="Trigger word, for a generated model card.")] = None,
    allow_secrets: Annotated[bool, typer.Option(help="Publish even if files look like they hold secrets.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as one JSON line.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Log every HTTP request and response.")] = False,
) -> None:
    """Publish a folder to the Hub, resumably, and verify it by reading it back."""
    from hubferry.hub.card import CardInfo
    from hubferry.hub.publish import publish

    json_errors(json_output, verified=False)
    if verbose:
        logs.configure(verbose=True)
    settings = load_settings()
    with PushBar(enabled=err.is_terminal or not json_output) as bar:
        publication = publish(
            path, repo, endpoint=endpoint, token=token, private=private, update_visibility=update_visibility,
            revision=revision, message=message, include=include or (), exclude=exclude or (),
            allow_secrets=allow_secrets, follow_symlinks=follow_symlinks, forbidden_roots=[settings.home],
            card=CardInfo(base_model=base_model, license=license, trigger_word=trigger_word),
            progress=bar, settings=settings, verbose=verbose,
        )
    for notice in publication.notices:
        say("note: ", notice)
    say(
        f"published and verified {len(publication.files)} files, {format_size(publication.bytes_uploaded)} sent, "
        f"commit {publication.commit_sha[:12]}: ", publication.revision_url,
    )
    if json_output:
        print_json(publication.to_dict())
