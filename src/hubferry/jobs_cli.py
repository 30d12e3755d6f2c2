"""CLI commands for jobs: train, jobs list/show, watch, cancel, retry, logs parse, worker, serve."""

from __future__ import annotations

import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from hubferry.config import load_settings
from hubferry.console import err, exit_code, print_error, print_json
from hubferry.domain.jobs import FINAL_STATES, RESTING_STATES, Job, JobState
from hubferry.domain.naming import slugify
from hubferry.errors import HubferryError, ValidationError
from hubferry.services import control, launch
from hubferry.services.context import Context, open_context
from hubferry.services.training import log_tail
from hubferry.services.views import job_dict
from hubferry.tracking import parse_log

jobs_app = typer.Typer(no_args_is_help=True, help="List and inspect jobs.")
logs_app = typer.Typer(no_args_is_help=True, help="Read trainer logs.")
#: How often `watch` re-reads the job.
WATCH_INTERVAL_S = 0.5


def _fail(error: HubferryError, json_output: bool = False) -> typer.Exit:
    print_error(error)
    if json_output:
        print_json({"error": error.to_dict()})
    return typer.Exit(exit_code(error))


def _ended(job: Job) -> bool:
    return job.state in FINAL_STATES or job.state in RESTING_STATES


def _format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA --:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"ETA {minutes:02d}:{secs:02d}"


def watch_job(ctx: Context, job_id: str, *, show: bool = True, until: threading.Event | None = None) -> Job:
    """Show a live progress bar with stage, ETA and log tail until the job ends; returns the final job."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[eta]}"),
                   console=err, disable=not show)
    task = bar.add_task("queued", total=100, eta="")
    tail = Text()
    with Live(Group(bar, tail), console=err, refresh_per_second=4, transient=False) if show else nullcontext():
        while True:
            job = ctx.jobs.require(job_id)
            p = job.progress
            step = f" step {p.step}/{p.total_steps}" if p.step is not None and p.total_steps else ""
            loss = f" loss {p.loss:.4g}" if p.loss is not None else ""
            bar.update(task, completed=p.percent or 0, eta=_format_eta(p.eta_seconds),
                       description=f"{job.state.value}{step}{loss}")
            if job.log_path:
                tail.plain = log_tail(Path(job.log_path), lines=4) + "\n"
            if _ended(job) or (until is not None and until.is_set()):
                return ctx.jobs.require(job_id)
            time.sleep(WATCH_INTERVAL_S)


def _summary(job: Job) -> None:
    if job.state is JobState.PUBLISHED:
        err.print(f"[green]published and verified[/]: {job.repo_url} (commit {job.commit_sha})")
        endpoint = job.params.get("hub_endpoint", "")
        prefix = "" if endpoint.endswith("huggingface.co") else f"HF_ENDPOINT={endpoint} "
        err.print(f"download it back: {prefix}hf download {job.repo_id}   or in Python: "
                  f"huggingface_hub.snapshot_download({job.repo_id!r}, endpoint={endpoint!r})", markup=False)
    elif job.state is JobState.TRAINED:
        err.print(f"[yellow]trained, not published[/]: no Hub token configured; weights kept in {job.output_dir}. "
                  f"Set one (`hubferry secrets set hf_token`) and run `hubferry retry {job.id}`.")
    elif job.error is not None:
        err.print(f"[red]{job.state.value}[/] ({job.error.category}): {job.error.message}", markup=True)
        if job.error.hint:
            err.print(f"  next step: {job.error.hint}")
    else:
        err.print(f"job {job.id} is {job.state.value}")


def _has_worker(ctx: Context) -> bool:
    from hubferry.worker.run import local_worker_alive

    return bool(ctx.settings.queue_url) or local_worker_alive(ctx)


def train(
    typer_ctx: typer.Context,
    local: Annotated[bool, typer.Option("--local", help="Run the command as a local subprocess.")] = False,
    name: Annotated[str | None, typer.Option(help="Job and config name (names the repo).")] = None,
    repo: Annotated[str | None, typer.Option(help="Target repo OWNER/NAME (default: {hf_username}/{name}).")] = None,
    output: Annotated[Path | None, typer.Option(help="Folder the trainer writes its model to.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub URL (default: HF_ENDPOINT or huggingface.co).")] = None,
    token: Annotated[str | None, typer.Option(help="Hub token (default: HF_TOKEN or the stored secret).")] = None,
    private: Annotated[bool, typer.Option("--private/--public", help="Visibility of a new repo.")] = True,
    total_steps: Annotated[int | None, typer.Option(help="Training steps, to pick the right progress bar.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the job ends; exit 0 only if published.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Train with any command (after --) and publish the result automatically when it succeeds."""
    command = list(typer_ctx.args)
    try:
        if not local:
            raise ValidationError("only --local training is available here",
                                  hint="add --local; cloud trainers (Replicate, RunPod) come later")
        ctx = open_context(load_settings())
        job_name = name or (Path(command[-1]).stem if command else "model")
        out = output or ctx.settings.home / "outputs" / slugify(job_name)
        job = launch.submit_local(ctx, command=command, output_dir=out, name=job_name, repo_id=repo,
                                  private=private, endpoint=endpoint, token=token, total_steps=total_steps)
    except HubferryError as error:
        raise _fail(error, json_output) from None
    err.print(f"job {job.id}: {job.name} -> {job.repo_id} (output {job.output_dir})")
    if json_output and not wait:
        print_json({"id": job.id})
    if _has_worker(ctx):
        from hubferry.worker.queue import TaskQueue

        TaskQueue(ctx.settings).train(job.id)
        err.print("queued for the workers")
        if not wait:
            return
        final = watch_job(ctx, job.id, show=not json_output or err.is_terminal)
    else:
        done = threading.Event()
        def run_inline() -> None:
            try:
                ctx.dispatch().train(job.id)
            finally:
                done.set()

        runner = threading.Thread(target=run_inline, daemon=True, name="hubferry-inline-job")
        runner.start()
        try:
            watch_job(ctx, job.id, show=True, until=done)
        except KeyboardInterrupt:  # the trainer runs in its own session: Ctrl-C must stop it too
            err.print(f"interrupted: cancelling job {job.id}")
            control.cancel(ctx, job.id)
        runner.join()
        final = ctx.jobs.require(job.id)
    _summary(final)
    if json_output and wait:
        print_json(job_dict(final, ctx.jobs.events(job.id)))
    ok = final.state in (JobState.PUBLISHED, JobState.TRAINED)
    raise typer.Exit(0 if ok else 1)


