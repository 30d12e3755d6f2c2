"""A job's training data: where its dataset zip is staged for a remote trainer to fetch."""

from __future__ import annotations

from pathlib import Path

from hubferry.config import Settings
from hubferry.domain.jobs import Job
from hubferry.errors import ValidationError


def stage_dataset(settings: Settings, job: Job, token: str) -> str:
    """Stage ``job``'s dataset zip with the configured staging and return the URL a trainer fetches.

    Raises:
        ValidationError: the job has no dataset zip (or it is gone).
    """
    from hubferry.staging import for_setting

    zip_path = Path(str(job.params.get("dataset_zip") or ""))
    if not zip_path.is_file():
        raise ValidationError(f"the dataset zip of job {job.id} is missing ({zip_path})",
                              hint="submit the job again with --images")
    staged = for_setting(settings, job.trainer).stage(zip_path, key=f"{job.id}/{zip_path.name}", token=token)
    return staged.url
