"""Training backends behind one protocol (:mod:`hubferry.trainers.base`); :func:`for_kind` picks one."""

from __future__ import annotations

from collections.abc import Callable

from hubferry.config import Settings
from hubferry.domain.jobs import Job
from hubferry.errors import PermanentError, ValidationError
from hubferry.trainers.base import Capabilities, Handle, Observation, RunStatus, Trainer

__all__ = ["Capabilities", "Handle", "KINDS", "Observation", "RunStatus", "Trainer", "for_kind"]

#: Every backend hubferry knows, by the name jobs record.
KINDS = ("local", "replicate")
#: Replicate clients kept per token (a poll cycle reads many jobs of few users).
_API_CACHE_SIZE = 64


def for_kind(
    kind: str, settings: Settings, *, replicate_token: Callable[[str, str], str | None] | None = None,
    stage: Callable[[Job, str], tuple[str, str]] | None = None,
) -> Trainer:
    """The trainer for jobs of ``kind``.

    Args:
        replicate_token: ``(owner, job_id) -> token``, read each time it is needed.
        stage: ``(job, token) -> (URL, ref)`` staging a job's dataset zip where a remote trainer can fetch it.

    Raises:
        ValidationError: no such trainer.
    """
    if kind == "local":
        from hubferry.trainers.local import LocalTrainer

        return LocalTrainer(settings)
    if kind == "replicate":
        from hubferry.trainers.replicate import ReplicateTrainer
        from hubferry.trainers.replicate_api import ReplicateApi, connect

        apis: dict[str, ReplicateApi] = {}

        def api_for(owner: str, job_id: str) -> ReplicateApi:
            token = replicate_token(owner, job_id) if replicate_token else None
            if not token:
                raise PermanentError(
                    "no Replicate token for this job", category="authentication",
                    hint="store one with `hubferry secrets set replicate_token`, then `hubferry retry JOB`",
                )
            if token not in apis:
                if len(apis) >= _API_CACHE_SIZE:
                    apis.clear()
                apis[token] = connect(settings, token)
            return apis[token]

        return ReplicateTrainer(settings, api_for, stage)
    raise ValidationError(f"unknown trainer {kind!r}", field="trainer", hint="one of: " + ", ".join(KINDS))
