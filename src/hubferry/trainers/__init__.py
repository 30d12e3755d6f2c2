"""Training backends behind one protocol (:mod:`hubferry.trainers.base`); :func:`for_kind` picks one."""

from __future__ import annotations

from hubferry.config import Settings
from hubferry.errors import ValidationError
from hubferry.trainers.base import Capabilities, Handle, Observation, RunStatus, Trainer

__all__ = ["Capabilities", "Handle", "KINDS", "Observation", "RunStatus", "Trainer", "for_kind"]

#: Every backend hubferry knows, by the name jobs record.
KINDS = ("local",)


def for_kind(kind: str, settings: Settings) -> Trainer:
    """The trainer for jobs of ``kind``.

    Raises:
        ValidationError: no such trainer.
    """
    if kind == "local":
        from hubferry.trainers.local import LocalTrainer

        return LocalTrainer(settings)
    raise ValidationError(f"unknown trainer {kind!r}", field="trainer", hint="one of: " + ", ".join(KINDS))