@jobs_app.command("list")
def jobs_list(
    state: Annotated[list[str] | None, typer.Option(help="Only jobs in this state (repeatable).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many jobs.")] = 50,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON line on stdout.")] = False,
) -> None:
    """List jobs, newest first."""
    try:
        ctx = open_context()
        states = [JobState(s) for s in state] if state else None
    except ValueError:
        raise _fail(ValidationError(f"unknown state in {state}", hint="one of " + ", ".join(s.value for s in JobState)),
                    json_output) from None
    except HubferryError as error:
        raise _fail(error, json_output) from None
    jobs = ctx.jobs.list_jobs(states=states, limit=limit)
    if json_output:
        print_json({"jobs": [job_dict(j) for j in jobs]})
        return
    table = Table("id", "name", "state", "progress", "repo", "updated")
    for j in jobs:
        pct = f"{j.progress.percent:.0f}%" if j.progress.percent is not None else ""
        table.add_row(j.id, j.name, j.state.value, pct, j.repo_url or j.repo_id, j.updated_at.strftime("%H:%M:%S"))
    Console().print(table)


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    json_output: Annotated[bool, typer.Option("--json", help="One JSON line on stdout.")] = False,
) -> None:
    """Show a job: state, target, progress, error and timeline."""
    try:
        ctx = open_context()
        job = ctx.jobs.require(job_id)
    except HubferryError as error:
        raise _fail(error, json_output) from None
    events = ctx.jobs.events(job_id)
    if json_output:
        print_json(job_dict(job, events))
        return
    data = job_dict(job)
    for key in ("id", "name", "state", "repo_id", "repo_url", "commit_sha", "output_dir", "log_path"):
        err.print(f"{key:>11}: {data[key]}", markup=False)
    p = data["progress"]
    err.print(f"   progress: {p['percent']}% stage={p['stage']} step={p['step']}/{p['total_steps']} "
              f"loss={p['loss']} eta={p['eta_seconds']}", markup=False)
    if job.error:
        err.print(f"      error: ({job.error.category}) {job.error.message}\n  next step: {job.error.hint}",
                  markup=False)
    for e in events:
        err.print(f"  {e.at:%H:%M:%S} {e.kind.value:<14} {e.stage or '':<10} {e.message} "
                  f"{dict(e.context) if e.context else ''}", markup=False)


