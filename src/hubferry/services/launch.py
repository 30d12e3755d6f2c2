"""Create jobs: validate the request, name the target repo, record the job, dispatch it."""

from __future__ import annotations

import getpass
import shlex
from pathlib import Path

from huggingface_hub import HfApi

from hubferry.domain.jobs import EventKind, Job, new_job
from hubferry.domain.naming import auto_repo_id, slugify, validate_repo_id
from hubferry.errors import HubferryError, ValidationError
from hubferry.hub import preflight, retry
from hubferry.hub.client import make_api
from hubferry.logs import get_logger, redact
from hubferry.secrets.vault import HF_TOKEN, HF_USERNAME
from hubferry.services import credentials
from hubferry.services.context import Context

log = get_logger(__name__)


def default_owner() -> str:
    return getpass.getuser()


def _hub_username(ctx: Context, api: HfApi, owner: str) -> str:
    me = preflight.whoami(api, retry.RetryPolicy.from_settings(ctx.settings))
    name = str(me["name"])
    ctx.vault.set(owner, HF_USERNAME, name)
    return name


def _repo_taken(ctx: Context, api: HfApi | None):
    local = {j.repo_id.lower() for j in ctx.jobs.list_jobs(limit=10_000)}

    def taken(repo_id: str) -> bool:
        if repo_id.lower() in local:
            return True
        return bool(api is not None and api.repo_exists(repo_id))

    return taken


def submit_local(
    ctx: Context,
    *,
    command: list[str],
    output_dir: str | Path,
    name: str | None = None,
    repo_id: str | None = None,
    private: bool = True,
    endpoint: str | None = None,
    token: str | None = None,
    total_steps: int | None = None,
    owner: str | None = None,
    cwd: str | Path | None = None,
) -> Job:
    """Record a local training job (state ``queued``); the caller dispatches it.

    The target repo is ``repo_id`` or ``{hf_username}/{slug(name)}`` (suffixed if taken). With no
    Hub token anywhere, the job will train and stop at ``trained`` with its weights kept.
    """
    if not command:
        raise ValidationError("no training command", hint="give the command after --, e.g. -- python train.py")
    owner = owner or default_owner()
    name = name or Path(command[-1]).stem or "model"
    output = Path(output_dir).expanduser().resolve()
    target = credentials.resolve(ctx.settings, ctx.vault, owner, endpoint=endpoint, token=token)
    api = make_api(ctx.settings, endpoint=target.endpoint, token=target.token) if target.token else None
    auto_named = not repo_id
    if repo_id:
        validate_repo_id(repo_id)
    elif api is not None:
        try:
            username = _hub_username(ctx, api, owner)
        except HubferryError as exc:
            raise ValidationError(
                f"cannot name the target repo: {exc.message}", category=exc.category, hint=exc.hint
            ) from None
        repo_id = auto_repo_id(username, name, _repo_taken(ctx, api))
    else:
        username = credentials.stored_username(ctx.vault, owner) or slugify(owner)
        repo_id = auto_repo_id(username, name, _repo_taken(ctx, None))
    params = {
        "command": command,
        "cwd": str(Path(cwd or Path.cwd()).resolve()),
        "output_dir": str(output),
        "hub_endpoint": target.endpoint,
        "total_steps": total_steps,
    }
    job = new_job(
        owner=owner, name=name, trainer="local", params=params, dataset=str(output), repo_id=repo_id,
        now=ctx.jobs.clock(), private=private, repo_auto_named=auto_named,
    )
    job = ctx.jobs.create(job)
    ctx.jobs.set_runtime(job.id, output_dir=str(output))
    ctx.jobs.append_event(job.id, EventKind.NOTICE, message=f"submitted: {redact(shlex.join(command))}",
                          context={"repo_id": repo_id, "endpoint": target.endpoint, "output_dir": str(output)})
    if target.token and ctx.vault.get(owner, HF_TOKEN) != target.token:
        ctx.vault.set(owner, HF_TOKEN, target.token)
        ctx.jobs.append_event(job.id, EventKind.NOTICE, message="Hub token saved in the encrypted vault for workers")
    if not target.token:
        ctx.jobs.append_event(
            job.id, EventKind.NOTICE,
            message="no Hub token configured: the job will train and keep its weights; publish later with "
            "`hubferry retry JOB` once a token is set",
        )
    log.info("job submitted", job_id=job.id, repo_id=repo_id)
    return ctx.jobs.require(job.id)
