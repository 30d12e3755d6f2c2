"""``hubferry train``: submit a training job that publishes itself when the training succeeds."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Annotated

import typer

from hubferry.cli.console import err, json_errors, print_json, say
from hubferry.cli.jobs import finished_ok
from hubferry.cli.render import summary, watch_job
from hubferry.config import load_settings
from hubferry.domain.jobs import EventKind, Job, JobState
from hubferry.services import control, launch
from hubferry.services.context import Context, open_context
from hubferry.services.views import job_dict
from hubferry.worker.dispatch import dispatcher_for


def train(
    typer_ctx: typer.Context,
    trainer: Annotated[str, typer.Option(help="Training backend.")] = "local",
    local: Annotated[bool, typer.Option("--local", help="Same as --trainer local.")] = False,
    name: Annotated[str | None, typer.Option(help="Job and config name (names the repo).")] = None,
    repo: Annotated[str | None, typer.Option(help="Target repo OWNER/NAME (default: {hf_username}/{name}).")] = None,
    output: Annotated[Path | None, typer.Option(help="Folder the trainer writes its model to.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub URL (default: HF_ENDPOINT or huggingface.co).")] = None,
    token: Annotated[str | None, typer.Option(help="Hub token for this job (default: HF_TOKEN, then your stored "
                                              "token for the endpoint, read when the publish runs).")] = None,
    private: Annotated[bool, typer.Option("--private/--public", help="Visibility of a new repo.")] = True,
    total_steps: Annotated[int | None, typer.Option(min=1, help="Training steps, to pick the right progress bar.")]
    = None,
    pass_env: Annotated[list[str] | None, typer.Option(
        "--pass-env", help="Give the training command this secret variable of your shell (repeatable); "
        "secrets are withheld by default.")] = None,
    skip_preflight: Annotated[bool, typer.Option("--skip-preflight", help="Do not check the Hub token, "
                                                 "rights and repo before training (offline work).")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the job ends; exit 0 only if published.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Train with any command (after --) and publish the result automatically when it succeeds.

    With a worker running (`hubferry worker` or `hubferry serve`), the job is queued and this returns at
    once unless --wait. With none, it runs here, and Ctrl-C cancels it.
    """
    json_errors(json_output)
    command = list(typer_ctx.args)
    ctx = open_context(load_settings())
    request = launch.LocalRequest(
        command=command, output_dir=output, name=name, repo_id=repo, private=private, endpoint=endpoint,
        token=token, total_steps=total_steps, cwd=Path.cwd(), env=dict(os.environ), pass_env=tuple(pass_env or ()),
        preflight=not skip_preflight,
    )
    job = launch.submit(ctx, "local" if local else trainer, request)
    say(f"job {job.id}: ", f"{job.name} -> {job.repo_id} (output {job.output_dir})")
    for event in ctx.jobs.events(job.id):
        if event.kind is EventKind.NOTICE and event.message.startswith("warning:"):
            say("", event.message, style="yellow")
    dispatcher, queued = dispatcher_for(ctx)
    ctx.dispatcher = dispatcher
    if queued:
        dispatcher.train(job.id)
        say("queued for the workers; follow it with ", f"hubferry watch {job.id}")
        if not wait:
            if json_output:
                print_json({"id": job.id})
            return
        final = watch_job(ctx, job.id, show=not json_output or err.is_terminal)
    else:
        say("no worker is running: the job runs here (Ctrl-C cancels it). To detach instead, start "
            "`hubferry worker` in another terminal before submitting.")
        if json_output and not wait:
            print_json({"id": job.id})
        final = _run_inline(ctx, job.id)
    summary(final)
    if json_output and wait:
        print_json(job_dict(final, ctx.jobs.events(job.id)))
    raise typer.Exit(_exit_code(ctx, final))


def _run_inline(ctx: Context, job_id: str) -> Job:
    done = threading.Event()

    def run() -> None:
        try:
            ctx.dispatch().train(job_id)
        finally:
            done.set()

    runner = threading.Thread(target=run, daemon=True, name="hubferry-inline-job")
    runner.start()
    try:
        watch_job(ctx, job_id, show=True, until=done)
    except KeyboardInterrupt:  # the trainer runs in its own session: Ctrl-C must stop it too
        err.print(f"interrupted: cancelling job {job_id}")
        control.cancel(ctx, job_id)
    runner.join()
    return ctx.jobs.require(job_id)


def _exit_code(ctx: Context, job: Job) -> int:
    """0 when published (or trained with publishing skipped), the trainer's own code when it failed, else 1."""
    if finished_ok(job.state):
        return 0
    if job.state is JobState.FAILED:
        for event in reversed(ctx.jobs.events(job.id)):
            code = event.context.get("exit_code") if event.kind is EventKind.STAGE_FAILED else None
            if isinstance(code, int) and 0 < code < 256:
                return code
    return 1
