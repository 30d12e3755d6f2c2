"""Every tunable of the built-in registry, read from arguments or ``HUBFERRY_HUB_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024
GB = 1000**3

#: Fault kinds the injector knows; see :mod:`hubferry.registry.faults`.
FAULT_KINDS = ("500", "503", "429", "cut", "lost", "text429", "html502", "html503")

#: File extensions always stored through LFS, as in the Hub's default ``.gitattributes``.
DEFAULT_LFS_EXTENSIONS = (
    ".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gguf", ".gz", ".h5", ".joblib", ".mlmodel",
    ".model", ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb", ".pickle", ".pkl", ".pt",
    ".pth", ".rar", ".safetensors", ".tar", ".tflite", ".tgz", ".wasm", ".xz", ".zip", ".zst",
)  # fmt: skip


def _default_data_dir() -> Path:
    from hubferry.config import load_settings  # the one place HUBFERRY_HOME is resolved

    return load_settings().home / "hub"


class RegistrySettings(BaseSettings):
    """Configuration of one registry server.

    Every field can be set from the environment as ``HUBFERRY_HUB_<FIELD>`` (for example
    ``HUBFERRY_HUB_DATA_DIR=/srv/hub``, ``HUBFERRY_HUB_FAULT_KINDS=500,cut``).
    """

    # An empty variable means "unset": HUBFERRY_HUB_DATA_DIR= must not mean the current directory.
    model_config = SettingsConfigDict(env_prefix="HUBFERRY_HUB_", extra="forbid", env_ignore_empty=True)

    #: Where the SQLite database, the blobs and the signing key live (default ``$HUBFERRY_HOME/hub``).
    data_dir: Path = Field(default_factory=_default_data_dir)
    host: str = "127.0.0.1"
    port: int = Field(8480, ge=0, le=65535)
    #: Base URL written into links (``url``, ``commitUrl``, signed LFS and download URLs) and the only
    #: origin the sign-in pages accept. If unset: ``http://<address the server socket listens on>``
    #: (as the server reports it), else ``http://{host}:{port}`` of these settings; never the request's
    #: ``Host`` header, which any client can forge. Set it when clients reach the registry through a
    #: proxy or a DNS name.
    public_url: str | None = None

    #: Files above this size are sent through LFS (the Hub uses 10 MiB).
    lfs_threshold: int = Field(10 * MiB, ge=1)
    #: Regular (non-LFS) files above this size are refused at commit time (the Hub uses 10 MiB).
    regular_max_size: int = Field(10 * MiB, ge=1)
    #: LFS objects above this size get the multipart transfer (S3's single-PUT limit is 5 GB).
    multipart_threshold: int = Field(5 * 1024 * MiB, ge=1)
    #: Part size of a multipart transfer.
    chunk_size: int = Field(64 * MiB, ge=1)
    lfs_extensions: Annotated[tuple[str, ...], NoDecode] = DEFAULT_LFS_EXTENSIONS

    #: Entries per tree page (the Hub uses 1000, and 50 with ``expand=true``).
    tree_page_size: int = Field(1000, ge=1)
    tree_expand_page_size: int = Field(50, ge=1)
    #: Commits per ``list_repo_commits`` page.
    commits_page_size: int = Field(50, ge=1)
    #: Repos per ``list_models`` / ``list_datasets`` page.
    repos_page_size: int = Field(1000, ge=1)
    #: Largest LFS object accepted (the Hub's per-file limit is 50 GB).
    max_object_size: int = Field(50 * GB, ge=1)
    #: Most parts of one multipart upload (S3 allows 10,000).
    max_parts: int = Field(10_000, ge=1)
    #: Largest ordinary JSON request body (preupload, LFS batch, paths-info ...).
    max_json_bytes: int = Field(4 * MiB, ge=1024)
    #: Largest NDJSON commit body (the Hub documents a 1 GB payload for regular files).
    max_commit_bytes: int = Field(1024 * MiB, ge=1024)
    #: Most operations in one commit (the Hub documents 25k LFS files per commit).
    max_commit_operations: int = Field(25_000, ge=1)
    #: Most files or paths named in one preupload or paths-info call (the Hub answers 413 beyond 1000).
    max_files_per_request: int = Field(1000, ge=1)

    #: Lifetime of presigned upload and download URLs.
    url_ttl_s: int = Field(3600, ge=1)
    #: How often leftover multipart parts (of uploads whose URLs expired) are removed.
    cleanup_interval_s: float = Field(600.0, gt=0)
    #: Lifetime of a sign-in session of the HTML pages.
    session_ttl_s: int = Field(12 * 3600, ge=60)
    #: HMAC key for presigned URLs; a random key is generated and kept in the data dir if unset.
    secret: str | None = None

    #: Share of requests that fail on purpose (0 = never).
    fault_rate: float = Field(0.0, ge=0.0, le=1.0)
    fault_seed: int = 0
    fault_kinds: Annotated[tuple[str, ...], NoDecode] = FAULT_KINDS
    #: Only requests whose path matches this regular expression can fail (all but exempt routes if unset).
    fault_paths: str | None = None

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("must be an http(s) URL such as https://hub.example.com (a path prefix is allowed)")
        return value.rstrip("/")

    @property
    def default_url(self) -> str:
        """``http://{host}:{port}``, the base URL when ``public_url`` is unset and the server reports none."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @field_validator("fault_kinds", "lfs_extensions", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("fault_kinds")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; choose from {', '.join(FAULT_KINDS)}")
        return value

    @field_validator("lfs_extensions")
    @classmethod
    def _dotted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in value)