def watch(job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Follow a job live (stage, progress, ETA, log tail) until it ends."""
    try:
        ctx = open_context()
        ctx.jobs.require(job_id)
    except HubferryError as error:
        raise _fail(error) from None
    final = watch_job(ctx, job_id)
    _summary(final)
    raise typer.Exit(0 if final.state in (JobState.PUBLISHED, JobState.TRAINED) else 1)


def cancel(job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Cancel a job; a running local trainer is terminated (SIGTERM, then SIGKILL)."""
    try:
        job = control.cancel(open_context(), job_id)
    except HubferryError as error:
        raise _fail(error) from None
    err.print(f"job {job.id} cancelled")


def retry(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    wait: Annotated[bool, typer.Option("--wait", help="Block until the job ends.")] = False,
) -> None:
    """Re-run a failed publish (without retraining) or a failed training."""
    try:
        ctx = open_context()
        if _has_worker(ctx):
            from hubferry.worker.queue import TaskQueue

            ctx.dispatcher = TaskQueue(ctx.settings)
            job = control.retry(ctx, job_id)
            err.print(f"job {job.id}: {job.state.value} (queued for the workers)")
            if not wait:
                return
            job = watch_job(ctx, job_id)
        else:
            job = control.retry(ctx, job_id)
    except HubferryError as error:
        raise _fail(error) from None
    _summary(job)
    raise typer.Exit(0 if job.state in (JobState.PUBLISHED, JobState.TRAINED) else 1)


@logs_app.command("parse")
def logs_parse(
    file: Annotated[str, typer.Argument(help="Log file, or - for stdin.")] = "-",
    total_steps: Annotated[int | None, typer.Option(help="Steps of the training bar.")] = None,
) -> None:
    """Print the progress snapshot of a trainer log as one line of JSON."""
    try:
        if file == "-":
            snapshot = parse_log(sys.stdin, total_steps=total_steps)
        else:
            with open(file, encoding="utf-8", errors="replace") as fh:
                snapshot = parse_log(fh, total_steps=total_steps)
    except OSError as exc:
        err.print(f"error (file_error): cannot read {file}: {exc.strerror}")
        raise typer.Exit(2) from None
    except ValueError as exc:
        err.print(f"error (validation): {exc}")
        raise typer.Exit(2) from None
    print_json(snapshot.to_dict())


def worker(
    threads: Annotated[int | None, typer.Option(help="Task threads (default HUBFERRY_WORKER_THREADS).")] = None,
) -> None:
    """Run a worker: executes queued trainings and publishes, and reconciles stuck jobs."""
    from hubferry.worker.queue import TaskQueue, bind_context
    from hubferry.worker.run import Housekeeper

    settings = load_settings()
    queue = TaskQueue(settings)
    ctx = open_context(settings, dispatcher=queue)
    bind_context(ctx)
    housekeeper = Housekeeper(ctx)
    housekeeper.start()
    err.print(f"worker {ctx.worker_id} on {settings.queue_url or settings.home / 'queue.db'}")
    try:
        queue.consumer(threads or settings.worker_threads).run()
    finally:
        housekeeper.stop()


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8470,
) -> None:
    """Run the REST API with an in-process worker (the embedded default: one process, SQLite)."""
    import uvicorn

    from hubferry.api.app import create_app

    ctx = open_context(load_settings())
    err.print(f"hubferry API on http://{host}:{port} (docs at /docs), jobs in {ctx.settings.resolved_database_url()}")
    uvicorn.run(create_app(ctx), host=host, port=port, log_level="warning")
