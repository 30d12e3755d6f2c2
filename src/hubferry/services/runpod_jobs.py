"""LLM fine-tunes (SFT, DPO, ORPO) on RunPod: check everything before a pod is rented, then record the job.

The pod gets only its callback address, the job id, the job's Hub endpoint and a per-job callback
token (docs/pod-agent.md); the Hub token is handed over when the pod publishes, unless the user
asks for the plain ``HF_TOKEN``/``HF_REPO_NAME`` contract of their own image (``token_in_env``).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubferry import training_config
from hubferry.domain.jobs import EventKind, Job, new_job_id
from hubferry.errors import ConfigError, ValidationError
from hubferry.logs import get_logger, register_secret
from hubferry.secrets.hub_credentials import job_owner
from hubferry.services import credentials
from hubferry.services.context import Context
from hubferry.services.identity import default_owner
from hubferry.services.launch import record_job, target_repo
from hubferry.services.pod_agent import job_token_digest
from hubferry.services.ports import HubTarget
from hubferry.services.training import PASSED_ENV
from hubferry.trainers.runpod import hourly_price
from hubferry.trainers.runpod_api import connect

log = get_logger(__name__)
#: Names the pod's callback token; ``hfj_`` keeps it recognisable to the redactor.
JOB_TOKEN_PREFIX = "hfj_"


@dataclass(frozen=True)
class RunpodRequest:
    """An LLM fine-tune on a RunPod pod: its config (a file, or the parsed table) and where it runs."""

    config: training_config.TrainingConfigModel
    #: The folder a local dataset path in the config is relative to.
    base_dir: Path
    name: str | None = None
    repo_id: str | None = None
    private: bool | None = None
    endpoint: str | None = None
    token: str | None = None
    runpod_key: str | None = None
    gpu: str | None = None
    cloud_type: str | None = None
    image: str | None = None
    token_in_env: bool = False
    preflight: bool = True

    def __repr__(self) -> str:  # never show keys
        return f"RunpodRequest(method={self.config.method!r}, gpu={self.gpu!r}, repo_id={self.repo_id!r})"


def _dataset(ctx: Context, request: RunpodRequest, target: HubTarget) -> tuple[str | None, int | None]:
    """The local dataset file, or None for a Hub dataset; and how many of its first rows were checked against
    the method's columns (a Hub dataset's are read from the Hub, unless the pre-flight is off)."""
    config = request.config
    if not config.dataset_is_local:
        if not request.preflight:
            return None, None
        remote, first = ctx.publisher.dataset_rows(target, config.dataset, training_config.MAX_CHECKED_ROWS)
        return None, training_config.check_rows(config.method, first, source=f"dataset {config.dataset} ({remote})")
    path = Path(config.dataset).expanduser()
    path = (path if path.is_absolute() else request.base_dir / path).resolve()
    if not path.is_file():
        raise ValidationError(f"dataset file {path} does not exist", field="dataset",
                              hint="give the path of a .jsonl or .parquet file, relative to the config file")
    rows = training_config.check_rows(config.method, training_config.read_rows(path), source=f"dataset {path}")
    return str(path), rows


def submit(ctx: Context, request: RunpodRequest, *, owner: str | None = None) -> Job:
    """Check and record a RunPod fine-tune (state ``queued``); the caller dispatches it.

    Before a pod is rented: the config and the dataset's columns, the callback address, the RunPod key,
    the GPU type and its price in the chosen cloud, and the Hub pre-flight.

    Raises:
        ValidationError: a bad config, dataset, GPU type or cloud, or no RunPod key.
        ConfigError: no public address for the pod's callbacks.
        PermanentError, TransientError: RunPod or the Hub refused or could not be reached.
    """
    settings = ctx.settings
    owner = owner or default_owner()
    if not settings.public_url:
        raise ConfigError("a RunPod pod reports to hubferry over HTTPS, and no public address is set",
                          setting="HUBFERRY_PUBLIC_URL", hint="run `hubferry serve` where the pod can reach it and "
                          "set HUBFERRY_PUBLIC_URL to its address (https://...)")
    key, key_source = credentials.resolve_provider_for_command(settings, ctx.credentials, owner, "runpod",
                                                               key=request.runpod_key)
    if not key:
        raise ValidationError("no RunPod API key", field="runpod_key", category="authentication",
                              hint="pass --runpod-key, set RUNPOD_API_KEY, or `hubferry secrets set runpod_api_key`")
    cloud = (request.cloud_type or settings.runpod_cloud_type).upper()
    if cloud not in ("SECURE", "COMMUNITY", "ALL"):
        raise ValidationError(f"unknown cloud type {cloud!r}", field="cloud_type", hint="SECURE, COMMUNITY or ALL")
    gpu = connect(settings, key).gpu(request.gpu or settings.runpod_gpu)
    offered = {"SECURE": gpu.get("secureCloud"), "COMMUNITY": gpu.get("communityCloud")}
    if cloud in offered and offered[cloud] is False:
        other = "COMMUNITY" if cloud == "SECURE" else "SECURE"
        raise ValidationError(f"{gpu['id']} is not offered in RunPod's {cloud.lower()} cloud", field="cloud_type",
                              hint=f"use --cloud-type {other} or ALL, or another --gpu")
    price = hourly_price(gpu, cloud)
    config = request.config
    name = request.name or Path(config.model.base).name.lower() + f"-{config.method}"
    target, source = credentials.resolve_for_command(settings, ctx.credentials, owner, endpoint=request.endpoint,
                                                     token=request.token)
    dataset_file, rows_checked = _dataset(ctx, request, target)
    wanted_repo = request.repo_id or config.output.repo
    repo_id = target_repo(ctx, wanted_repo, owner, name, target, source, preflight=request.preflight)
    job_id = new_job_id()
    job_token = JOB_TOKEN_PREFIX + secrets.token_urlsafe(32)
    register_secret(job_token)
    pod_env = {"HUBFERRY_JOB_TOKEN": job_token, "HF_ENDPOINT": target.endpoint}
    if request.token_in_env:
        if target.token is None:
            raise ValidationError("--token-in-env needs a Hub token now", field="token_in_env",
                                  hint="pass --token or set HF_TOKEN")
        pod_env.update(HF_TOKEN=target.token, HF_REPO_NAME=repo_id)
    ctx.credentials.vault.set(job_owner(job_id), PASSED_ENV, json.dumps(pod_env))
    credentials.bind_provider_to_job(ctx.credentials, "runpod", job_id, key, key_source)
    private = request.private if request.private is not None else config.output.private
    params: dict[str, Any] = {
        "config": config.model_dump(mode="json"), "dataset_file": dataset_file, "rows_checked": rows_checked,
        "gpu": gpu["id"], "gpu_name": gpu.get("displayName"), "cloud_type": cloud, "price_per_hr": price,
        "image": request.image or settings.runpod_image, "token_in_env": request.token_in_env,
        "job_token_sha256": job_token_digest(job_token), "runpod_key": key_source,
        "total_steps": config.training.max_steps,
        "card": {"base_model": config.model.base, "tags": ["trl", config.method, "hubferry"],
                 "training_params": {"method": config.method, "dataset": config.dataset,
                                     "learning_rate": config.training.learning_rate}},
    }
    price_text = f"${price:.2f}/h" if price else "price unknown"
    job = record_job(
        ctx, job_id=job_id, trainer="runpod", owner=owner, name=name, params=params, repo_id=repo_id,
        repo_auto_named=wanted_repo is None, private=private, target=target, source=source,
        output=settings.home / "outputs" / job_id, preflight=request.preflight,
        summary=f"submitted: {config.summary()} on a RunPod {gpu.get('displayName') or gpu['id']} "
        f"({cloud.lower()} cloud, {price_text})",
    )
    if request.token_in_env:
        ctx.jobs.append_event(job.id, EventKind.NOTICE, message=(
            "warning: --token-in-env puts the Hub token into the pod's environment; a token fixed later "
            "will not reach the pod (hubferry still verifies what it publishes)"))
    return job
