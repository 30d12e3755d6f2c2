"""Whether a dataset's rows have the columns a method trains on, judged on its first rows."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

from hubferry.errors import ValidationError
from hubferry.training_config._problems import Problem, raise_problems

#: Rows read and checked from the start of a dataset.
MAX_CHECKED_ROWS = 100
#: Longest JSONL line read (one example); longer lines are refused rather than read into memory.
MAX_LINE_BYTES = 8 * 1024 * 1024
#: Problems listed before the rest are only counted.
MAX_LISTED_PROBLEMS = 10
#: Roles a chat message may have.
ROLES = ("system", "user", "assistant", "tool")
_PREFERENCE = ("prompt", "chosen", "rejected")


def required_columns(method: str) -> str:
    """The columns ``method`` needs, in words."""
    if method == "sft":
        return "messages (a list of {role, content}) or prompt and completion"
    return "prompt, chosen and rejected"


def _text_problem(value: Any) -> str | None:
    """Why ``value`` is not usable text or a conversation, or ``None``."""
    if isinstance(value, str):
        return None if value.strip() else "is empty"
    if isinstance(value, list):
        return _messages_problem(value)
    return f"should be text or a list of messages, not {type(value).__name__}"


def _messages_problem(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "should be a non-empty list of {role, content} messages"
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not {"role", "content"} <= set(message):
            return f"message {i} should have role and content"
        if message["role"] not in ROLES:
            return f"message {i} has role {str(message['role'])[:40]!r}; roles are {', '.join(ROLES)}"
        if not isinstance(message["content"], str):
            return f"message {i} content should be text"
    return None


def _row_problems(method: str, number: int, row: Any) -> list[str]:
    if not isinstance(row, Mapping):
        return [f"row {number} is a {type(row).__name__}, not a record with columns"]
    if method == "sft":
        if "messages" in row:
            problem = _messages_problem(row["messages"])
            return [f"row {number}: messages {problem}"] if problem else []
        if "prompt" not in row and "completion" not in row:
            return [f"row {number} has neither messages nor prompt/completion (SFT needs {required_columns(method)})"]
        columns: tuple[str, ...] = ("prompt", "completion")
    else:
        columns = _PREFERENCE
    found = []
    for column in columns:
        if column not in row:
            found.append(f"row {number} has no '{column}' column ({method.upper()} needs "
                         f"{required_columns(method)})")
        elif problem := _text_problem(row[column]):
            found.append(f"row {number}: {column} {problem}")
    return found


def check_rows(method: str, rows: Iterable[Any], *, source: str = "dataset",
               max_rows: int = MAX_CHECKED_ROWS) -> int:
    """Check that the first ``max_rows`` of ``rows`` (dicts, one per example) suit ``method``.

    SFT wants ``messages`` (a list of ``{role, content}``) or ``prompt`` and ``completion``; DPO and
    ORPO want ``prompt``, ``chosen`` and ``rejected`` (text, or lists of messages).

    Returns:
        How many rows were checked.

    Raises:
        ValidationError: with ``field="dataset"``, listing every problem row (the first few, then a count).
    """
    lines: list[str] = []
    count = 0
    for count, row in enumerate(islice(rows, max_rows), start=1):
        lines.extend(_row_problems(method, count, row))
    if count == 0:
        lines.append("has no rows")
    if len(lines) > MAX_LISTED_PROBLEMS:
        lines = [*lines[:MAX_LISTED_PROBLEMS], f"... and {len(lines) - MAX_LISTED_PROBLEMS} more problems"]
    hint = f"{method.upper()} needs {required_columns(method)} in every row"
    raise_problems([Problem("dataset", line, hint) for line in lines], source=source)
    return count


def can_read_parquet() -> bool:
    """Whether pyarrow is installed, which reading a local Parquet dataset needs."""
    return importlib.util.find_spec("pyarrow") is not None


def read_rows(path: str | Path, *, max_rows: int = MAX_CHECKED_ROWS) -> list[dict[str, Any]]:
    """The first ``max_rows`` rows of a local ``.jsonl`` or ``.parquet`` dataset (blank JSONL lines skipped).

    Raises:
        ValidationError: the file is missing or unreadable, a line is not a JSON object (its line number
            named) or is longer than :data:`MAX_LINE_BYTES`, or the file is Parquet and pyarrow is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"dataset file {path} does not exist", field="dataset", path=str(path),
                              category="file_error", hint="check the path (relative paths are relative to the config)")
    if path.suffix.lower() == ".parquet":
        return _read_parquet(path, max_rows)
    rows: list[dict[str, Any]] = []
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES + 1), b""), start=1):
                if len(rows) >= max_rows:
                    break
                if len(raw) > MAX_LINE_BYTES:
                    raise ValidationError(f"dataset {path} line {number} is longer than {MAX_LINE_BYTES} bytes",
                                          field="dataset", path=str(path), line=number,
                                          hint="one example per line; is this really JSONL?")
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw)
                except ValueError as exc:
                    raise ValidationError(f"dataset {path} line {number} is not valid JSON: {exc}", field="dataset",
                                          path=str(path), line=number, hint="JSONL has one JSON object per line"
                                          ) from None
                if not isinstance(row, dict):
                    raise ValidationError(f"dataset {path} line {number} is a JSON {type(row).__name__}, not an "
                                          "object", field="dataset", path=str(path), line=number,
                                          hint='each line should look like {"prompt": ..., "completion": ...}')
                rows.append(row)
    except OSError as exc:
        raise ValidationError(f"cannot read dataset {path}: {exc.strerror}", field="dataset", path=str(path),
                              category="file_error") from None
    return rows


def _read_parquet(path: Path, max_rows: int) -> list[dict[str, Any]]:
    if not can_read_parquet():
        raise ValidationError(f"cannot check {path}: reading Parquet needs pyarrow, which is not installed",
                              field="dataset", path=str(path), category="file_error",
                              hint="pip install pyarrow, or convert the dataset to JSONL")
    pq = importlib.import_module("pyarrow.parquet")  # optional, untyped, so not a top-level import

    try:
        batch = next(pq.ParquetFile(path).iter_batches(batch_size=max_rows), None)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ValidationError(f"dataset {path} is not a readable Parquet file: {exc}", field="dataset",
                              path=str(path), category="file_error") from None
    return [] if batch is None else list(batch.to_pylist())
