"""A job's training data: where its dataset zip is staged for a remote trainer to fetch."""

from __future__ import annotations

from pathlib import Path

from hubferry.config import Settings
from hubferry.domain.jobs import Job
from hubferry.errors import HubferryError, ValidationError
from hubferry.logs import get_logger

log = get_logger(__name__)


def stage_dataset(settings: Settings, job: Job, token: str) -> tuple[str, str]:
    """Stage ``job``'s dataset (a zip of images, or an LLM dataset file) with the configured staging; returns
    the URL a trainer fetches and the ref that deletes it (:func:`discard_staged`).

    Raises:
        ValidationError: the job has no dataset (or it is gone).
    """
    from hubferry.staging import for_setting

    zip_path = Path(str(job.params.get("dataset_zip") or job.params.get("dataset_file") or ""))
    if not zip_path.is_file():
        raise ValidationError(f"the dataset of job {job.id} is missing ({zip_path})",
                              hint="submit the job again with its dataset")
    staged = for_setting(settings, job.trainer).stage(zip_path, key=f"{job.id}/{zip_path.name}", token=token)
    return staged.url, staged.ref


def discard_staged(settings: Settings, ref: str | None, token: str | None) -> None:
    """Delete a staged dataset once its training has ended (the cleanup task catches what this misses)."""
    if not ref:
        return
    from hubferry.staging import delete

    try:
        delete(settings, ref, token=token)
    except HubferryError as exc:
        log.warning("could not delete a staged dataset; cleanup retries", ref=ref, error=exc.message)
