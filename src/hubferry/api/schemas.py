"""The request and response bodies of ``/api/v1``: validated on the way in, documented in ``/openapi.json``.

Responses mirror :func:`hubferry.services.views.job_dict` (the one JSON shape of a job, shared with
``--json``); requests are checked here so bad input is a 422 naming the field before any service runs.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from hubferry.domain.jobs import JobState
from hubferry.domain.naming import validate_repo_id
from hubferry.errors import ValidationError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Upload ids as :mod:`hubferry.api.v1_datasets` makes them.
DATASET_ID_PATTERN = r"^ds_[a-z0-9]{16}$"


def _printable(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _repo_id(value: str) -> str:
    try:
        return validate_repo_id(value)
    except ValidationError as exc:
        raise ValueError(exc.message) from None


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/?#]+", value, re.IGNORECASE):
        raise ValueError("must be an http(s) URL")
    return _printable(value)


Text = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
RepoId = Annotated[str, Field(max_length=200, examples=["alice/my-lora"]), AfterValidator(_repo_id)]
Url = Annotated[str, Field(max_length=2048, examples=["https://hooks.example.com/hubferry"]), AfterValidator(_http_url)]
Token = Annotated[SecretStr, Field(min_length=1, max_length=4096)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
ServerPath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_printable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetRef(_Strict):
    """A dataset: an upload of yours (``upload_id``) or, for administrators, a path on the server."""

    upload_id: Annotated[str, Field(pattern=DATASET_ID_PATTERN)] | None = None
    path: ServerPath | None = None

    @model_validator(mode="after")
    def _one(self) -> DatasetRef:
        if (self.upload_id is None) == (self.path is None):
            raise ValueError("give exactly one of upload_id and path")
        return self


class _Target(_Strict):
    name: Text | None = Field(None, description="Job name; names the repo when repo_id is not given.")
    repo_id: RepoId | None = Field(None, description="Target repo; default {hub username}/{slug(name)}.")
    private: bool = Field(True, description="Visibility of a repo the publish creates.")
    endpoint: Url | None = Field(None, description="Hub URL (default: the server's endpoint setting).")
    token: Token | None = Field(None, description="Hub token for this job only (default: your stored token).")
    preflight: bool = Field(True, description="Check the token, rights and repo before any compute is spent.")
    notify_url: Url | None = Field(None, description="Also send this job's state changes to this URL (signed "
                                   "Standard Webhooks).")


class LocalJobCreate(_Target):
    """A training command run on the server (administrators only: it runs as the server's account)."""

    trainer: Literal["local"]
    command: list[Annotated[str, Field(max_length=8192), AfterValidator(_printable)]] = Field(
        min_length=1, max_length=256, examples=[["python", "train.py", "--steps", "100"]])
    output_dir: ServerPath | None = Field(None, description="Folder the command writes its model to.")
    cwd: ServerPath | None = Field(None, description="Working directory (default: the hubferry home).")
    env: dict[EnvName, Annotated[str, Field(max_length=32768)]] = Field(default_factory=dict, max_length=200)
    pass_env: list[EnvName] = Field(default_factory=list, max_length=200,
                                    description="Secret-looking names of env to give the command anyway.")
    total_steps: int | None = Field(None, ge=1, le=1_000_000_000)
    dataset: DatasetRef | None = Field(None, description="Given to the command as DATASET_PATH.")


class ReplicateJobCreate(_Target):
    """A FLUX LoRA training on Replicate from an uploaded dataset."""

    trainer: Literal["replicate"]
    dataset: DatasetRef
    trigger_word: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_printable)] | None = None
    steps: int | None = Field(None, ge=1, le=100_000)
    learning_rate: float | None = Field(None, gt=0, le=1)
    lora_rank: int | None = Field(None, ge=1, le=1024)
    params: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")],
                 Annotated[str, Field(max_length=4096)]] = Field(default_factory=dict, max_length=50)
    replicate_token: Token | None = None
    replicate_trainer: Annotated[str, Field(pattern=r"^[\w.-]+/[\w.-]+:[A-Za-z0-9]+$", max_length=200)] | None = None
    destination: Annotated[str, Field(pattern=r"^[\w.-]+/[\w.-]+$", max_length=200)] | None = None
    max_side: int = Field(1024, ge=64, le=8192)


class RunpodJobCreate(_Target):
    """An LLM fine-tune (SFT, DPO, ORPO) on a RunPod pod; ``config`` is the training config as a table (the
    same keys as a job.toml: ``hubferry config check`` rules apply)."""

    trainer: Literal["runpod"]
    config: dict[str, Any] = Field(max_length=50, examples=[{"method": "sft", "dataset": "trl-lib/Capybara",
                                                             "model": {"base": "Qwen/Qwen2.5-0.5B-Instruct"},
                                                             "training": {"max_steps": 100}}])
    dataset: DatasetRef | None = Field(None, description="An uploaded .jsonl/.parquet file to train on instead "
                                       "of the config's Hub dataset.")
    gpu: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    cloud_type: Literal["SECURE", "COMMUNITY", "ALL"] | None = None
    image: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    runpod_key: Token | None = None
    token_in_env: bool = False


