"""Every tunable of the built-in registry, read from arguments or ``HUBFERRY_HUB_*`` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024

#: Fault kinds the injector knows; see :mod:`hubferry.registry.faults`.
FAULT_KINDS = ("500", "503", "429", "cut", "lost")

#: File extensions always stored through LFS, as in the Hub's default ``.gitattributes``.
DEFAULT_LFS_EXTENSIONS = (
    ".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gguf", ".gz", ".h5", ".joblib", ".mlmodel",
    ".model", ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb", ".pickle", ".pkl", ".pt",
    ".pth", ".rar", ".safetensors", ".tar", ".tflite", ".tgz", ".wasm", ".xz", ".zip", ".zst",
)  # fmt: skip


class RegistrySettings(BaseSettings):
    """Configuration of one registry server.

    Every field can be set from the environment as ``HUBFERRY_HUB_<FIELD>`` (for example
    ``HUBFERRY_HUB_DATA_DIR=/srv/hub``, ``HUBFERRY_HUB_FAULT_KINDS=500,cut``).
    """

    model_config = SettingsConfigDict(env_prefix="HUBFERRY_HUB_", extra="forbid")

    #: Where the SQLite database, the blobs and the signing key live.
    data_dir: Path = Path("hub-data")
    host: str = "127.0.0.1"
    port: int = Field(8480, ge=0, le=65535)
    #: Base URL written into links (``url``, ``commitUrl``, LFS hrefs); derived from the request if unset.
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
    #: Lifetime of presigned upload and download URLs.
    url_ttl_s: int = Field(3600, ge=1)
    #: HMAC key for presigned URLs; a random key is generated and kept in the data dir if unset.
    secret: str | None = None

    #: Share of requests that fail on purpose (0 = never).
    fault_rate: float = Field(0.0, ge=0.0, le=1.0)
    fault_seed: int = 0
    fault_kinds: Annotated[tuple[str, ...], NoDecode] = FAULT_KINDS
    #: Only requests whose path matches this regular expression can fail (all but exempt routes if unset).
    fault_paths: str | None = None

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
