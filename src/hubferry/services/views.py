"""The stable JSON shape of a job, shared by ``--json`` output and the REST API."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from hubferry.domain.billing import billed_seconds
from hubferry.domain.jobs import EventKind, Job, JobEvent
from hubferry.logs import printable


def _ts(value) -> str | None:
    return value.isoformat() if value is not None else None


def event_dict(event: JobEvent) -> dict[str, Any]:
    return {
        "seq": event.seq, "at": _ts(event.at), "kind": event.kind.value, "stage": event.stage,
        "message": printable(event.message), "context": dict(event.context),
    }


def job_dict(job: Job, events: list[JobEvent] | None = None) -> dict[str, Any]:
    """A job as JSON: state, target, progress, error and (when given) its timeline."""
    p = job.progress
    data: dict[str, Any] = {
        "id": job.id, "name": job.name, "owner": job.owner, "state": job.state.value, "trainer": job.trainer,
        "repo_id": job.repo_id, "private": job.private, "repo_url": job.repo_url, "commit_sha": job.commit_sha,
        "endpoint": job.params.get("hub_endpoint"),
        "token_source": (job.params.get("credential") or {}).get("source"),
        "error": {**job.error.to_dict(), "message": printable(job.error.message)} if job.error else None,
        "progress": {"stage": p.stage, "percent": p.percent, "step": p.step, "total_steps": p.total_steps,
                     "loss": p.loss, "eta_seconds": p.eta_seconds},
        "output_dir": job.output_dir, "log_path": job.log_path, "attempts": job.attempts,
        "dataset_report": job.params.get("dataset_report"),
        "provider_url": provider_url(job, events or []),
        "compute": compute(job),
        "created_at": _ts(job.created_at), "updated_at": _ts(job.updated_at),
        "started_at": _ts(job.started_at), "finished_at": _ts(job.finished_at),
    }
    if events is not None:
        data["files"] = published_files(events)
        data["timeline"] = [event_dict(e) for e in events]
    return data


def published_files(events: list[JobEvent]) -> list[dict[str, Any]] | None:
    """The files the last successful read-back checked (``path``, ``size``, ``sha256``, ``verified``), or None
    before any succeeded (or when the read-back predates per-file records)."""
    for event in reversed(events):
        if event.kind is EventKind.STAGE_FINISHED and event.stage == "verifying":
            files = event.context.get("verified_files")
            if not isinstance(files, list):
                return None
            return [{"path": printable(str(f.get("path", ""))), "size": int(f.get("size") or 0),
                     "sha256": str(f.get("sha256") or ""), "verified": bool(f.get("verified"))}
                    for f in files if isinstance(f, dict)]
    return None


def provider_url(job: Job, events: list[JobEvent]) -> str | None:
    """The provider's own page of the run (Replicate's web URL), also after the run has ended."""
    for source in [job.trainer_handle or {}, *(e.context for e in reversed(events)
                                               if e.kind is EventKind.STAGE_STARTED and e.stage == "training")]:
        if url := source.get("web_url"):
            return str(url)
    return None


def compute(job: Job, now: datetime | None = None) -> dict[str, Any] | None:
    """What a rented machine (a RunPod pod) costs the job: GPU, price per hour, the time it ran (a stopped pod
    bills no GPU time) and the cost so far."""
    handle = job.trainer_handle or {}
    if not handle.get("launched_at"):
        return None
    runtime = billed_seconds(handle, now or datetime.now(UTC))
    price = handle.get("price_per_hr")
    return {"gpu": handle.get("gpu"), "cloud_type": handle.get("cloud_type"), "pod_id": handle.get("pod_id"),
            "pod": handle.get("released") or "running", "price_per_hr": price, "runtime_s": round(runtime),
            "cost_usd": round(float(price) * runtime / 3600, 4) if isinstance(price, int | float) else None}


def job_fields(job: Job, events: list[JobEvent] | None = None) -> list[tuple[str, str]]:
    """The facts ``jobs show`` prints, in order, as ``(label, text)``."""
    return fields_of(job_dict(job, events))


def fields_of(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The facts ``jobs show`` prints from a job's JSON (:func:`job_dict`, or the API's answer, the same shape)."""
    p = data.get("progress") or {}
    progress = f"{p['percent']:.0f}%" if p.get("percent") is not None else "-"
    if p.get("step") is not None:
        progress += f", step {p['step']}" + (f"/{p['total_steps']}" if p.get("total_steps") else "")
    if p.get("loss") is not None:
        progress += f", loss {p['loss']:.4g}"
    if (eta := p.get("eta_seconds")) is not None:
        progress += f", ETA {int(eta) // 60:02d}:{int(eta) % 60:02d}"
    stage = p.get("stage")
    if data.get("state") in ("failed", "cancelled") and stage in ("publishing", "verifying"):
        # the training succeeded before the publish stopped: say so, not the overall bar's 95 %
        steps = f", step {p['step']}" + (f"/{p['total_steps']}" if p.get("total_steps") else "") \
            if p.get("step") is not None else ""
        loss = f", loss {p['loss']:.4g}" if p.get("loss") is not None else ""
        progress = f"training done (100%{steps}{loss})"
        stage = f"{stage} {data['state']}"
    fields = [
        ("id", data["id"]), ("name", data["name"]), ("state", data["state"]), ("trainer", data["trainer"]),
        ("repo", data.get("repo_url") or data["repo_id"]), ("endpoint", str(data.get("endpoint") or "")),
        ("token", str(data.get("token_source") or "-")), ("commit", data.get("commit_sha") or "-"),
        ("progress", f"{progress} ({stage or 'not started'})"), ("output", data.get("output_dir") or "-"),
        ("log", data.get("log_path") or "-"), ("attempts", str(data.get("attempts", 1))),
    ]
    if report := data.get("dataset_report"):
        fields.append(("dataset", _dataset_line(report)))
    if url := data.get("provider_url"):
        fields.append(("provider", url))
    if data.get("state") in ("failed", "trained"):
        fields.append(("retry", f"hubferry retry {data['id']}"))
    if c := data.get("compute"):
        price = f"${c['price_per_hr']:.2f}/h" if c.get("price_per_hr") is not None else "price unknown"
        cost = f"${c['cost_usd']:.2f}" if c.get("cost_usd") is not None else "unknown"
        runtime = int(c.get("runtime_s") or 0)
        fields.append(("compute", f"{c.get('gpu')}, {str(c.get('cloud_type') or '').lower()} cloud, {price}, pod "
                       f"{c.get('pod_id')} ({c.get('pod')}), runtime {runtime // 3600}:{runtime // 60 % 60:02d}:"
                       f"{runtime % 60:02d}, cost so far {cost}"))
    return [(k, printable(v)) for k, v in fields]


def _dataset_line(report: dict[str, Any]) -> str:
    images = report.get("images") or []
    rejected = report.get("rejections") or []
    coverage = report.get("caption_coverage")
    parts = [f"{len(images)} images", f"{len(rejected)} rejected"]
    if coverage is not None:
        parts.append(f"captions {float(coverage) * 100:.0f}%")
    if report.get("sha256"):
        parts.append(f"sha256 {str(report['sha256'])[:16]}")
    return ", ".join(parts)
