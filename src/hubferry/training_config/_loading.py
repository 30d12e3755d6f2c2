"""Reading a training config from TOML or YAML, and validating it with every problem reported at once."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic
import yaml

from hubferry.errors import ValidationError
from hubferry.training_config._keys import check_keys
from hubferry.training_config._problems import Problem, from_pydantic, raise_problems
from hubferry.training_config._sections import METHOD_SECTIONS, METHODS, DpoConfig, OrpoConfig, SftConfig

TrainingConfigModel = SftConfig | DpoConfig | OrpoConfig

#: Largest config file read.
MAX_CONFIG_BYTES = 1024 * 1024
#: Suffixes read as YAML; everything else is read as TOML.
YAML_SUFFIXES = (".yaml", ".yml")

_MODELS: dict[str, type[SftConfig | DpoConfig | OrpoConfig]] = {
    "sft": SftConfig, "dpo": DpoConfig, "orpo": OrpoConfig,
}


def load(path: str | Path) -> TrainingConfigModel:
    """Read and validate the training config at ``path`` (``.toml``, or ``.yaml``/``.yml``).

    Raises:
        ValidationError: the file is missing, too large, not TOML/YAML (with the line), or its content is
            invalid: every problem is listed, one per line, with ``field`` set to the first one's dotted path.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ValidationError(f"cannot read training config {path}: {exc.strerror}", category="file_error",
                              path=str(path), hint="check the path") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValidationError(f"training config {path} is larger than 1 MiB", path=str(path),
                              hint="a training config is a few dozen lines; datasets go in their own file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"training config {path} is not UTF-8 text (byte {exc.start})", path=str(path),
                              hint="save the file as UTF-8") from None
    fmt = "yaml" if path.suffix.lower() in YAML_SUFFIXES else "toml"
    return loads(text, fmt=fmt, source=str(path))


def loads(text: str, *, fmt: str = "toml", source: str = "training config") -> TrainingConfigModel:
    """Parse ``text`` as TOML or YAML (``fmt``) and validate it; see :func:`load`."""
    data: Any
    lines: dict[str, int] = {}
    if fmt == "yaml":
        try:
            data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ValidationError(f"{source} is not valid YAML{where}: {exc.problem or exc.context}",
                                  path=source, line=mark.line + 1 if mark else None,
                                  hint="fix the line it names") from None
        except yaml.YAMLError as exc:
            raise ValidationError(f"{source} is not valid YAML: {exc}", path=source) from None
        lines = _yaml_key_lines(text)
    elif fmt == "toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:  # its message ends with "(at line L, column C)"
            raise ValidationError(f"{source} is not valid TOML: {exc}", path=source,
                                  hint="fix the line it names") from None
        lines = _toml_key_lines(text)
    else:
        raise ValueError(f"unknown config format {fmt!r}")
    return parse(data, source=source, key_lines=lines)


def _yaml_key_lines(text: str) -> dict[str, int]:
    """The line of each key (top level and one level down) of a YAML document, from the parser's marks."""
    lines: dict[str, int] = {}
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    for key, value in root.value if isinstance(root, yaml.MappingNode) else ():
        lines[str(key.value)] = key.start_mark.line + 1
        for sub, _ in value.value if isinstance(value, yaml.MappingNode) else ():
            lines[f"{key.value}.{sub.value}"] = sub.start_mark.line + 1
    return lines


_TOML_TABLE = re.compile(r"\[\s*([A-Za-z0-9_-]+)\s*\]\s*(#.*)?$")
_TOML_KEY = re.compile(r"([A-Za-z0-9_-]+)\s*=")


def _toml_key_lines(text: str) -> dict[str, int]:
    """The line of each bare key and ``[table]`` of a TOML document (tomllib gives none; quoted keys are skipped)."""
    lines: dict[str, int] = {}
    table = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if header := _TOML_TABLE.match(stripped):
            table = header.group(1)
            lines.setdefault(table, number)
        elif key := _TOML_KEY.match(stripped):
            lines.setdefault(f"{table}.{key.group(1)}" if table else key.group(1), number)
    return lines


def _located(problem: Problem, key_lines: Mapping[str, int]) -> Problem:
    path = problem.field.split("[")[0]
    while path and path not in key_lines:
        path = path.rpartition(".")[0]
    return dataclasses.replace(problem, line_number=key_lines[path]) if path else problem


def parse(data: Any, *, source: str = "training config",
          key_lines: Mapping[str, int] | None = None) -> TrainingConfigModel:
    """Validate already-parsed config ``data`` (a dict, e.g. a JSON request body) into the method's config.

    ``key_lines`` maps dotted paths to their line in the file, to show in messages.

    Raises:
        ValidationError: every problem at once; see :func:`load`.
    """
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise_problems([Problem("(top level)", f"the config should be a table of settings, but it is {kind}",
                                "start from examples/runpod_sft.toml")], source=source, path=source)
    problems, clean = check_keys(data)
    method = clean.get("method")
    if method not in METHODS:
        shown = "is required" if method is None else f"should be one of {', '.join(METHODS)} (got {method!r})"
        problems.insert(0, Problem("method", f"method {shown}", 'e.g. method = "sft"'))
        # Still check everything else, as if SFT, so that one run lists every problem.
        clean = {k: v for k, v in clean.items() if k not in METHOD_SECTIONS} | {"method": "sft"}
        method = "sft"
    try:
        config = _MODELS[method].model_validate(clean)
    except pydantic.ValidationError as exc:
        problems.extend(from_pydantic(exc.errors()))
    raise_problems([_located(p, key_lines or {}) for p in problems], source=source, path=source)
    return config
