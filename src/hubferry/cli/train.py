"""``hubferry train``: submit a training job that publishes itself when the training succeeds."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from hubferry.cli.console import err, json_errors, print_json, say
from hubferry.cli.job_files import merge_job_file, parse_params
from hubferry.cli.render import ended, summary, watch_job
from hubferry.config import load_settings
from hubferry.domain.jobs import EventKind, Job
from hubferry.errors import ValidationError
from hubferry.services.context import Context, open_context


def train(
    typer_ctx: typer.Context,
    trainer: Annotated[str | None, typer.Option(help="Training backend: local (default), replicate or "
                                                    "runpod.")] = None,
    local: Annotated[bool, typer.Option("--local", help="Same as --trainer local.")] = False,
    name: Annotated[str | None, typer.Option(help="Job and config name (names the repo).")] = None,
    repo: Annotated[str | None, typer.Option(help="Target repo OWNER/NAME (default: {hf_username}/{name}).")] = None,
    output: Annotated[Path | None, typer.Option(help="Folder the trainer writes its model to.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub URL (default: HF_ENDPOINT or huggingface.co).")] = None,
    token: Annotated[str | None, typer.Option(help="Hub token for this job (default: HF_TOKEN, then your stored "
                                              "token for the endpoint, read when the publish runs).")] = None,
    private: Annotated[bool | None, typer.Option("--private/--public", help="Visibility of a new repo "
                                                 "(default private).")] = None,
    total_steps: Annotated[int | None, typer.Option(min=1, help="Training steps, to pick the right progress bar.")]
    = None,
    pass_env: Annotated[list[str] | None, typer.Option(
        "--pass-env", help="Give the training command this secret variable of your shell (repeatable); "
        "secrets are withheld by default.")] = None,
    skip_preflight: Annotated[bool, typer.Option("--skip-preflight", help="Do not check the Hub token, "
                                                 "rights and repo before training (offline work).")] = False,
    images: Annotated[str | None, typer.Option(help="Replicate: training images (folder, zip, or a file of "
                                               "URLs).")] = None,
    trigger_word: Annotated[str | None, typer.Option(help="Replicate: the word that triggers the LoRA.")] = None,
    steps: Annotated[int | None, typer.Option(help="Replicate: training steps.")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Replicate: learning rate.")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="Replicate: LoRA rank.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Replicate: any trainer input KEY=VALUE (repeatable).")]
    = None,
    replicate_token: Annotated[str | None, typer.Option(help="Replicate API token (default: REPLICATE_API_TOKEN, "
                                                        "then your stored replicate_token).")] = None,
    replicate_trainer: Annotated[str | None, typer.Option(help="Replicate trainer OWNER/NAME:VERSION (default: "
                                                          "the pinned FLUX LoRA trainer).")] = None,
    destination: Annotated[str | None, typer.Option(help="Replicate model receiving the training (created "
                                                    "private if missing).")] = None,
    gpu: Annotated[str | None, typer.Option(help="RunPod: GPU type, e.g. \"NVIDIA A100 80GB PCIe\" (default: the "
                                            "runpod_gpu setting).")] = None,
    cloud_type: Annotated[str | None, typer.Option(help="RunPod: SECURE, COMMUNITY or ALL.")] = None,
    image: Annotated[str | None, typer.Option(help="RunPod: the pod's image (default: hubferry's agent image).")]
    = None,
    runpod_key: Annotated[str | None, typer.Option(help="RunPod API key (default: RUNPOD_API_KEY, then your stored "
                                                   "runpod_api_key).")] = None,
    token_in_env: Annotated[bool, typer.Option("--token-in-env", help="RunPod: put HF_TOKEN and HF_REPO_NAME into "
                                               "the pod's environment, for an image of your own (a token fixed "
                                               "later will not reach it).")] = False,
    job_file: Annotated[Path | None, typer.Option("-f", "--file", help="A job file (TOML) with these options; "
                                                  "flags given here win. With --trainer runpod: the training "
                                                  "config (method, model, dataset, ...).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the job ends; exit 0 only if published.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Train and publish the result automatically when it succeeds: any command (after --) locally, or a
    FLUX LoRA on Replicate (--trainer replicate --images DIR --trigger-word TOK).

    With a worker running (`hubferry worker` or `hubferry serve`), the job is queued and this returns at
    once unless --wait. With none, it runs here, and Ctrl-C cancels it.
    """
    given = {k: v for k, v in locals().items() if k not in ("typer_ctx", "job_file", "wait", "json_output")}
    from hubferry.services import launch, replicate_jobs
    from hubferry.services.views import job_dict
    from hubferry.worker.dispatch import dispatcher_for

    json_errors(json_output)
    training_config_file = job_file if trainer == "runpod" else None  # a RunPod job's file is its training config
    options = merge_job_file(None if training_config_file else job_file, given, defaults=_DEFAULTS)
    kind = "local" if options["local"] else options["trainer"]
    from hubferry.cli.backend import remote_jobs

    if (service := remote_jobs()) is not None:  # HUBFERRY_URL and HUBFERRY_API_TOKEN: the service runs the job
        raise typer.Exit(service.train(kind, options, list(typer_ctx.args) or list(options.get("command") or []),
                                       wait=wait, json_output=json_output, config_file=training_config_file))
    ctx = open_context(load_settings())
    if kind == "replicate":
        job = replicate_jobs.submit(ctx, replicate_jobs.ReplicateRequest(
            images=_required(options, "images"), trigger_word=options["trigger_word"], steps=options["steps"],
            learning_rate=options["learning_rate"], lora_rank=options["lora_rank"],
            params=parse_params(options["param"]), name=options["name"], repo_id=options["repo"],
            private=options["private"], endpoint=options["endpoint"], token=options["token"],
            replicate_token=options["replicate_token"], trainer=options["replicate_trainer"],
            destination=options["destination"], preflight=not options["skip_preflight"],
        ))
    elif kind == "runpod":
        job = _submit_runpod(ctx, options, training_config_file, private=given["private"])
    else:
        job = launch.submit(ctx, kind, launch.LocalRequest(
            command=list(typer_ctx.args) or list(options.get("command") or []), output_dir=options["output"],
            name=options["name"], repo_id=options["repo"], private=options["private"], endpoint=options["endpoint"],
            token=options["token"], total_steps=options["total_steps"], cwd=Path.cwd(), env=dict(os.environ),
            pass_env=tuple(options["pass_env"] or ()), preflight=not options["skip_preflight"],
        ))
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
    """Run the job here; a remote training is then followed (polled, published) by this watch."""
    done = threading.Event()

    def run() -> None:
        try:
            ctx.dispatch().train(job_id)
        finally:
            done.set()

    runner = threading.Thread(target=run, daemon=True, name="hubferry-inline-job")
    runner.start()
    try:
        job = watch_job(ctx, job_id, show=True, until=done)
        runner.join()
        if not ended(job):
            watch_job(ctx, job_id, show=True)
    except KeyboardInterrupt:  # the trainer runs in its own session (or remotely): Ctrl-C must stop it too
        from hubferry.services import control

        err.print(f"interrupted: cancelling job {job_id}")
        control.cancel(ctx, job_id)
    runner.join()
    return ctx.jobs.require(job_id)


