"""The stable JSON shape of a job, shared by ``--json`` output and the REST API."""

from __future__ import annotations

from typing import Any

from hubferry.domain.jobs import Job, JobEvent
from hubferry.logs import redact


def _ts(value) -> str | None:
    return value.isoformat() if value is not None else None


def event_dict(event: JobEvent) -> dict[str, Any]:
    return {
        "seq": event.seq, "at": _ts(event.at), "kind": event.kind.value, "stage": event.stage,
        "message": redact(event.message), "context": dict(event.context),
    }


def job_dict(job: Job, events: list[JobEvent] | None = None) -> dict[str, Any]:
    """A job as JSON: state, target, progress, error and (when given) its timeline."""
    p = job.progress
    data: dict[str, Any] = {
        "id": job.id, "name": job.name, "owner": job.owner, "state": job.state.value, "trainer": job.trainer,
        "repo_id": job.repo_id, "private": job.private, "repo_url": job.repo_url, "commit_sha": job.commit_sha,
        "error": {**job.error.to_dict(), "message": redact(job.error.message)} if job.error else None,
        "progress": {"stage": p.stage, "percent": p.percent, "step": p.step, "total_steps": p.total_steps,
                     "loss": p.loss, "eta_seconds": p.eta_seconds},
        "output_dir": job.output_dir, "log_path": job.log_path, "attempts": job.attempts,
        "created_at": _ts(job.created_at), "updated_at": _ts(job.updated_at),
        "started_at": _ts(job.started_at), "finished_at": _ts(job.finished_at),
    }
    if events is not None:
        data["timeline"] = [event_dict(e) for e in events]
    return data
