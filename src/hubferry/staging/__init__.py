"""Where a remote trainer fetches a dataset zip: one port (:class:`Staging`), three adapters, one cleanup.

``for_setting`` is the only code that knows the adapters: ``replicate-files`` (Replicate's Files
API), ``s3`` (any S3-compatible store, presigned URLs) and ``local`` (signed URLs of ``hubferry
serve``). Every staged file expires after ``staging_ttl_s``; :func:`cleanup` deletes expired ones.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from hubferry.config import Settings
from hubferry.errors import ConfigError, HubferryError
from hubferry.logs import get_logger
from hubferry.staging.base import StagedFile, Staging, split_ref, validate_key

__all__ = ["BACKENDS", "StagedFile", "Staging", "cleanup", "delete", "for_setting", "validate_key"]

#: Every staging backend, by the name of the ``staging`` setting and of refs.
BACKENDS = ("replicate-files", "s3", "local")
log = get_logger(__name__)


def for_setting(settings: Settings, trainer_kind: str) -> Staging:
    """The staging for jobs of ``trainer_kind`` under the ``staging`` setting.

    ``auto`` is Replicate's Files API for the Replicate trainer; otherwise ``local`` when
    ``public_url`` is set, else ``s3`` when ``s3_bucket`` is set.

    Raises:
        ConfigError: naming the settings to set.
    """
    choice = settings.staging
    if choice == "auto":
        if trainer_kind == "replicate":
            choice = "replicate-files"
        elif settings.public_url:
            choice = "local"
        elif settings.s3_bucket:
            choice = "s3"
        else:
            raise ConfigError(
                f"the {trainer_kind} trainer needs somewhere to fetch the dataset from", setting="HUBFERRY_STAGING",
                hint="set HUBFERRY_PUBLIC_URL (where trainers reach hubferry serve) or HUBFERRY_S3_BUCKET "
                "(with HUBFERRY_S3_ENDPOINT_URL and credentials for R2 or MinIO)")
    if choice == "replicate-files" and trainer_kind != "replicate":
        raise ConfigError(f"HUBFERRY_STAGING=replicate-files works only for the replicate trainer, not {trainer_kind}",
                          setting="HUBFERRY_STAGING", hint="use local (with HUBFERRY_PUBLIC_URL), s3 or auto")
    return _adapter(settings, choice)


def delete(settings: Settings, ref: str, *, token: str | None = None) -> None:
    """Delete the staged file ``ref`` with the backend that staged it, whatever ``staging`` says now."""
    _adapter(settings, split_ref(ref)[0]).delete(ref, token=token)


def cleanup(settings: Settings, *, now: float | None = None, backends: Sequence[Staging] | None = None) -> int:
    """Delete every expired staged file: those recorded under ``home/staging`` (local, replicate-files)
    and, with ``s3_bucket`` set, the bucket's. Failures are logged and left for the next round.

    Args:
        now: the moment to compare expiries with (Unix time; default: now).
        backends: the adapters to clean (default: all of the above); tests pass their own.

    Returns:
        How many files were deleted.
    """
    moment = time.time() if now is None else now
    deleted = 0
    for backend in backends if backends is not None else _cleanable(settings):
        try:
            refs = backend.expired(moment)
        except HubferryError as exc:
            log.warning("staging cleanup skipped a backend", backend=backend.kind, error=str(exc))
            continue
        for ref in refs:
            try:
                backend.delete(ref)
            except HubferryError as exc:
                log.warning("expired staged file not deleted", ref=ref, error=str(exc))
            else:
                deleted += 1
    if deleted:
        log.info("expired staged files deleted", count=deleted)
    return deleted


def _cleanable(settings: Settings) -> list[Staging]:
    kinds = ["local", "replicate-files"] + (["s3"] if settings.s3_bucket else [])
    adapters = []
    for kind in kinds:
        try:
            adapters.append(_adapter(settings, kind))
        except HubferryError as exc:
            log.warning("staging cleanup skipped a backend", backend=kind, error=str(exc))
    return adapters


def _adapter(settings: Settings, kind: str) -> Staging:
    if kind == "local":
        from hubferry.staging.local import LocalStaging

        return LocalStaging(settings)
    if kind == "s3":
        from hubferry.staging.s3 import S3Staging

        return S3Staging(settings)
    if kind == "replicate-files":
        from hubferry.staging.replicate_files import ReplicateFilesStaging

        return ReplicateFilesStaging(settings)
    raise ConfigError(f"unknown staging {kind!r}", setting="HUBFERRY_STAGING", hint="one of: " + ", ".join(BACKENDS))
