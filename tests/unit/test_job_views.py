"""The JSON and terminal views of a job keep the provider's page after the run has ended."""

from __future__ import annotations

from datetime import UTC, datetime

from hubferry.domain.jobs import EventKind, JobEvent, new_job
from hubferry.services.views import job_dict, job_fields

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def test_the_replicate_page_outlives_the_trainer_handle():
    job = new_job(owner="alice", name="lora", trainer="replicate", params={}, dataset="d", repo_id="alice/lora",
                  now=NOW)
    started = JobEvent(job.id, 3, NOW, EventKind.STAGE_STARTED, stage="training",
                       context={"training_id": "t1", "web_url": "https://replicate.com/p/t1"})
    assert job.trainer_handle is None  # dropped once the training ended
    assert job_dict(job, [started])["provider_url"] == "https://replicate.com/p/t1"
    assert ("provider", "https://replicate.com/p/t1") in job_fields(job, [started])
    assert job_dict(job)["provider_url"] is None
