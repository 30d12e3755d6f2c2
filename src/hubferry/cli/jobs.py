"""``hubferry jobs list|show``, ``watch``, ``cancel`` and ``retry``."""

from __future__ import annotations

from typing import Annotated

import typer

from hubferry.cli.console import err, json_errors, print_json, say
from hubferry.cli.render import job_table, summary, timeline, watch_job
from hubferry.domain.jobs import JobState
from hubferry.errors import ValidationError
from hubferry.services.context import open_context

jobs_app = typer.Typer(no_args_is_help=True, help="List and inspect jobs.")
JobId = Annotated[str, typer.Argument(help="Job id.")]


def finished_ok(state: JobState) -> bool:
    return state in (JobState.PUBLISHED, JobState.TRAINED)


@jobs_app.command("list")
def jobs_list(
    state: Annotated[list[str] | None, typer.Option(help="Only jobs in this state (repeatable).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many jobs.")] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON line on stdout.")] = False,
) -> None:
    """List jobs, newest first (full ids; tab-separated when piped)."""
    from hubferry.services.views import job_dict

    json_errors(json_output)
    try:
        states = [JobState(s) for s in state] if state else None
    except ValueError:
        raise ValidationError(f"unknown state in {state}",
                              hint="one of " + ", ".join(s.value for s in JobState)) from None
    jobs = open_context().jobs.list_jobs(states=states, limit=limit)
    if json_output:
        print_json({"jobs": [job_dict(j) for j in jobs]})
    else:
        job_table(jobs)


@jobs_app.command("show")
def jobs_show(
    job_id: JobId,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON line on stdout.")] = False,
) -> None:
    """Show a job: state, target, progress, error and timeline."""
    from hubferry.services import remote
    from hubferry.services.views import job_dict, job_fields

    json_errors(json_output)
    ctx = open_context()
    job = remote.refresh(ctx, job_id)  # a remote training is read from its provider when stale
    events = ctx.jobs.events(job_id)
    if json_output:
        print_json(job_dict(job, events))
        return
    for key, value in job_fields(job, events):
        say(f"{key:>11}: ", value)
    if job.error:
        say("      error: ", f"({job.error.category}) {job.error.message}")
        if job.error.hint:
            say("  next step: ", job.error.hint)
    err.print()
    err.print(timeline(events))


def watch(job_id: JobId) -> None:
    """Follow a job live (stage, progress, ETA, log tail) until it ends."""
    ctx = open_context()
    ctx.jobs.require(job_id)
    final = watch_job(ctx, job_id)
    summary(final)
    raise typer.Exit(0 if finished_ok(final.state) else 1)


def cancel(job_id: JobId) -> None:
    """Cancel a job; a running trainer is stopped (locally: SIGTERM, then SIGKILL)."""
    from hubferry.services import control

    job = control.cancel(open_context(), job_id)
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
    from hubferry.services import control
    from hubferry.worker.dispatch import dispatcher_for

    ctx = open_context()
    dispatcher, queued = dispatcher_for(ctx)
    ctx.dispatcher = dispatcher
    job = control.retry(ctx, job_id, token=token, repo_id=repo, endpoint=endpoint)
    if queued:
        say(f"job {job.id}: {job.state.value} (queued for the workers)")
        if not wait:
            return
        job = watch_job(ctx, job_id)
    summary(job)
    raise typer.Exit(0 if finished_ok(job.state) else 1)
