"""Unknown and misplaced keys: a map of every known key to its section, used to say where a key belongs."""

from __future__ import annotations

import difflib
from typing import Any

from hubferry.training_config._problems import Problem
from hubferry.training_config._sections import (
    METHOD_SECTIONS,
    METHODS,
    SECTIONS,
    TOP_LEVEL_VALUES,
    lora_conflict,
)

#: Every key a section may hold → the sections that hold it (``beta`` is in both ``dpo`` and ``orpo``).
LEAF_SECTIONS: dict[str, tuple[str, ...]] = {}
for _section, _model in SECTIONS.items():
    for _key in _model.model_fields:
        LEAF_SECTIONS[_key] = (*LEAF_SECTIONS.get(_key, ()), _section)
#: Every key allowed at the top level.
TOP_LEVEL_KEYS: tuple[str, ...] = (*TOP_LEVEL_VALUES, *SECTIONS)
#: Every full path a config may set, e.g. ``training.learning_rate``, for spelling suggestions.
ALL_PATHS: tuple[str, ...] = (*TOP_LEVEL_VALUES, *(f"{s}.{k}" for s, keys in
                                                   ((s, m.model_fields) for s, m in SECTIONS.items()) for k in keys))
#: How close a spelling must be (difflib ratio) to be suggested.
_CUTOFF = 0.6
_MOVE_HINT = "move it into that table ([section] in TOML) or under that key, indented (YAML)"


def _home(key: str, method: str | None) -> str | None:
    """The section ``key`` belongs in, preferring the config's own method (``beta`` → ``dpo`` for DPO)."""
    sections = LEAF_SECTIONS.get(key, ())
    if method in sections:
        return method
    usable = [s for s in sections if s not in METHOD_SECTIONS or method is None]
    return (usable or list(sections))[0] if sections else None


def _suggest(key: str, candidates: tuple[str, ...] | list[str]) -> str | None:
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=_CUTOFF)
    return match[0] if match else None


def _misplaced(key: str, path: str, method: str | None, here: str | None) -> Problem | None:
    home = _home(key, method)
    if home is None or home == here:
        return None
    if home in METHOD_SECTIONS and method is not None and method != home:
        return Problem(path, f"{path} belongs under {home}:, which is only allowed with method = \"{home}\"",
                       f"this config's method is \"{method}\"; remove {key}")
    return Problem(path, f"{path} belongs under {home}: (as {home}.{key})", _MOVE_HINT)


def _unknown(key: str, path: str, section: str | None) -> Problem:
    known = list(SECTIONS[section].model_fields) if section else list(TOP_LEVEL_KEYS)
    close = _suggest(key, known)
    if close:
        full = f"{section}.{close}" if section else close
        return Problem(path, f"{path} is not a known key; did you mean {full}?", f"rename it to {close}")
    close = _suggest(key, list(ALL_PATHS)) or _suggest(key, list(LEAF_SECTIONS))
    if close:
        full = close if "." in close or close in TOP_LEVEL_VALUES else f"{_home(close, None)}.{close}"
        return Problem(path, f"{path} is not a known key; did you mean {full}?", f"rename and move it to {full}")
    where = f"in {section}" if section else "at the top level"
    return Problem(path, f"{path} is not a known key", f"known keys {where}: {', '.join(known)}")


def check_keys(data: dict[str, Any]) -> tuple[list[Problem], dict[str, Any]]:
    """Find unknown, misplaced and wrong-method keys in raw config ``data``.

    Returns:
        The problems, and ``data`` without the offending keys (so that validating it reports
        only the remaining, different problems).
    """
    method = data.get("method") if data.get("method") in METHODS else None
    problems: list[Problem] = []
    clean: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        if key in TOP_LEVEL_VALUES:
            clean[key] = value
        elif key in SECTIONS:
            owner = METHOD_SECTIONS.get(key)
            if owner is not None and method is not None and owner != method:
                inner = [f"{key}.{k}" for k in value] if isinstance(value, dict) and value else [key]
                problems.extend(Problem(p, f"{p} is only allowed with method = \"{owner}\" (this config's method "
                                        f"is \"{method}\")", f"remove the {key} section or set method = \"{owner}\"")
                                for p in inner)
                continue
            clean[key] = _check_section(key, value, method, problems)
        else:
            problems.append(_misplaced(key, key, method, None) or _unknown(key, key, None))
    if lora_conflict(clean):
        problems.append(Problem("lora", "lora and full_finetune = true exclude each other",
                                "drop the lora section to train every weight, or full_finetune to train an adapter"))
        del clean["lora"]
    return problems, clean


def _check_section(section: str, value: Any, method: str | None, problems: list[Problem]) -> Any:
    if not isinstance(value, dict):
        return value  # validation reports the wrong type
    kept = {}
    fields = SECTIONS[section].model_fields
    for key, item in value.items():
        key = str(key)
        path = f"{section}.{key}"
        if key in fields:
            kept[key] = item
        elif key in TOP_LEVEL_KEYS:
            problems.append(Problem(path, f"{path} belongs at the top level (as {key})", _MOVE_HINT))
        else:
            problems.append(_misplaced(key, path, method, section) or _unknown(key, path, section))
    return kept
