"""Problems found in a training config, and how they become one ValidationError listing them all."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import ErrorDetails

from hubferry.errors import ValidationError

#: Longest rendering of an offending value quoted in a message.
_MAX_SHOWN_VALUE = 60


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (a dotted path such as ``training.learning_rate``), what, and what to do."""

    field: str
    message: str
    hint: str = ""
    #: Where in the file, when known (1-based).
    line_number: int | None = None

    @property
    def line(self) -> str:
        """The problem as one line that starts with its path (and ends with its line in the file, if known)."""
        text = self.message if self.message.startswith(self.field) else f"{self.field}: {self.message}"
        return text if self.line_number is None else f"{text} (line {self.line_number})"

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "message": self.line, "hint": self.hint, "line": self.line_number}


def dotted(loc: Iterable[int | str]) -> str:
    """A pydantic location as ``training.learning_rate`` or ``lora.target_modules[0]``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple | dict | set):  # never repr: YAML aliases can nest a list a billion times
        return f"a {'table' if isinstance(value, dict) else 'list'} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN_VALUE else text[: _MAX_SHOWN_VALUE - 3] + "..."


def from_pydantic(errors: Sequence[ErrorDetails], *, prefix: Sequence[str] = ()) -> list[Problem]:
    """Problems from pydantic's errors, worded for people editing a file."""
    problems = []
    for error in errors:
        path = dotted([*prefix, *error["loc"]]) or "(top level)"
        kind, ctx = error["type"], error.get("ctx") or {}
        message = error["msg"].removeprefix("Input ").removeprefix("Value error, ")
        if kind == "missing":
            message = "is required"
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            message = "should be a table of settings ([section] in TOML, an indented block in YAML)"
        elif kind == "bool_type":
            message = "should be true or false"
        if kind != "missing" and "input" in error and not isinstance(error["input"], dict):
            shown = _shown(error["input"])
            message += "" if shown in message else f" (got {shown})"
        problems.append(Problem(path, message, str(ctx.get("hint", ""))))
    return problems


def raise_problems(problems: Sequence[Problem], *, source: str, **context: Any) -> None:
    """Raise one :class:`ValidationError` naming every problem, one per line; return if there are none.

    ``field`` is the first problem's path; ``problems`` holds them all as dicts (path, line, hint).
    """
    if not problems:
        return
    unique = list(dict.fromkeys(problems))
    if len(unique) == 1:
        line = unique[0].line
        message, hint = (line if line.startswith(source) else f"{source}: {line}"), unique[0].hint
    else:
        message = f"{source} has {len(unique)} problems:\n" + "\n".join(f"  {p.line}" for p in unique)
        hint = "fix each line above; `hubferry config check FILE` lists what remains"
    raise ValidationError(message, field=unique[0].field, hint=hint,
                          problems=[p.to_dict() for p in unique], **context)
