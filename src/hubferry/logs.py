"""Structured logging to stderr (human or JSON) that never prints a registered secret."""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any

import structlog

_secrets: set[str] = set()
_json = False
_lock = threading.Lock()
#: Signed URLs are bearer credentials too: their query strings are never logged.
_QUERY = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")
#: Tokens recognisable by their shape (Hugging Face, Replicate), even when never registered.
_TOKEN_SHAPES = re.compile(r"\b(hf_|r8_)[A-Za-z0-9]{30,}\b")


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
    text = _TOKEN_SHAPES.sub(r"\1***", text)
    return _QUERY.sub(r"\1?<redacted>", text)


def _redact_processor(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    return {k: redact(v) if isinstance(v, str) else v for k, v in event.items()}


class _RedactingFilter(logging.Filter):
    """Redacts records of libraries we call (huggingface_hub logs signed URLs when it retries)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def configure(*, json: bool | None = None, verbose: bool = False, quiet: bool = False) -> None:
    """Send structlog (and stdlib logging) to stderr: DEBUG with ``verbose``, WARNING with ``quiet``.

    Interactive commands run quiet (their own output says what happened); services log INFO.
    ``json=None`` keeps the format chosen by the previous call.
    """
    global _json
    _json = _json if json is None else json
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    hub_logger = logging.getLogger("huggingface_hub")
    if not any(isinstance(f, _RedactingFilter) for f in hub_logger.filters):
        hub_logger.addFilter(_RedactingFilter())
    # Our own retry lines say the same with context; the library's are noise unless --verbose.
    hub_logger.setLevel(logging.DEBUG if verbose else logging.ERROR)
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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name``."""
    return structlog.get_logger(name)


# Until a command configures logging, log human-readable lines to stderr (never stdout).
configure()
