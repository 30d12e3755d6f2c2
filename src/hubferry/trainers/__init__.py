"""Training backends behind one protocol (:mod:`hubferry.trainers.base`); :func:`for_kind` picks one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from hubferry.config import Settings
from hubferry.domain.jobs import Job
from hubferry.errors import PermanentError, ValidationError
from hubferry.trainers.base import Capabilities, Handle, Observation, RunStatus, SelfPublishingTrainer, Trainer

T = TypeVar("T")

__all__ = [
    "Capabilities", "Handle", "KINDS", "Observation", "RunStatus", "SelfPublishingTrainer", "Trainer", "for_kind",
]

#: Every backend hubferry knows, by the name jobs record.
KINDS = ("local", "replicate", "runpod")
#: Provider clients kept per key (a poll cycle reads many jobs of few users).
_API_CACHE_SIZE = 64
#: A job's provider key is read again after this long: each read parses the whole vault, which for
#: 1,000 tracked jobs was a third of every poll cycle. A key stored meanwhile is used from then on.
TOKEN_TTL_S = 30.0
_TOKEN_CACHE_SIZE = 10_000

#: ``(provider, owner, job_id) -> key``: a job's Replicate token or RunPod API key, read when needed.
ProviderKey = Callable[[str, str, str], "str | None"]


def for_kind(
    kind: str, settings: Settings, *, provider_key: ProviderKey | None = None,
    stage: Callable[[Job, str], tuple[str, str]] | None = None,
) -> Trainer:
    """The trainer for jobs of ``kind``.

    Args:
        provider_key: a job's key for a provider, read at most every :data:`TOKEN_TTL_S`.
        stage: ``(job, token) -> (URL, ref)`` staging a job's dataset zip where a remote trainer can fetch it.

    Raises:
        ValidationError: no such trainer.
    """
    if kind == "local":
        from hubferry.trainers.local import LocalTrainer

        return LocalTrainer(settings)
    if kind == "replicate":
        from hubferry.trainers.replicate import ReplicateTrainer
        from hubferry.trainers.replicate_api import connect as connect_replicate

        return ReplicateTrainer(settings, _clients(
            "replicate", provider_key, lambda key: connect_replicate(settings, key), hint=(
                "store one with `hubferry secrets set replicate_token`, then `hubferry retry JOB`")), stage)
    if kind == "runpod":
        from hubferry.trainers.runpod import RunpodTrainer
        from hubferry.trainers.runpod_api import connect as connect_runpod

        return RunpodTrainer(settings, _clients(
            "runpod", provider_key, lambda key: connect_runpod(settings, key), hint=(
                "store one with `hubferry secrets set runpod_api_key`, then `hubferry retry JOB`")))
    raise ValidationError(f"unknown trainer {kind!r}", field="trainer", hint="one of: " + ", ".join(KINDS))


def _clients(provider: str, provider_key: ProviderKey | None, connect: Callable[[str], T],
             *, hint: str) -> Callable[[str, str], T]:
    """``(owner, job_id) -> client`` with the job's key: keys cached for :data:`TOKEN_TTL_S`, clients per key."""
    apis: dict[str, T] = {}
    keys: dict[tuple[str, str], tuple[str, float]] = {}

    def key_for(owner: str, job_id: str) -> str | None:
        cached = keys.get((owner, job_id))
        if cached is not None and time.monotonic() - cached[1] < TOKEN_TTL_S:
            return cached[0]
        key = provider_key(provider, owner, job_id) if provider_key else None
        if key:  # a missing key is looked for again next time
            if len(keys) >= _TOKEN_CACHE_SIZE:
                keys.clear()
            keys[(owner, job_id)] = (key, time.monotonic())
        return key

    def api_for(owner: str, job_id: str) -> T:
        key = key_for(owner, job_id)
        if not key:
            raise PermanentError(f"no {provider} key for this job", category="authentication", hint=hint)
        api = apis.get(key)  # poll threads share these: read once, never index after a check
        if api is None:
            if len(apis) >= _API_CACHE_SIZE:
                apis.clear()
            api = apis[key] = connect(key)
        return api

    return api_for
