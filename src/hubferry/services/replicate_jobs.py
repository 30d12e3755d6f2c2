"""FLUX LoRA jobs on Replicate: check everything before any spend, package the dataset, record the job;
and adopt trainings started elsewhere."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubferry.domain.jobs import EventKind, Job, JobState, new_job_id
from hubferry.domain.naming import slugify
from hubferry.errors import ValidationError
from hubferry.logs import get_logger
from hubferry.services import credentials
from hubferry.services.context import Context
from hubferry.services.identity import default_owner
from hubferry.services.launch import record_job, target_repo
from hubferry.trainers import replicate_inputs
from hubferry.trainers.replicate_api import ReplicateApi, connect

log = get_logger(__name__)
#: What the published card says about the base model of a FLUX LoRA.
FLUX_BASE_MODEL = "black-forest-labs/FLUX.1-dev"
FLUX_LICENSE = "other"
FLUX_LICENSE_NAME = "flux-1-dev-non-commercial-license"

_schemas: dict[str, dict[str, Any]] = {}
_schemas_lock = threading.Lock()


@dataclass(frozen=True)
class ReplicateRequest:
    """A FLUX LoRA training on Replicate, and where its result goes."""

    images: str
    trigger_word: str | None = None
    steps: int | None = None
    learning_rate: float | None = None
    lora_rank: int | None = None
    #: Further trainer inputs, as strings typed by the trainer's schema (``--param key=value``).
    params: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    repo_id: str | None = None
    private: bool = True
    endpoint: str | None = None
    token: str | None = None
    replicate_token: str | None = None
    #: ``owner/name:version`` of the trainer; default the pinned ``replicate_trainer`` setting.
    trainer: str | None = None
    #: The Replicate model the training creates versions of; default ``{replicate user}/{name}``.
    destination: str | None = None
    max_side: int = 1024
    preflight: bool = True

    def __repr__(self) -> str:  # never show tokens
        return f"ReplicateRequest(images={self.images!r}, repo_id={self.repo_id!r}, trainer={self.trainer!r})"


def _schema(api: ReplicateApi, model: str, version: str) -> dict[str, Any]:
    key = f"{api.endpoint}|{model}:{version}"
    with _schemas_lock:
        if key in _schemas:
            return _schemas[key]
    schema = api.input_schema(model, version)
    with _schemas_lock:
        _schemas[key] = schema
    return schema


def _inputs(request: ReplicateRequest, schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    inputs: dict[str, Any] = {k: v for k, v in {
        "trigger_word": request.trigger_word, "steps": request.steps, "learning_rate": request.learning_rate,
        "lora_rank": request.lora_rank}.items() if v is not None}
    for key, text in request.params.items():
        inputs[key] = replicate_inputs.coerce(text, properties.get(key) or {})
    return replicate_inputs.validate(schema, inputs)


def _replicate_token(ctx: Context, owner: str, given: str | None) -> tuple[str, str]:
    """The Replicate token a command means, and where it came from; a ValidationError when there is none."""
    token, source = credentials.resolve_provider_for_command(ctx.settings, ctx.credentials, owner, "replicate",
                                                              key=given)
    if not token:
        raise ValidationError("no Replicate token", field="replicate_token", category="authentication",
                              hint="pass --replicate-token, set REPLICATE_API_TOKEN, or "
                              "`hubferry secrets set replicate_token`")
    return token, source


def _flux_card(trigger_word: str | None, training_params: dict[str, Any]) -> dict[str, Any]:
    """The model-card facts of a FLUX LoRA (recorded on the job, rendered when it publishes)."""
    return {"base_model": FLUX_BASE_MODEL, "license": FLUX_LICENSE, "license_name": FLUX_LICENSE_NAME,
            "trigger_word": trigger_word, "tags": ["flux", "lora", "diffusers", "text-to-image"],
            "training_params": training_params, "usage": "diffusers-flux-lora"}


def _split_trainer(ref: str) -> tuple[str, str]:
    model, _, version = ref.partition(":")
    if model.count("/") != 1 or not version:
        raise ValidationError(f"invalid trainer {ref!r}", field="trainer", hint="use OWNER/NAME:VERSION_ID")
    return model, version


def submit(ctx: Context, request: ReplicateRequest, *, owner: str | None = None) -> Job:
    """Check, package and record a Replicate FLUX LoRA job (state ``queued``); the caller dispatches it.

    Before anything is spent: the Replicate token works, the inputs fit the trainer version's schema,
    the destination model exists (created private when missing), the Hub pre-flight passes, and the
    dataset packs into a usable, deterministic zip.

    Raises:
        ValidationError: bad inputs, an unusable dataset, or no Replicate token.
        PermanentError, TransientError: Replicate or the Hub refused or could not be reached.
    """
    from hubferry.dataset import PackOptions, pack

    owner = owner or default_owner()
    token, token_source = _replicate_token(ctx, owner, request.replicate_token)
    model, version = _split_trainer(request.trainer or ctx.settings.replicate_trainer)
    api = connect(ctx.settings, token)
    inputs = _inputs(request, _schema(api, model, version))
    name = request.name or slugify(Path(request.images).stem) or "flux-lora"
    destination = request.destination or f"{api.whoami()}/{slugify(name)}"
    target, source = credentials.resolve_for_command(
        ctx.settings, ctx.credentials, owner, endpoint=request.endpoint, token=request.token)
    repo_id = target_repo(ctx, request.repo_id, owner, name, target, source, preflight=request.preflight)
    job_id = new_job_id()
    folder = ctx.settings.home / "datasets" / job_id
    packed = pack(request.images, folder / "data.zip",
                  PackOptions(trigger_word=request.trigger_word, max_side=request.max_side), ctx.settings)
    if api.ensure_model(destination):
        log.info("created the destination model", destination=destination)
    credentials.bind_provider_to_job(ctx.credentials, "replicate", job_id, token, token_source)
    schema_steps = _schema(api, model, version).get("properties", {}).get("steps") or {}
    steps = inputs.get("steps") or schema_steps.get("default")
    params = {
        "model": model, "version": version, "input": inputs, "destination": destination,
        "dataset_zip": str(packed.zip_path), "dataset_report": packed.report.to_dict(),
        "total_steps": steps, "replicate_token": token_source,
        "card": _flux_card(inputs.get("trigger_word"), {
            "trainer": f"{model}:{version}", "steps": steps, "learning_rate": inputs.get("learning_rate"),
            "lora_rank": inputs.get("lora_rank"), "dataset_sha256": packed.report.sha256}),
    }
    return record_job(
        ctx, job_id=job_id, trainer="replicate", owner=owner, name=name, params=params, repo_id=repo_id,
        repo_auto_named=not request.repo_id, private=request.private, target=target, source=source,
        output=ctx.settings.home / "outputs" / job_id, preflight=request.preflight,
        summary=f"submitted: {model}:{version[:12]} on {len(packed.report.images)} images -> {destination}",
    )


def adopt(ctx: Context, training_id: str, *, repo_id: str | None = None, name: str | None = None,
          replicate_token: str | None = None, token: str | None = None, endpoint: str | None = None,
          owner: str | None = None) -> Job:
    """Track and publish a training started elsewhere (the Replicate website, another script).

    Raises:
        ValidationError: no token, or the training is already tracked by a job.
        PermanentError: Replicate does not know the training.
    """
    owner = owner or default_owner()
    rtoken, rsource = _replicate_token(ctx, owner, replicate_token)
    for job in ctx.jobs.list_jobs(limit=10_000):
        if (job.trainer_handle or {}).get("training_id") == training_id:
            raise ValidationError(f"training {training_id} is already tracked by job {job.id}", field="training_id")
    training = connect(ctx.settings, rtoken).get_training(training_id)
    destination = str((training.get("output") or {}).get("version", "")).split(":")[0] or None
    trainer_input = training.get("input") or {}
    name = name or slugify(destination.split("/")[-1] if destination else f"replicate-{training_id[:8]}")
    target, source = credentials.resolve_for_command(ctx.settings, ctx.credentials, owner, endpoint=endpoint,
                                                     token=token)
    chosen = target_repo(ctx, repo_id, owner, name, target, source, preflight=True)
    job_id = new_job_id()
    credentials.bind_provider_to_job(ctx.credentials, "replicate", job_id, rtoken, rsource)
    version = str(training.get("version") or "")
    params = {
        "model": training.get("model"), "version": version, "input": {}, "destination": destination,
        "total_steps": trainer_input.get("steps"), "adopted": True,
        "card": _flux_card(trainer_input.get("trigger_word"), {
            "trainer": f"{training.get('model')}:{version}", "steps": trainer_input.get("steps"),
            "replicate_training": training_id}),
    }
    job = record_job(
        ctx, job_id=job_id, trainer="replicate", owner=owner, name=name, params=params, repo_id=chosen,
        repo_auto_named=repo_id is None, private=True, target=target, source=source,
        output=ctx.settings.home / "outputs" / job_id, preflight=True,
        summary=f"adopted Replicate training {training_id}",
    )
    handle = {"training_id": training_id, "destination": destination, "owner": owner, "job_id": job.id,
              "web_url": (training.get("urls") or {}).get("web") or f"https://replicate.com/p/{training_id}"}
    ctx.jobs.transition(job.id, JobState.QUEUED, JobState.PREPARING)
    ctx.jobs.set_runtime(job.id, trainer_handle=handle, log_path=str(ctx.settings.home / "logs" / f"{job.id}.log"))
    ctx.jobs.transition(job.id, JobState.PREPARING, JobState.TRAINING)
    ctx.jobs.append_event(job.id, EventKind.STAGE_STARTED, stage="training", context=handle)
    return ctx.jobs.require(job.id)
