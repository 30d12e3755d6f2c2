"""Structured logging to stderr (human or JSON) that never prints a registered secret."""

from __future__ import annotations

import json as json_module
import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO, cast

import structlog

_secrets: set[str] = set()
_json = False
_lock = threading.Lock()
#: Signed URLs are bearer credentials too: their query strings are never logged.
_QUERY = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")
#: Tokens recognisable by their shape (Hugging Face, Replicate, RunPod), even when never registered or
#: glued to other text.
_TOKEN_SHAPES = re.compile(r"(hf_|r8_|rpa_)[A-Za-z0-9]{30,}|(hfy_|hfj_)[A-Za-z0-9_-]{20,}")
#: Weights & Biases keys (40 hex digits) and AWS secret keys, recognised next to their names.
_NAMED_KEYS = re.compile(
    r"(?i)((?:wandb|w&b)[^\n]{0,40}?|aws_?secret_?(?:access_?)?key[\"'\s]*[:=][\"'\s]*)"
    r"(?<![0-9A-Za-z/+])([0-9a-f]{40}|[A-Za-z0-9/+=]{40})(?![0-9A-Za-z/+=])"
)


def register_secret(value: str | None) -> None:
    """Make ``value`` unprintable: every later log line and error text shows it redacted."""
    if value and len(value) >= 8:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """Replace registered secrets and signed-URL query strings in ``text``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, secret[:3] + "***")
    text = _TOKEN_SHAPES.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)
    text = _NAMED_KEYS.sub(r"\1***", text)
    return _QUERY.sub(r"\1?<redacted>", text)


#: Escape sequences a trainer (or anyone) may print: CSI (colours, cursor, clear screen), OSC (title,
#: clipboard write ESC]52, hyperlinks ESC]8), DCS/SOS/PM/APC strings, and single-character escapes.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b[\]P^_X].*?(?:\x07|\x1b\\|\x9c|$)"  # OSC, DCS, PM, APC, SOS up to their terminator
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
    r"|[\x90\x9d-\x9f].*?(?:\x07|\x1b\\|\x9c|$)"  # 8-bit DCS, OSC, PM, APC
    r"|\x1b[ -/]*[0-~]?",  # other escapes (and a lone ESC)
    re.DOTALL,
)
#: Control characters that remain after the sequences are gone (tab and newline are kept).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: object, *, keep_newlines: bool = True) -> str:
    """``text`` without terminal escape sequences or control characters, secrets redacted.

    Everything a user, a trainer or a server supplied passes through here before it reaches a
    terminal, a JSON output or a stored error.
    """
    cleaned = _CONTROLS.sub("", _ESCAPES.sub("", str(text).replace("\r\n", "\n")))
    if not keep_newlines:
        cleaned = cleaned.replace("\n", " ").replace("\t", " ")
    return redact(cleaned)


def _redact_processor(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return {k: redact(v) if isinstance(v, str) else v for k, v in event.items()}


class _RedactingFilter(logging.Filter):
    """Redacts records of libraries we call (huggingface_hub logs signed URLs when it retries)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written (a captured or replaced stream may be gone by then)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _JsonFormatter(logging.Formatter):
    """A library's log record as one JSON line shaped like hubferry's own (event, level, logger, timestamp)."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z")
        return json_module.dumps({"event": redact(record.getMessage()), "level": record.levelname.lower(),
                                  "logger": record.name, "timestamp": at})


def _protect_library_logs() -> logging.Logger:
    """Redact huggingface_hub's records (its debug request lines and retry warnings carry presigned URLs).

    Its handlers get the filter too: a logger's filters see only records created on that logger, while a
    handler's see every record that reaches it, including those of child loggers made later.
    """
    from huggingface_hub.utils import logging as hub_logging  # creates the library's own handler first

    hub_logger = hub_logging.get_logger("huggingface_hub")
    targets: list[logging.Filterer] = [hub_logger, *hub_logger.handlers]
    targets += [item for name, item in logging.root.manager.loggerDict.items()
                if name.startswith("huggingface_hub.") and isinstance(item, logging.Logger)]
    for target in targets:
        if not any(isinstance(f, _RedactingFilter) for f in target.filters):
            target.addFilter(_RedactingFilter())
    return hub_logger


def configure(
    *, json: bool | None = None, verbose: bool = False, quiet: bool = False, stream: TextIO | None = None,
) -> None:
    """Send structlog (and stdlib logging) to stderr: DEBUG with ``verbose``, WARNING with ``quiet``.

    Interactive commands run quiet (their own output says what happened); services log INFO.
    ``json=None`` keeps the format chosen by the previous call; ``stream`` (default: the stderr of
    the moment each line is written) is where lines go.
    """
    global _json
    _json = _json if json is None else json
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    hub_logger = _protect_library_logs()
    # Our own retry lines say the same with context; the library's are noise unless --verbose.
    hub_logger.setLevel(logging.DEBUG if verbose else logging.ERROR)
    for handler in hub_logger.handlers:  # with --log-json, the library's lines are JSON too
        handler.setFormatter(_JsonFormatter() if _json else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    renderer = structlog.processors.JSONRenderer() if _json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream or cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name``."""
    return structlog.get_logger(name)

