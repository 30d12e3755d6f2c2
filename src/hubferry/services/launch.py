"""Create jobs: validate the request, check the Hub target before any compute, record the job's world."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubferry.domain.environment import split_environment
from hubferry.domain.jobs import EventKind, Job, new_job, new_job_id
from hubferry.domain.naming import auto_repo_id, slugify, validate_repo_id
from hubferry.errors import ValidationError
from hubferry.logs import get_logger, redact
from hubferry.secrets.hub_credentials import job_owner
from hubferry.services import credentials
from hubferry.services.context import Context
from hubferry.services.identity import default_owner
from hubferry.services.ports import HubTarget
from hubferry.services.training import PASSED_ENV, SECRET_COMMAND

log = get_logger(__name__)


@dataclass(frozen=True)
class LocalRequest:
    """A training command to run on this machine, and where its result goes."""

    command: list[str]
    output_dir: Path | None = None
    name: str | None = None
    repo_id: str | None = None
    private: bool = True
    endpoint: str | None = None
    token: str | None = None
    total_steps: int | None = None
    #: The submitting shell's working directory and environment: the job runs with them, wherever it runs.
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    #: Secret-looking variables of ``env`` the user gives the training command on purpose.
    pass_env: tuple[str, ...] = ()
    #: Check the token, rights and repo before the training starts.
    preflight: bool = True

    def __repr__(self) -> str:  # never show the token or the environment
        return f"LocalRequest(command={self.command!r}, repo_id={self.repo_id!r}, endpoint={self.endpoint!r})"


def _repo_taken(ctx: Context, target: HubTarget | None):
    local = {j.repo_id.lower() for j in ctx.jobs.list_jobs(limit=10_000)}

    def taken(repo_id: str) -> bool:
        return repo_id.lower() in local or (target is not None and ctx.publisher.repo_exists(target, repo_id))

    return taken


def target_repo(
    ctx: Context, repo_id: str | None, owner: str, name: str, target: HubTarget, source: str, *, preflight: bool,
) -> str:
    """The repo to publish to (``repo_id`` or auto-named), checked against the Hub before any compute is
    spent (pre-flight) unless ``preflight`` is off or there is no token."""
    if repo_id:
        validate_repo_id(repo_id)
    if target.token is None or not preflight:
        if repo_id:
            return repo_id
        stored = ctx.credentials.get(owner, target.endpoint)
        username = stored.username if stored and stored.username else slugify(owner)
        return auto_repo_id(username, name, _repo_taken(ctx, None))
    if repo_id is None:
        identity = ctx.publisher.identify(target)
        repo_id = auto_repo_id(identity.name, name, _repo_taken(ctx, target))
    identity = ctx.publisher.check_target(target, repo_id)
    if source == credentials.STORED:  # a job's own token says nothing about whose the stored one is
        ctx.credentials.set_username(owner, target.endpoint, identity.name)
    return repo_id


def submit(ctx: Context, trainer: str, request: LocalRequest, *, owner: str | None = None) -> Job:
    """Record a training job (state ``queued``) after its pre-flight; the caller dispatches it.

    The target repo is ``request.repo_id`` or ``{hub username}/{slug(name)}`` (suffixed if taken).
    With no Hub token anywhere, the job trains and stops at ``trained`` with its weights kept.

    Raises:
        ValidationError: bad request, or the pre-flight found the token or the repo unusable.
        PermanentError, TransientError: the Hub refused or could not be reached during the pre-flight.
    """
    if not request.command:
        raise ValidationError("no training command", hint="give the command after --, e.g. -- python train.py")
    ctx.trainer_for(trainer)  # an unknown trainer fails here, before anything is recorded
    owner = owner or default_owner()
    missing = [n for n in request.pass_env if n not in request.env]
    if missing:
        raise ValidationError(f"--pass-env names variables that are not set: {', '.join(missing)}",
                              field="pass_env", hint="export them first, or drop them from --pass-env")
    env, passed = split_environment(request.env, request.pass_env)
    name = request.name or Path(request.command[-1]).stem or "model"
    output = Path(request.output_dir or ctx.settings.home / "outputs" / slugify(name)).expanduser().resolve()
    target, source = credentials.resolve_for_command(
        ctx.settings, ctx.credentials, owner, endpoint=request.endpoint, token=request.token,
    )
    repo_id = target_repo(ctx, request.repo_id, owner, name, target, source, preflight=request.preflight)
    shown = [redact(arg) for arg in request.command]
    job_id = new_job_id()
    if passed:
        ctx.credentials.vault.set(job_owner(job_id), PASSED_ENV, json.dumps(passed))
    if shown != request.command:  # the command holds a token: kept encrypted, recorded redacted
        ctx.credentials.vault.set(job_owner(job_id), SECRET_COMMAND, json.dumps(request.command))
    params = {"command": shown, "cwd": str(Path(request.cwd or Path.cwd()).resolve()), "env": env,
              "passed_env": sorted(passed), "total_steps": request.total_steps}
    return record_job(
        ctx, job_id=job_id, trainer=trainer, owner=owner, name=name, params=params, repo_id=repo_id,
        repo_auto_named=not request.repo_id, private=request.private, target=target, source=source, output=output,
        summary=f"submitted: {shlex.join(shown)}", preflight=request.preflight,
    )


def record_job(
    ctx: Context, *, job_id: str, trainer: str, owner: str, name: str, params: dict[str, Any], repo_id: str,
    repo_auto_named: bool, private: bool, target: HubTarget, source: str, output: Path, summary: str,
    preflight: bool,
) -> Job:
    """Store a checked job (state ``queued``) with its Hub target and credential, and say what was submitted."""
    params = {**params, "output_dir": str(output), "hub_endpoint": target.endpoint,
              "credential": credentials.bind_to_job(ctx.credentials, job_id, target, source)}
    job = ctx.jobs.create(new_job(
        owner=owner, name=name, trainer=trainer, params=params, dataset=str(output), repo_id=repo_id,
        now=ctx.jobs.clock(), private=private, repo_auto_named=repo_auto_named, job_id=job_id,
    ))
    ctx.jobs.set_runtime(job.id, output_dir=str(output))
    ctx.jobs.append_event(job.id, EventKind.NOTICE, message=summary,
                          context={"repo_id": repo_id, "endpoint": target.endpoint, "output_dir": str(output),
                                   "token": source, "preflight": preflight and target.token is not None})
    if target.token is None:
        ctx.jobs.append_event(
            job.id, EventKind.NOTICE,
            message=f"warning: no Hub token for {target.endpoint}: the job will train and keep its weights, and "
            f"publishing will be skipped until a token is set (`hubferry secrets set hf_token`, or "
            f"`hubferry retry {job.id} --token TOKEN`)",
        )
    log.info("job submitted", job_id=job.id, repo_id=repo_id)
    return ctx.jobs.require(job.id)
