"""Settings from ``HUBFERRY_*`` environment variables and an optional TOML config file.

Precedence: explicit arguments > environment > ``$HUBFERRY_CONFIG`` (default
``$HUBFERRY_HOME/config.toml``) > defaults.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from hubferry.domain.leases import PUBLISH_LEASE_TTL
from hubferry.errors import ConfigError

DEFAULT_ENDPOINT = "https://huggingface.co"
MiB = 1024 * 1024
GB = 1000**3


def _home() -> Path:
    return Path(os.environ.get("HUBFERRY_HOME", Path.home() / ".hubferry")).expanduser()


def _config_file() -> Path:
    return Path(os.environ.get("HUBFERRY_CONFIG", _home() / "config.toml")).expanduser()


class Settings(BaseSettings):
    """Every tunable of hubferry; each field is settable as ``HUBFERRY_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="HUBFERRY_", extra="ignore", populate_by_name=True)

    home: Path = Field(default_factory=_home)
    #: Hub endpoint: HUBFERRY_ENDPOINT, else HF_ENDPOINT, else huggingface.co.
    endpoint: str | None = Field(None, validation_alias=AliasChoices("HUBFERRY_ENDPOINT", "HF_ENDPOINT"))
    #: Hub token of this shell: HUBFERRY_TOKEN, else HF_TOKEN (see services/credentials.py for the precedence).
    token: SecretStr | None = Field(None, validation_alias=AliasChoices("HUBFERRY_TOKEN", "HF_TOKEN"))
    #: Xet storage: "auto" uses it on huggingface.co only; on-prem registries speak plain LFS.
    xet: Literal["auto", "on", "off"] = "auto"
    #: Structured JSON logs on stderr (also ``--log-json``).
    log_json: bool = False
    #: The vault's Fernet key; default: ``home/keys/vault.key`` (created 0600 on first use).
    vault_key: SecretStr | None = None
    #: Former vault keys, comma separated, still tried for reading (``hubferry secrets rotate`` re-encrypts).
    vault_old_keys: SecretStr | None = None

    #: Job store; default SQLite (WAL) under ``home``. PostgreSQL: ``postgresql://...``.
    database_url: str | None = None
    #: Task queue; default Huey on SQLite under ``home``. Several machines: ``redis://host:6379/0``.
    queue_url: str | None = None
    #: Queue name: deployments sharing one Redis database must use different names.
    queue_name: str = "hubferry"
    #: Consumer threads of one ``hubferry worker``.
    worker_threads: int = Field(default=2, ge=1)
    #: How often the reconciler re-dispatches stuck work.
    reconcile_interval_s: float = Field(default=60.0, gt=0)
    #: A publish lease lives this long without a heartbeat; heartbeats come every third of it.
    publish_lease_ttl_s: float = Field(default=PUBLISH_LEASE_TTL.total_seconds(), gt=0)
    #: After SIGTERM, a cancelled trainer gets this long before SIGKILL.
    cancel_grace_s: float = Field(default=10.0, ge=0)

    #: HTTP timeouts (seconds). huggingface_hub 2.x sets none, so a stalled socket hangs forever.
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    #: Retries of one Hub call (network errors, 408, 429, 5xx) and their backoff.
    max_attempts: int = Field(default=6, ge=1)
    retry_base_delay: float = Field(default=1.0, ge=0)
    retry_max_delay: float = Field(default=30.0, ge=0)
    #: Longest Retry-After we are willing to honour before giving up.
    retry_after_cap: float = Field(default=300.0, ge=0)

    #: Commit batching: the Hub advises < 100 files per commit and times commits out at 60 s.
    commit_max_files: int = Field(default=100, ge=1)
    commit_max_regular_bytes: int = Field(default=100 * MiB, ge=1)
    #: Bytes of small files handed to one preupload call (each large file gets a call of its own).
    preupload_group_bytes: int = Field(default=4 * 1024 * MiB, ge=1)
    #: Regular (non-LFS) files above this go through LFS, as the Hub requires.
    regular_file_limit: int = Field(default=10 * MiB, ge=0)
    #: Files above this are refused before upload (the Hub's per-file limit).
    max_file_size: int = Field(default=50 * GB, ge=1)

    #: Where ``hubferry serve`` is reachable from outside (trainers fetch staged files and providers
    #: deliver webhooks there); unset: no webhooks, and the ``local`` staging cannot be used.
    public_url: str | None = None

    #: A running ``hubferry serve`` the CLI talks to instead of the local database (``HUBFERRY_URL``), with the
    #: API token it sends (``HUBFERRY_API_TOKEN``, from ``hubferry users token NAME``): both or neither.
    url: str | None = None
    api_token: SecretStr | None = None

    #: Replicate API; tests point it at a local fake. Token: HUBFERRY_REPLICATE_TOKEN or REPLICATE_API_TOKEN.
    replicate_base_url: str = "https://api.replicate.com"
    replicate_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("HUBFERRY_REPLICATE_TOKEN", "REPLICATE_API_TOKEN"))
    #: The Replicate trainer ``owner/name:version`` FLUX LoRA jobs use (a pinned version, overridable).
    replicate_trainer: str = (
        "ostris/flux-dev-lora-trainer:e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb5844497"
    )
    #: How often an active remote training is polled (also the staleness after which a status read refreshes).
    poll_interval_s: float = Field(default=5.0, gt=0)

    #: RunPod GraphQL API (without ``/graphql``); also read from the official client's RUNPOD_API_BASE_URL.
    runpod_base_url: str = Field(
        "https://api.runpod.io", validation_alias=AliasChoices("HUBFERRY_RUNPOD_BASE_URL", "RUNPOD_API_BASE_URL"))
    runpod_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("HUBFERRY_RUNPOD_API_KEY", "RUNPOD_API_KEY"))
    #: The training image pods run (its entrypoint is ``hubferry agent``; see the Dockerfile).
    runpod_image: str = "ghcr.io/hubferry/hubferry-agent:0.1.0"
    runpod_gpu: str = "NVIDIA A100 80GB PCIe"
    runpod_cloud_type: Literal["SECURE", "COMMUNITY", "ALL"] = "SECURE"
    runpod_container_disk_gb: int = Field(default=40, ge=10)
    runpod_volume_gb: int = Field(default=50, ge=0)
    #: An agent silent this long (no report, no heartbeat) while its pod runs is lost; before its first
    #: report the pod gets ``runpod_start_grace_s`` (image pull, model download).
    runpod_heartbeat_grace_s: float = Field(default=600.0, gt=0)
    runpod_start_grace_s: float = Field(default=1800.0, gt=0)

    #: Where a dataset zip is staged for a remote trainer: "auto" (replicate-files for Replicate),
    #: "replicate-files", "s3" (any S3-compatible store) or "local" (signed URLs of ``hubferry serve``).
    staging: Literal["auto", "replicate-files", "s3", "local"] = "auto"
    #: Staged files expire (and are deleted by the cleanup task) after this long.
    staging_ttl_s: int = Field(default=24 * 3600, ge=60)
    s3_bucket: str | None = None
    s3_prefix: str = "hubferry/"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None

    #: Dataset intake limits: images per dataset, bytes in all, pixels per image (decompression bombs).
    dataset_max_images: int = Field(default=1000, ge=1)
    dataset_max_bytes: int = Field(default=2 * 1024 * MiB, ge=1)
    dataset_max_pixels: int = Field(default=40_000_000, ge=1)
    #: Hosts a dataset URL may resolve to although they are loopback/private (the SSRF guard); tests add 127.0.0.1.
    fetch_allow_hosts: tuple[str, ...] = ()
    #: Hub endpoints a user may store a token for although they resolve to loopback/private addresses (an
    #: on-prem registry, tests' 127.0.0.1); the default ``endpoint`` is always allowed.
    hub_allow_hosts: tuple[str, ...] = ()

    #: The pod agent (``hubferry agent``, docs/pod-agent.md): the job's callbacks, its token and id, set in
    #: the pod's environment by the orchestrator, and the agent's working folder (the pod volume).
    callback_url: str | None = None
    job_token: SecretStr | None = None
    job_id: str | None = None
    agent_dir: Path = Path("/workspace/hubferry")
    #: New log lines go to the orchestrator at most this often (heartbeats follow the spec's ``heartbeat_s``).
    agent_report_interval_s: float = Field(default=2.0, gt=0)
    #: How long one callback keeps retrying an unreachable orchestrator before the agent gives up.
    agent_patience_s: float = Field(default=900.0, gt=0)
    #: Largest staged dataset the agent downloads.
    agent_max_dataset_bytes: int = Field(default=20 * GB, ge=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_file())
        return (init_settings, env_settings, toml)

    def resolved_database_url(self) -> str:
        """The job store URL: setting, else SQLite under ``home``."""
        return self.database_url or f"sqlite:///{self.home / 'hubferry.db'}"

    def resolved_endpoint(self) -> str:
        """The Hub endpoint: HUBFERRY_ENDPOINT, then HF_ENDPOINT, then huggingface.co."""
        return (self.endpoint or DEFAULT_ENDPOINT).rstrip("/")

    def shell_token(self) -> str | None:
        """The Hub token this process was given (HUBFERRY_TOKEN or HF_TOKEN), if any."""
        return self.token.get_secret_value() if self.token else None

    def service(self) -> tuple[str, str] | None:
        """The service the CLI talks to, as ``(url, api token)``; None: the local database.

        Raises:
            ConfigError: only one of HUBFERRY_URL and HUBFERRY_API_TOKEN is set, or the URL is not http(s).
        """
        token = self.api_token.get_secret_value().strip() if self.api_token else ""
        url = (self.url or "").strip()
        if not url and not token:
            return None
        if not token:
            raise ConfigError("HUBFERRY_URL is set but HUBFERRY_API_TOKEN is not",
                              hint="set HUBFERRY_API_TOKEN to an API token of yours (`hubferry users token NAME` on "
                              "the service's machine), or unset HUBFERRY_URL to use the local database")
        if not url:
            raise ConfigError("HUBFERRY_API_TOKEN is set but HUBFERRY_URL is not",
                              hint="set HUBFERRY_URL to the service's address (e.g. http://127.0.0.1:8470), or "
                              "unset HUBFERRY_API_TOKEN to use the local database")
        if not re.match(r"^https?://[^\s/?#@]+(/[^\s?#]*)?$", url, re.IGNORECASE):
            raise ConfigError(f"HUBFERRY_URL must be an http(s) URL such as http://127.0.0.1:8470, not {url[:100]!r}",
                              hint="fix HUBFERRY_URL (no user name, password, query or fragment)")
        return url.rstrip("/"), token

    def database_display(self) -> str:
        """The job store URL with any password hidden, for messages."""
        return _hide_password(self.resolved_database_url())

    def queue_url_display(self) -> str:
        """Where the task queue lives, with any password hidden, for messages."""
        return _hide_password(self.queue_url) if self.queue_url else str(self.home / "queue.db")


def _hide_password(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def load_settings(**overrides: object) -> Settings:
    """Load settings, turning any invalid value into a :class:`ConfigError` naming the setting."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]  # checked by pydantic
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        name = "HUBFERRY_" + "_".join(str(p) for p in first["loc"]).upper()
        raise ConfigError(
            f"invalid setting {name}: {first['msg']}",
            hint=f"fix {name} in the environment or in {_config_file()}",
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read config file {_config_file()}: {exc}", hint="fix or remove the file") from None
