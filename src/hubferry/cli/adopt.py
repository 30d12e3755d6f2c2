"""``hubferry adopt replicate TRAINING_ID``: track and publish a training started elsewhere."""

from __future__ import annotations

from typing import Annotated

import typer

from hubferry.cli.console import json_errors, print_json, say

adopt_app = typer.Typer(no_args_is_help=True, help="Track and publish trainings started elsewhere.")


@adopt_app.command("replicate")
def adopt_replicate(
    training_id: Annotated[str, typer.Argument(help="The Replicate training id.")],
    repo: Annotated[str | None, typer.Option(help="Target repo OWNER/NAME (default: {hf_username}/{name}).")] = None,
    name: Annotated[str | None, typer.Option(help="Job name (default: the destination model's name).")] = None,
    replicate_token: Annotated[str | None, typer.Option(help="Replicate API token (default: REPLICATE_API_TOKEN, "
                                                        "then your stored replicate_token).")] = None,
    token: Annotated[str | None, typer.Option(help="Hub token (default: HF_TOKEN, then your stored token).")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Hub URL (default: HF_ENDPOINT or huggingface.co).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the job as one JSON line.")] = False,
) -> None:
    """Adopt a Replicate training (from the website, another script): hubferry follows it and publishes
    its LoRA once it succeeds (at once if it already has)."""
    from hubferry.cli.backend import local_only
    from hubferry.services import remote, replicate_jobs
    from hubferry.services.context import open_context
    from hubferry.services.views import job_dict

    json_errors(json_output)
    local_only("adopt replicate")
    ctx = open_context()
    job = replicate_jobs.adopt(ctx, training_id, repo_id=repo, name=name, replicate_token=replicate_token,
                               token=token, endpoint=endpoint)
    job = remote.refresh(ctx, job.id, force=True)
    say(f"job {job.id}: ", f"Replicate training {training_id} -> {job.repo_id} ({job.state.value}); "
        f"follow it with `hubferry watch {job.id}`")
    if json_output:
        print_json(job_dict(job))
