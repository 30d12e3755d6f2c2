"""``hubferry config check job.toml``: validate an LLM fine-tuning config (and a local dataset's columns).

Exit codes: 0 valid; 2 invalid (every problem listed); 1 any other failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hubferry.cli.console import json_errors, print_json, say
from hubferry.errors import ValidationError

config_app = typer.Typer(no_args_is_help=True, help="Check LLM fine-tuning configs (SFT, DPO, ORPO).")


@config_app.command("check")
def check(
    path: Annotated[Path, typer.Argument(help="The config: .toml, or .yaml/.yml.", show_default=False)],
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as one JSON line on stdout.")] = False,
) -> None:
    """Validate a training config and list every problem; a local dataset file's first rows are checked too."""
    from hubferry import training_config

    json_errors(json_output, valid=False)
    try:
        config = training_config.load(path)
        rows_checked: int | None = None
        skipped = ""
        if config.dataset_is_local:
            dataset = Path(config.dataset).expanduser()
            dataset = dataset if dataset.is_absolute() else path.parent / dataset
            if dataset.suffix.lower() == ".parquet" and not training_config.can_read_parquet():
                skipped = "columns not checked: reading Parquet needs pyarrow (pip install pyarrow)"
            else:
                rows = training_config.read_rows(dataset)
                rows_checked = training_config.check_rows(config.method, rows, source=f"dataset {dataset}")
    except ValidationError as error:
        json_errors(json_output, valid=False, problems=error.context.get("problems", []))
        raise
    say("valid: ", config.summary())
    if rows_checked is not None:
        say(f"  dataset: first {rows_checked} rows have the columns {config.method.upper()} needs")
    if skipped:
        say("  warning: ", skipped)
    if json_output:
        print_json({"valid": True, "config": config.model_dump(mode="json"), "rows_checked": rows_checked,
                    "warnings": [skipped] if skipped else []})
