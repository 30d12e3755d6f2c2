"""Job files: ``hubferry train -f job.toml`` reads the same options as the flags, so a run is reproducible."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hubferry.errors import ValidationError

#: Largest job file read.
MAX_JOB_FILE_BYTES = 1024 * 1024


def merge_job_file(path: Path | None, given: dict[str, Any], *, defaults: dict[str, Any]) -> dict[str, Any]:
    """Options from the command line (``given``; ``None``/``False`` means not given), then the job file,
    then ``defaults``.

    Raises:
        ValidationError: the file is unreadable, not TOML, or has keys no flag has (named, with the known ones).
    """
    from_file: dict[str, Any] = {}
    if path is not None:
        try:
            raw = path.read_bytes()[: MAX_JOB_FILE_BYTES + 1]
            if len(raw) > MAX_JOB_FILE_BYTES:
                raise ValidationError(f"job file {path} is larger than 1 MiB", path=str(path))
            from_file = {k.replace("-", "_"): v for k, v in tomllib.loads(raw.decode("utf-8")).items()}
        except OSError as exc:
            raise ValidationError(f"cannot read job file {path}: {exc.strerror}", path=str(path),
                                  category="file_error", hint="check the path") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValidationError(f"job file {path} is not valid TOML: {exc}", path=str(path),
                                  hint="fix the line it names") from None
        if isinstance(from_file.get("param"), dict):  # [param] table → KEY=VALUE strings
            from_file["param"] = [f"{k}={v}" for k, v in from_file["param"].items()]
        unknown = sorted(set(from_file) - set(given) - {"command"})
        if unknown:
            raise ValidationError(f"job file {path} has unknown keys: {', '.join(unknown)}", path=str(path),
                                  hint="known keys: " + ", ".join(sorted(given)))
    merged = {}
    for key in {*given, *from_file}:
        value = given.get(key)
        merged[key] = value if value not in (None, False, []) else from_file.get(key, defaults.get(key, value))
    return merged


def parse_params(items: list[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict.

    Raises:
        ValidationError: an item without ``=``.
    """
    params = {}
    for item in items or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValidationError(f"--param {item!r} is not KEY=VALUE", field="param", hint="e.g. --param batch_size=2")
        params[key.strip()] = value
    return params
