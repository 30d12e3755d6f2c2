"""``hubferry jobs list|show``, ``watch``, ``cancel`` and ``retry``."""

from __future__ import annotations

from typing import Annotated

import typer

from hubferry.cli.backend import jobs_backend
from hubferry.cli.console import err, json_errors, print_json, say
from hubferry.cli.render import summary, timeline
from hubferry.domain.jobs import JobState
from hubferry.errors import ValidationError
from hubferry.services.views import fields_of

jobs_app = typer.Typer(no_args_is_help=True, help="List and inspect jobs.")
JobId = Annotated[str, typer.Argument(help="Job id.")]


def finished_ok(state: JobState) -> bool:
    return state in (JobState.PUBLISHED, JobState.TRAINED)


@jobs_app.command("list")
def jobs_list(
    state: Annotated[list[str] | None, typer.Option(help="Only jobs in this state (repeatable).")] = None,
    trainer: Annotated[list[str] | None, typer.Option(help="Only jobs of this trainer: local, replicate, ... "
                                                      "(repeatable).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many jobs.")] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON line on stdout.")] = False,
) -> None:
    """List jobs, newest first (full ids; tab-separated when piped)."""
    from hubferry.cli.render import job_table

    json_errors(json_output)
    try:
        states = [JobState(s) for s in state] if state else None
    except ValueError:
        raise ValidationError(f"unknown state in {state}",
                              hint="one of " + ", ".join(s.value for s in JobState)) from None
    jobs = jobs_backend().list_jobs(states, trainer, limit)
    if json_output:
        print_json({"jobs": [dict(j.data) for j in jobs]})
    else:
        job_table(jobs)


@jobs_app.command("show")
def jobs_show(
    job_id: JobId,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON line on stdout.")] = False,
) -> None:
    """Show a job: state, target, progress, error and timeline."""
    json_errors(json_output)
    job = jobs_backend().show(job_id)
    if json_output:
        print_json(dict(job.data))
        return
    for key, value in fields_of(job.data):
        say(f"{key:>11}: ", value)
    if job.error:
        say("      error: ", f"({job.error.category}) {job.error.message}")
        if job.error.hint:
            say("  next step: ", job.error.hint)
    err.print()
    err.print(timeline(job.timeline))


def watch(job_id: JobId) -> None:
    """Follow a job live (stage, progress, ETA, log tail) until it ends."""
    final = jobs_backend().watch(job_id)
    summary(final)
    raise typer.Exit(0 if finished_ok(final.state) else 1)


def cancel(job_id: JobId) -> None:
    """Cancel a job; a running trainer is stopped (locally: SIGTERM, then SIGKILL)."""
    job = jobs_backend().cancel(job_id)
    say(f"job {job.id} cancelled")


def retry(
    job_id: JobId,
    token: Annotated[str | None, typer.Option(help="Hub token for this job's publish (default: HF_TOKEN, "
                                              "then your stored token for the endpoint).")] = None,
    repo: Annotated[str | None, typer.Option(help="Publish to this repo OWNER/NAME instead.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Publish to this Hub URL instead.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the job ends (when a worker runs it).")] = False,
) -> None:
    """Re-run a failed or skipped publish (without retraining), or a failed training."""
    backend = jobs_backend()
    job, elsewhere = backend.retry(job_id, token=token, repo=repo, endpoint=endpoint)
    if elsewhere:
        say(f"job {job.id}: {job.state.value} ({backend.elsewhere})")
        if not wait:
            return
        job = backend.watch(job_id)
    summary(job)
    raise typer.Exit(0 if finished_ok(job.state) else 1)
