"""``hubferry dataset check|pack``: judge a folder, zip or URL list of training images, or pack it into a
normalised, deterministic zip with a manifest.

Exit codes: 0 usable (check) or written (pack); 2 not usable, or bad input; 1 any other failure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
from rich.progress import Progress as Bar

from hubferry import dataset
from hubferry.cli.console import err, json_errors, print_json, say
from hubferry.config import load_settings
from hubferry.dataset.package import Progress
from hubferry.hub.progress import format_size

dataset_app = typer.Typer(help="Check and pack training images (folder, zip or URL list) into a dataset zip.",
                          no_args_is_help=True)

SourceArgument = Annotated[Path, typer.Argument(help="A folder of images, a .zip of them, or a text file with "
                                                "one http(s) image URL per line (optionally followed by a caption).",
                                                show_default=False)]
TriggerOption = Annotated[str | None, typer.Option("--trigger-word", help="Put this token into every caption "
                                                   "that lacks it.", show_default=False)]
MaxSideOption = Annotated[int, typer.Option("--max-side", help="Longest side of a normalised image, in pixels.")]
MinSideOption = Annotated[int, typer.Option("--min-side", help="Reject images whose short side is smaller.")]
MinImagesOption = Annotated[int, typer.Option("--min-images", help="Fewer usable images than this fails.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as one JSON line on stdout.")]
_SHOWN_REJECTIONS = 20


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    bar = Bar(TextColumn("normalising"), BarColumn(), MofNCompleteColumn(), console=err, transient=True)
    with bar:
        task = bar.add_task("images", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def _show(report: dataset.DatasetReport, verb: str) -> None:
    counts = f"{len(report.images)} images accepted, {len(report.rejections)} rejected, {len(report.skipped)} skipped"
    say(f"{verb} ", report.source, f" ({report.kind}): {counts}")
    resolutions = report.resolutions()
    if resolutions:
        say(f"  sizes: short side from {resolutions['min_side']} px, long side up to {resolutions['max_side']} px "
            f"(median {resolutions['median_long_side']}); {resolutions['downscaled']} scaled down to "
            f"{report.options.max_side} px")
    if report.images:
        inserted = sum(1 for i in report.images if i.trigger_inserted)
        trigger = f"; trigger word added to {inserted}" if report.options.trigger_word else ""
        say(f"  captions: {report.captioned}/{len(report.images)} ({report.caption_coverage:.0%}){trigger}")
    for rejection in report.rejections[:_SHOWN_REJECTIONS]:
        say("  rejected ", rejection.source, ": ", rejection.reason, style=None)
    if len(report.rejections) > _SHOWN_REJECTIONS:
        say(f"  ... and {len(report.rejections) - _SHOWN_REJECTIONS} more rejected (see --json)")
    for note in report.summary_warnings():
        say("  warning: ", note)
    if report.sha256:
        say(f"  dataset sha256 {report.sha256} ({format_size(report.zip_size or 0)})")


def _options(trigger_word: str | None, max_side: int, min_side: int, min_images: int) -> dataset.PackOptions:
    return dataset.PackOptions(trigger_word=trigger_word, max_side=max_side, min_side=min_side,
                               min_images=min_images)


@dataset_app.command("check")
def check(
    source: SourceArgument,
    trigger_word: TriggerOption = None,
    max_side: MaxSideOption = 1024,
    min_side: MinSideOption = 256,
    min_images: MinImagesOption = 1,
    json_output: JsonOption = False,
) -> None:
    """Check a dataset and print a report: exit 0 when it is usable, 2 when it is not."""
    json_errors(json_output, usable=False)
    options = _options(trigger_word, max_side, min_side, min_images)
    with _progress(err.is_terminal) as progress:
        report = dataset.check(source, options, load_settings(), progress=progress)
    _show(report, "checked")
    if json_output:
        print_json(report.to_dict())
    if not report.usable:
        say("not usable: ", f"{len(report.images)} usable images, at least {max(1, min_images)} needed", style="red")
        raise typer.Exit(2)


@dataset_app.command("pack")
def pack(
    source: SourceArgument,
    output: Annotated[Path, typer.Option("-o", "--output", help="The zip to write (replaced if it exists).")],
    trigger_word: TriggerOption = None,
    max_side: MaxSideOption = 1024,
    min_side: MinSideOption = 256,
    min_images: MinImagesOption = 1,
    json_output: JsonOption = False,
) -> None:
    """Normalise a dataset into a deterministic zip with manifest.json, and print the report."""
    json_errors(json_output, usable=False)
    options = _options(trigger_word, max_side, min_side, min_images)
    with _progress(err.is_terminal) as progress:
        result = dataset.pack(source, output, options, load_settings(), progress=progress)
    _show(result.report, "packed")
    say("wrote ", str(result.zip_path))
    if json_output:
        print_json(result.to_dict())