#: Option defaults, so a job file fills only what the command line left unset.
_DEFAULTS: dict[str, Any] = {"trainer": "local", "local": False, "private": True, "skip_preflight": False}


def _submit_runpod(ctx: Context, options: dict[str, Any], config_file: Path | None, *, private: bool | None) -> Job:
    from hubferry import training_config
    from hubferry.services import runpod_jobs

    if config_file is None:
        raise ValidationError("--trainer runpod needs its training config", field="file",
                              hint="pass -f job.toml (see examples/runpod_sft.toml; `hubferry config check` "
                              "validates one)")
    job = runpod_jobs.submit(ctx, runpod_jobs.RunpodRequest(
        config=training_config.load(config_file), base_dir=config_file.parent, name=options["name"],
        repo_id=options["repo"], private=private,
        endpoint=options["endpoint"], token=options["token"], runpod_key=options["runpod_key"], gpu=options["gpu"],
        cloud_type=options["cloud_type"], image=options["image"], token_in_env=options["token_in_env"],
        preflight=not options["skip_preflight"],
    ))
    price = job.params.get("price_per_hr")
    say("pod: ", f"{job.params.get('gpu_name') or job.params['gpu']} in RunPod's "
        f"{str(job.params['cloud_type']).lower()} cloud, " + (f"${price:.2f} per hour" if price else "price unknown"))
    return job


def _required(options: dict[str, Any], key: str) -> str:
    value = options.get(key)
    if not value:
        raise ValidationError(f"--{key.replace('_', '-')} is required for this trainer", field=key)
    return str(value)


def _exit_code(ctx: Context, job: Job) -> int:
    """0 when published (or trained with publishing skipped), the trainer's own code when it failed, else 1."""
    from hubferry.cli.render import JobView, exit_code

    return exit_code(JobView.of(job, ctx.jobs.events(job.id)))
