"""FLUX LoRA trainings on Replicate behind the Trainer protocol (official ``replicate`` client).

A handle is ``{"training_id", "destination", "web_url", "owner", "job_id"}``. Logs come back whole on
every read, so the cursor is the number of characters already seen. Outputs are a tar of
``output/flux_train_replicate/``, downloaded as soon as the training succeeds (Replicate deletes the
outputs of API runs after about an hour), resumably, and extracted safely.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from hubferry.config import Settings
from hubferry.domain.jobs import Job
from hubferry.errors import HubferryError, PermanentError, TransientError, ValidationError
from hubferry.hub import retry
from hubferry.logs import get_logger, redact
from hubferry.trainers.base import Capabilities, Handle, Observation, RunStatus
from hubferry.trainers.replicate_api import ReplicateApi

log = get_logger(__name__)
#: Replicate's CDN for training outputs; a weights URL elsewhere is refused (never followed blindly).
DELIVERY_HOSTS = ("replicate.delivery",)
#: Caps on the downloaded weights tar: bytes, members, bytes once extracted.
MAX_WEIGHTS_BYTES = 4 * 1024**3
MAX_TAR_MEMBERS = 10_000
#: The folder of the tar that holds the LoRA (``lora.safetensors``, ``config.yaml``).
LORA_FOLDER = "output/flux_train_replicate"
_CHUNK = 1024 * 1024

_STATUS = {
    "starting": RunStatus.RUNNING, "processing": RunStatus.RUNNING, "succeeded": RunStatus.SUCCEEDED,
    "failed": RunStatus.FAILED, "canceled": RunStatus.CANCELLED, "aborted": RunStatus.FAILED,
}


class ReplicateTrainer:
    """Creates, follows and cancels trainings; ``api_for(handle_or_job)`` gives a client with the right token."""

    kind = "replicate"
    capabilities = Capabilities(can_retry_training=True, pushes_events=True)

    def __init__(self, settings: Settings, api_for: Callable[[str, str], ReplicateApi],
                 stage: Callable[[Job, str], tuple[str, str]] | None = None) -> None:
        """``api_for(owner, job_id)`` is a Replicate API with that job's token; ``stage(job, token)`` stages
        the job's dataset zip and returns the URL the trainer fetches it from and the staged file's ref."""
        self.settings = settings
        self.api_for = api_for
        self.stage = stage

    def start(self, job: Job, log_path: Path, secrets: Mapping[str, str] | None = None) -> Handle:
        params = job.params
        api = self.api_for(job.owner, job.id)
        inputs = dict(params["input"])
        staged_ref = None
        if "input_images" not in inputs:
            if self.stage is None:
                raise ValidationError("no dataset to train on", hint="pass --images FOLDER|ZIP|URLS.txt")
            inputs["input_images"], staged_ref = self.stage(job, api.token)
        public = self.settings.public_url
        webhook = f"{public.rstrip('/')}/webhooks/replicate?job={job.id}" if public else None
        training = api.create_training(params["model"], params["version"], inputs, params["destination"], webhook)
        return {"training_id": training["id"], "destination": params["destination"], "owner": job.owner,
                "job_id": job.id, "staged_ref": staged_ref,
                "web_url": (training.get("urls") or {}).get("web") or f"https://replicate.com/p/{training['id']}"}

    def poll(self, handle: Handle, cursor: str = "") -> Observation:
        training = self.api_for(str(handle["owner"]), str(handle["job_id"])).get_training(str(handle["training_id"]))
        return observe(training, cursor)

    def cancel(self, handle: Handle, grace_s: float) -> None:
        self.api_for(str(handle["owner"]), str(handle["job_id"])).cancel_training(str(handle["training_id"]))

    def fetch_outputs(self, handle: Handle, dest: Path) -> Path:
        """Download and extract the LoRA; the weights URL is the handle's ``outputs`` (what the poll that saw
        the success read), else read from the training (one more call)."""
        weights = handle.get("outputs")
        if not isinstance(weights, str):
            training = self.api_for(str(handle["owner"]), str(handle["job_id"])).get_training(
                str(handle["training_id"]))
            weights = (training.get("output") or {}).get("weights")
        if not isinstance(weights, str):
            raise PermanentError("the training succeeded but named no weights file", category="service_error",
                                 hint="open the training on Replicate; `hubferry retry JOB` tries again")
        tar = dest.parent / f"{dest.name}.tar"
        download(weights, tar, allowed_hosts=self._allowed_hosts(), settings=self.settings)
        return extract_lora(tar, dest)

    def _allowed_hosts(self) -> tuple[str, ...]:
        return (*DELIVERY_HOSTS, httpx.URL(self.settings.replicate_base_url).host)


def observe(training: Mapping[str, Any], cursor: str = "") -> Observation:
    """What a training object (from a GET or a webhook) says, with the log lines after ``cursor``."""
    status = _STATUS.get(str(training.get("status")), RunStatus.RUNNING)
    logs = str(training.get("logs") or "")
    seen = int(cursor or 0)
    final = status is not RunStatus.RUNNING
    end = len(logs) if final else max(logs.rfind("\n"), logs.rfind("\r")) + 1
    new = logs[seen:end] if end > seen else ""
    lines = [line for line in new.replace("\r", "\n").split("\n") if line.strip()]
    error = training.get("error")
    message = {
        RunStatus.FAILED: f"the Replicate training failed: {redact(str(error))[:2000]}" if error
        else "the Replicate training failed",
        RunStatus.CANCELLED: "the Replicate training was cancelled",
    }.get(status, "")
    outputs = (training.get("output") or {}).get("weights") if status is RunStatus.SUCCEEDED else None
    return Observation(status, lines, str(max(seen, end)), None, message, outputs=outputs)


def download(url: str, dest: Path, *, allowed_hosts: tuple[str, ...], settings: Settings,
             max_bytes: int = MAX_WEIGHTS_BYTES) -> Path:
    """Download ``url`` to ``dest`` streaming, resuming with Range after a cut, size-checked.

    Raises:
        PermanentError: the URL is not on an allowed host, or is larger than ``max_bytes``.
        TransientError: the download kept failing (re-running resumes it).
    """
    parsed = httpx.URL(url)
    if parsed.scheme not in ("https", "http") or not any(
        parsed.host == h or parsed.host.endswith("." + h) for h in allowed_hosts
    ):
        raise PermanentError(f"refusing to download weights from {redact(url)}: not a Replicate host",
                             category="service_error", hint="report the training id to Replicate support")
    policy = retry.RetryPolicy.from_settings(settings)
    return retry.call(lambda: _download_once(url, dest, max_bytes, settings), what="download weights",
                      endpoint=f"{parsed.scheme}://{parsed.host}", policy=policy)


def _download_once(url: str, dest: Path, max_bytes: int, settings: Settings) -> Path:
    partial = dest.with_name(dest.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
    try:
        with httpx.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=False) as response:
            if response.status_code == 416 and have:
                partial.unlink()
                raise TransientError("the partial download no longer matches; starting again", url=redact(url))
            if response.status_code not in (200, 206):
                error = (TransientError if response.status_code in (408, 429) or response.status_code >= 500
                         else PermanentError)
                raise error(f"download weights failed: HTTP {response.status_code}", status=response.status_code,
                            url=redact(url), category="service_error", hint="re-run to resume")
            total = _total_size(response, have)
            if total is not None and total > max_bytes:
                raise PermanentError(f"the weights are {total} bytes, over the {max_bytes}-byte cap",
                                     category="file_error", url=redact(url), hint="raise MAX_WEIGHTS_BYTES")
            mode = "ab" if response.status_code == 206 else "wb"
            with partial.open(mode) as fh:
                for chunk in response.iter_bytes(_CHUNK):
                    fh.write(chunk)
                    if fh.tell() > max_bytes:
                        raise PermanentError("the weights exceed the size cap", category="file_error",
                                             url=redact(url), hint="raise MAX_WEIGHTS_BYTES")
    except httpx.HTTPError as exc:
        raise TransientError(f"download weights failed: {type(exc).__name__}", url=redact(url),
                             hint="re-run to resume; the part already downloaded is kept") from None
    size = partial.stat().st_size
    if total is not None and size != total:
        raise TransientError(f"download cut short: {size} of {total} bytes", url=redact(url),
                             hint="re-run to resume")
    partial.replace(dest)
    return dest


def _total_size(response: httpx.Response, have: int) -> int | None:
    if response.status_code == 206:
        content_range = response.headers.get("content-range", "")
        total = content_range.rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


def extract_lora(tar_path: Path, dest: Path) -> Path:
    """Extract the LoRA folder of a weights tar into ``dest`` (regular files only, sizes capped); returns it.

    Raises:
        PermanentError: not a tar, a link or device member, a path leaving the folder, or no LoRA in it.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tar_path) as tar:
            members = tar.getmembers()
            if len(members) > MAX_TAR_MEMBERS:
                raise PermanentError(f"the weights tar has {len(members)} members", category="file_error")
            wanted = []
            for member in members:
                name = member.name.lstrip("./")
                if not name.startswith(LORA_FOLDER + "/") or member.isdir():
                    continue
                if not member.isfile():
                    raise PermanentError(f"the weights tar holds a link or special file: {member.name!r}",
                                         category="file_error", hint="report the training to Replicate")
                relative = name[len(LORA_FOLDER) + 1:]
                if relative.startswith("captions/"):
                    continue  # the training captions are not part of the model
                member.name = relative
                wanted.append(member)
            if sum(m.size for m in wanted) > MAX_WEIGHTS_BYTES:
                raise PermanentError("the weights tar unpacks to more than the size cap", category="file_error")
            tar.extractall(dest, members=wanted, filter="data")
    except (tarfile.TarError, OSError) as exc:
        if isinstance(exc, HubferryError):
            raise
        raise PermanentError(f"cannot read the weights tar: {exc}", category="file_error", path=str(tar_path),
                             hint="`hubferry retry JOB` downloads it again") from None
    if not (dest / "lora.safetensors").is_file():
        raise PermanentError(f"the weights tar has no {LORA_FOLDER}/lora.safetensors", category="file_error",
                             hint="the trainer's output layout changed: report it")
    return dest