JobCreate = Annotated[LocalJobCreate | ReplicateJobCreate | RunpodJobCreate, Field(discriminator="trainer")]


class RetryRequest(_Strict):
    """What ``hubferry retry`` takes: another token, repo or endpoint for the publish."""

    token: Token | None = None
    repo_id: RepoId | None = None
    endpoint: Url | None = None


class WebhookSettings(_Strict):
    url: Url


# -- responses ------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    category: str
    message: str
    hint: str = ""
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ProgressOut(BaseModel):
    stage: str | None
    percent: float | None
    step: int | None
    total_steps: int | None
    loss: float | None
    eta_seconds: float | None


class JobErrorOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    category: str
    message: str
    hint: str = ""
    retryable: bool = False


class EventOut(BaseModel):
    seq: int
    at: str
    kind: str
    stage: str | None
    message: str
    context: dict[str, Any]


class PublishedFileOut(BaseModel):
    path: str = Field(description="The file's path in the repo.")
    size: int = Field(description="Its size in bytes.")
    sha256: str
    verified: bool = Field(description="Read back from the Hub with the same size and hash.")


class JobOut(BaseModel):
    id: str
    name: str
    owner: str
    state: JobState
    trainer: str
    repo_id: str
    private: bool
    repo_url: str | None
    commit_sha: str | None
    endpoint: str | None = Field(None, description="The Hub the job publishes to.")
    token_source: str | None = Field(None, description="Where its Hub token comes from (flag, shell, stored, "
                                     "hf_login or none); never the token.")
    error: JobErrorOut | None
    progress: ProgressOut
    output_dir: str | None
    log_path: str | None
    attempts: int
    dataset_report: dict[str, Any] | None
    provider_url: str | None
    compute: dict[str, Any] | None = Field(None, description="A rented machine's GPU, price per hour, runtime "
                                           "and cost so far (RunPod jobs).")
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    files: list[PublishedFileOut] | None = Field(None, description="Once published (single-job reads): the files "
                                                  "the read-back checked.")
    timeline: list[EventOut] | None = None


class JobPage(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page; null at the end.")


class Timeline(BaseModel):
    events: list[EventOut]
    next_after: int = Field(description="Pass as ?after= to read what comes next.")


class LogChunk(BaseModel):
    text: str = Field(description="Log text, terminal escapes removed and secrets redacted.")
    offset: int = Field(description="Byte offset of the first byte read.")
    next_offset: int = Field(description="Byte offset to read from next.")
    size: int = Field(description="Size of the whole log in bytes.")


class ProgressPointOut(BaseModel):
    id: int
    at: str
    stage: str | None
    percent: float | None
    step: int | None
    total_steps: int | None
    loss: float | None


class ProgressHistory(BaseModel):
    points: list[ProgressPointOut]
    next_after: int


class NamingPreview(BaseModel):
    repo_id: str = Field(description="The repo a job with this name would publish to now.")
    endpoint: str
    token_source: str = Field(description="Where the Hub token would come from: flag, stored or none.")


class DeliveryAttempt(BaseModel):
    model_config = ConfigDict(extra="allow")
    at: str
    status: int | None = None
    error: str | None = None
    ms: int | None = None


class DeliveryOut(BaseModel):
    id: str
    event_seq: int
    event: dict[str, Any]
    url: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: str | None
    last_status: int | None
    last_error: str | None
    created_at: str
    log: list[DeliveryAttempt]


class Deliveries(BaseModel):
    deliveries: list[DeliveryOut]


class WebhookOut(BaseModel):
    url: str | None = Field(description="Where all your jobs' state changes are sent; null: nowhere.")
    secret: str | None = Field(None, description="The Standard Webhooks signing secret (whsec_...) of your "
                               "deliveries: only in the answer that made it (the first PUT, or POST .../secret), "
                               "never again.")
    secret_set: bool = Field(False, description="Whether you have a signing secret.")


class DatasetOut(BaseModel):
    id: str
    filename: str
    size: int
    sha256: str
    kind: str
    created_at: str
    report: dict[str, Any] | None = Field(None, description="The last check's report (POST .../check).")


class DatasetList(BaseModel):
    datasets: list[DatasetOut]


class CheckOptions(_Strict):
    trigger_word: Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_printable)] | None = None
    max_side: int = Field(1024, ge=64, le=8192)
    min_images: int = Field(1, ge=1, le=10_000)
