"""Every failure hubferry can raise, and whether to retry it.

::

    HubferryError                 base: category, hint and context attributes
    ├── ConfigError               bad settings: fail at start-up, naming the setting
    ├── ValidationError           bad user input: exit 2 / HTTP 4xx, nothing changed
    ├── TransientError            retry with backoff (network, 408, 429, 5xx, lease lost)
    └── PermanentError            do not retry; the hint says what to do (401, 403, 404, quota)
        ├── VerificationError     the Hub does not hold what we sent
        └── IllegalTransition     a state-machine bug: a transition the table forbids

A caller decides between retrying and failing only by the Transient/Permanent split.
Errors keep their context (``repo_id``, ``url``, ``status``, ``attempt``, ...) as
attributes and survive pickling, because they cross process boundaries in the task queue.
"""

from __future__ import annotations

from typing import Any

#: Error categories shown to users and stored on jobs.
CATEGORIES = (
    "network",
    "authentication",
    "validation",
    "rate_limit",
    "service_error",
    "file_error",
    "timeout",
    "training_error",
    #: A provider has no machine for the request (another GPU type or cloud may have one).
    "capacity",
    "internal",
)


class HubferryError(Exception):
    """Base of every hubferry error.

    Args:
        message: what went wrong, in one sentence.
        category: one of :data:`CATEGORIES`.
        hint: one line telling the user what to do next.
        **context: facts about the failure (``status``, ``url``, ``attempt``, ``elapsed_s``,
            ``body``, ``repo_id``, ``job_id``, ``path`` ...). ``None`` values are dropped.
    """

    default_category = "internal"
    retryable = False

    def __init__(self, message: str, *, category: str | None = None, hint: str = "", **context: Any):
        super().__init__(message)
        self.message = message
        self.category = category or self.default_category
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown error category {self.category!r}")
        self.hint = hint
        self.context = {k: v for k, v in context.items() if v is not None}

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, self.category, self.hint, self.context))

    def __getattr__(self, name: str) -> Any:
        context = self.__dict__.get("context", {})
        if name in context:
            return context[name]
        raise AttributeError(name)

    def __str__(self) -> str:
        parts = [self.message]
        details = ", ".join(f"{k}={v}" for k, v in self.context.items() if k != "body")
        if details:
            parts.append(f"({details})")
        if self.hint:
            parts.append(f"Hint: {self.hint}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, as stored on jobs and printed by ``--json``."""
        return {
            "type": type(self).__name__,
            "category": self.category,
            "message": self.message,
            "hint": self.hint,
            "retryable": self.retryable,
            **{k: v for k, v in self.context.items() if isinstance(v, (str, int, float, bool))},
        }


def _rebuild(cls: type[HubferryError], message: str, category: str, hint: str, context: dict[str, Any]):
    return cls(message, category=category, hint=hint, **context)


class ConfigError(HubferryError):
    """A setting is missing or invalid; the message names it."""

    default_category = "validation"


class ValidationError(HubferryError):
    """User input was rejected before anything changed."""

    default_category = "validation"


class TransientError(HubferryError):
    """A failure that may pass: retry with backoff."""

    default_category = "network"
    retryable = True


class PermanentError(HubferryError):
    """A failure that retrying will not fix; the hint says what will."""

    default_category = "service_error"


class VerificationError(PermanentError):
    """What the Hub holds after an upload differs from what was sent."""

    default_category = "service_error"


class IllegalTransition(PermanentError):
    """A state transition the state machine forbids: always a bug in the caller."""

    default_category = "internal"
