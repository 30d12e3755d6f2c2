"""Training backends behind one protocol (:mod:`hubferry.trainers.base`); :func:`for_kind` picks one."""

from __future__ import annotations

import time
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
#: A job's Replicate token is read again after this long: each read parses the whole vault, which for
#: 1,000 tracked jobs was a third of every poll cycle. A token stored meanwhile is used from then on.
TOKEN_TTL_S = 30.0
_TOKEN_CACHE_SIZE = 10_000


def for_kind(
    kind: str, settings: Settings, *, replicate_token: Callable[[str, str], str | None] | None = None,
    stage: Callable[[Job, str], tuple[str, str]] | None = None,
) -> Trainer:
    """The trainer for jobs of ``kind``.

    Args:
        replicate_token: ``(owner, job_id) -> token``, read when needed, at most every :data:`TOKEN_TTL_S`.
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
        tokens: dict[tuple[str, str], tuple[str, float]] = {}

        def token_for(owner: str, job_id: str) -> str | None:
            cached = tokens.get((owner, job_id))
            if cached is not None and time.monotonic() - cached[1] < TOKEN_TTL_S:
                return cached[0]
            token = replicate_token(owner, job_id) if replicate_token else None
            if token:  # a missing token is looked for again next time
                if len(tokens) >= _TOKEN_CACHE_SIZE:
                    tokens.clear()
                tokens[(owner, job_id)] = (token, time.monotonic())
            return token

        def api_for(owner: str, job_id: str) -> ReplicateApi:
            token = token_for(owner, job_id)
            if not token:
                raise PermanentError(
                    "no Replicate token for this job", category="authentication",
                    hint="store one with `hubferry secrets set replicate_token`, then `hubferry retry JOB`",
                )
            api = apis.get(token)  # poll threads share these: read once, never index after a check
            if api is None:
                if len(apis) >= _API_CACHE_SIZE:
                    apis.clear()
                api = apis[token] = connect(settings, token)
            return api

        return ReplicateTrainer(settings, api_for, stage)
    raise ValidationError(f"unknown trainer {kind!r}", field="trainer", hint="one of: " + ", ".join(KINDS))
