"""``/api/v1/jobs``: create, list, read, cancel and retry your jobs; their timeline, log, progress history and
notification deliveries; the repo name a job would get; and where your jobs' notifications go.

Jobs are created through the same services as ``hubferry train`` (:func:`hubferry.services.launch.submit`,
:func:`hubferry.services.replicate_jobs.submit`) with the caller as owner, and dispatched by the one policy
(:func:`hubferry.worker.dispatch.dispatcher_for`). A user sees and acts on their own jobs only: another
user's job id answers 404, exactly like one that does not exist (administrators see every job).

Through the API the server's own credentials are never a user's: the server's ``HF_TOKEN`` and Replicate
token are not used for anyone's job, and a job that would fall back on the server's saved huggingface.co
login is refused (422) until the user stores a token or passes one. A ``local`` job runs a command as the
server's account, so only administrators may create one, or name a dataset by a server path.
"""


import base64
import binascii
import contextlib
import dataclasses
import json
import os
import threading
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool

from hubferry import training_config
from hubferry.api.errors import ApiError, from_error, not_found
from hubferry.api.principal import Principal, current_principal
from hubferry.api.schemas import (
    DatasetRef,
    Deliveries,
    ErrorBody,
    JobCreate,
    JobOut,
    JobPage,
    LocalJobCreate,
    LogChunk,
    NamingPreview,
    ProgressHistory,
    ReplicateJobCreate,
    RetryRequest,
    RunpodJobCreate,
    Timeline,
    Url,
    WebhookOut,
    WebhookSettings,
)
from hubferry.api.v1_datasets import upload_source
from hubferry.api.v1_secrets import check_hub_endpoint
from hubferry.domain.environment import is_secret_name
from hubferry.domain.jobs import Job, JobState
from hubferry.errors import HubferryError, ValidationError
from hubferry.logs import get_logger, printable
from hubferry.services import control, credentials, launch, notifications, remote, replicate_jobs, runpod_jobs
from hubferry.services.context import Context, Dispatcher
from hubferry.services.views import event_dict, job_dict
from hubferry.store import job_queries, progress_history
from hubferry.store.database import utcnow
from hubferry.store.outbox import Outbox
from hubferry.worker.dispatch import dispatcher_for

log = get_logger(__name__)

#: Timeline entries returned by one read.
MAX_TIMELINE = 1000
#: Bytes of a log returned by one ranged read, and read from its end to find its last lines.
MAX_LOG_BYTES = 1024 * 1024
#: Progress points returned by one read.
MAX_POINTS = 5000

Caller = Annotated[Principal, Depends(current_principal)]
JobId = Annotated[str, PathParam(max_length=64)]


def visible_job(ctx: Context) -> Callable[..., Job]:
    """A dependency: the job named in the path if the caller may see it, else 404."""

    def dependency(job_id: JobId, caller: Caller) -> Job:
        job = ctx.jobs.get(job_id)
        if job is None or not caller.may_see(job.owner):
            raise not_found(f"job {job_id}")
        return job

    return dependency


def _trusted(caller: Principal) -> bool:
    """May run commands as the server's account and read the server's files."""
    return caller.is_admin or caller.via == "local"


class InBackground:
    """Runs each step of the in-process dispatcher on a thread of its own: with no worker running, a request
    still answers at once while the job runs here."""

    def __init__(self, inline: Dispatcher) -> None:
        self._inline = inline

    def train(self, job_id: str) -> None:
        self._spawn("train", job_id, lambda: self._inline.train(job_id))

    def publish(self, job_id: str, delay_s: float = 0.0) -> None:
        self._spawn("publish", job_id, lambda: self._inline.publish(job_id, delay_s))

    def observe(self, job_id: str) -> None:
        self._spawn("observe", job_id, lambda: self._inline.observe(job_id))

    @staticmethod
    def _spawn(step: str, job_id: str, run: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                run()
            except Exception:  # noqa: BLE001 - the step records its own failure on the job; log the rest
                log.exception("background step failed", step=step, job_id=job_id)

        threading.Thread(target=guarded, name=f"hubferry-api-{step}-{job_id}", daemon=True).start()


def _for_caller(ctx: Context, caller: Principal) -> Context:
    """The context a caller's request acts in: the one dispatch policy (never blocking the request), and
    none of the server process's own tokens unless the caller is the server's local user."""
    dispatcher, queued = dispatcher_for(ctx)
    settings = ctx.settings
    if caller.via != "local":
        settings = settings.model_copy(update={"token": None, "replicate_token": None, "runpod_api_key": None})
    return dataclasses.replace(ctx, settings=settings, dispatcher=dispatcher if queued else InBackground(dispatcher))


def _refuse_server_login(ctx: Context, caller: Principal, endpoint: str | None, token: str | None) -> None:
    """422 when the Hub token would be the server's saved huggingface.co login rather than the caller's."""
    if caller.via == "local":
        return
    target, source = credentials.resolve_for_command(ctx.settings, ctx.credentials, caller.name, endpoint=endpoint,
                                                     token=token)
    if source == credentials.HF_LOGIN:
        raise ApiError(422, f"you have no Hub token for {target.endpoint}", field="token",
                       hint="store yours with PUT /api/v1/secrets/hub, or pass token in the request")


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _dataset_path(ctx: Context, caller: Principal, ref: DatasetRef | None) -> str | None:
    if ref is None:
        return None
    if ref.upload_id is not None:
        return str(upload_source(ctx.settings, caller, ref.upload_id))
    if not _trusted(caller):
        raise ApiError(403, "only administrators may name a dataset by a path on the server", field="dataset.path",
                       hint="upload it (POST /api/v1/datasets) and pass its id as dataset.upload_id")
    return ref.path


def _submit(ctx: Context, caller: Principal, body: LocalJobCreate | ReplicateJobCreate | RunpodJobCreate) -> Job:
    dataset = _dataset_path(ctx, caller, body.dataset)
    if isinstance(body, RunpodJobCreate):
        return _submit_runpod(ctx, caller, body, dataset)
    if isinstance(body, ReplicateJobCreate):
        assert dataset is not None
        return replicate_jobs.submit(ctx, replicate_jobs.ReplicateRequest(
            images=dataset, trigger_word=body.trigger_word, steps=body.steps, learning_rate=body.learning_rate,
            lora_rank=body.lora_rank, params=dict(body.params), name=body.name, repo_id=body.repo_id,
            private=body.private, endpoint=body.endpoint, token=_secret(body.token),
            replicate_token=_secret(body.replicate_token), trainer=body.replicate_trainer,
            destination=body.destination, max_side=body.max_side, preflight=body.preflight,
        ), owner=caller.name)
    missing = [name for name in body.pass_env if name not in body.env]
    if missing:
        raise ApiError(422, f"pass_env names variables not in env: {', '.join(missing)}", field="pass_env")
    # The command's world: the server's non-secret variables (PATH, HOME, ...), then the request's own.
    env = {k: v for k, v in os.environ.items() if not is_secret_name(k)} | dict(body.env)
    if dataset is not None:
        env["DATASET_PATH"] = dataset
    return launch.submit(ctx, "local", launch.LocalRequest(
        command=list(body.command), output_dir=Path(body.output_dir) if body.output_dir else None, name=body.name,
        repo_id=body.repo_id, private=body.private, endpoint=body.endpoint, token=_secret(body.token),
        total_steps=body.total_steps, cwd=Path(body.cwd) if body.cwd else ctx.settings.home, env=env,
        pass_env=tuple(body.pass_env), preflight=body.preflight,
    ), owner=caller.name)


def _submit_runpod(ctx: Context, caller: Principal, body: RunpodJobCreate, dataset: str | None) -> Job:
    config = training_config.parse(body.config, source="config")
    if dataset is not None:
        config = config.model_copy(update={"dataset": dataset})
    elif config.dataset_is_local:
        raise ApiError(422, "config.dataset names a local file the server cannot read", field="dataset",
                       hint="upload it (POST /api/v1/datasets) and pass its id as dataset.upload_id, or name a "
                       "Hub dataset")
    return runpod_jobs.submit(ctx, runpod_jobs.RunpodRequest(
        config=config, base_dir=ctx.settings.home, name=body.name, repo_id=body.repo_id, private=body.private,
        endpoint=body.endpoint, token=_secret(body.token), runpod_key=_secret(body.runpod_key), gpu=body.gpu,
        cloud_type=body.cloud_type, image=body.image, token_in_env=body.token_in_env, preflight=body.preflight,
    ), owner=caller.name)


def create(ctx: Context, caller: Principal, body: LocalJobCreate | ReplicateJobCreate | RunpodJobCreate) -> Job:
    """Create and start a job as ``caller``: the one path of ``POST /api/v1/jobs`` and the dashboard's form.

    Raises:
        ApiError: the request is refused (403, 422 naming the field, or the service's own error).
    """
    if isinstance(body, LocalJobCreate) and not _trusted(caller):
        raise ApiError(403, "only administrators may run a command on the server", field="trainer",
                       hint="use the replicate trainer, or ask an administrator")
    job_ctx = _for_caller(ctx, caller)
    if body.notify_url:
        _checked_url(ctx, body.notify_url, "notify_url")
    check_hub_endpoint(ctx.settings, body.endpoint)  # the server would call it (pre-flight, publish)
    _refuse_server_login(job_ctx, caller, body.endpoint, _secret(body.token))
    try:
        job = _submit(job_ctx, caller, body)
    except HubferryError as exc:
        raise from_error(exc) from None
    if body.notify_url:
        notifications.signing_secret(ctx.credentials.vault, caller.name)  # made here, so the sender only reads it
        Outbox(ctx.jobs.engine).set_target(caller.name, body.notify_url, now=utcnow(), job_id=job.id)
    job_ctx.dispatch().train(job.id)
    return ctx.jobs.require(job.id)


def _checked_url(ctx: Context, url: str, field: str) -> None:
    try:
        notifications.check_url(ctx.settings, url, field=field)
    except HubferryError as exc:
        raise from_error(exc) from None


def _cursor(value: str | None) -> job_queries.PageKey | None:
    if not value:
        return None
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(value.encode() + b"=" * (-len(value) % 4)))
        return job_queries.PageKey(datetime.fromisoformat(created), str(job_id))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, "cursor is not one this API returned", field="cursor",
                       hint="pass next_cursor from the previous page unchanged") from None


def _next_cursor(created: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([created.isoformat(), job_id]).encode()).decode().rstrip("=")


def read_log(path: Path, *, tail: int | None, offset: int, length: int) -> dict[str, Any]:
    """A log's last ``tail`` lines (else ``length`` bytes from ``offset``), escapes removed and secrets redacted."""
    try:
        size = path.stat().st_size
    except OSError:
        return {"text": "", "offset": 0, "next_offset": 0, "size": 0}
    with path.open("rb") as fh:
        if tail is not None:
            start = max(0, size - MAX_LOG_BYTES)
            fh.seek(start)
            data = fh.read(size - start)
            if start > 0:  # drop the partial first line
                cut = data.find(b"\n") + 1
                data, start = data[cut:], start + cut
            lines = data.split(b"\n")
            keep = lines[-(tail + 1):] if lines and lines[-1] == b"" else lines[-tail:]
            kept = b"\n".join(keep)
            start += len(data) - len(kept)
            data = kept
        else:
            start = min(offset, size)
            fh.seek(start)
            at_end = start + length >= size
            data = _whole_characters(fh.read(min(length, MAX_LOG_BYTES)), at_end=at_end)
            if len(data) > 1 and data.endswith(b"\r") and not at_end:
                data = data[:-1]  # it may begin a "\r\n": the next read starts with it
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    if tail is not None:  # each tqdm redraw overwrote the line: show its last state
        text = "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))
    else:  # a follower sees each redraw as a line (as tracking.logfile.read_lines gives them), not run together
        text = text.replace("\r", "\n")
    return {"text": printable(text), "offset": start, "next_offset": start + len(data), "size": size}


def _whole_characters(data: bytes, *, at_end: bool) -> bytes:
    """``data`` without a UTF-8 character cut at its end (the next read starts with it)."""
    if at_end:
        return data
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # the lead byte of the last character
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return data if need <= back else data[:-back]
    return data


def jobs_router(ctx: Context, *, sender: notifications.Sender | None = None) -> APIRouter:
    """The jobs routes; the notification ``sender`` (default: one on ``ctx``) runs while the app does."""
    webhooks = sender or notifications.Sender(ctx.jobs, ctx.credentials.vault, ctx.settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        webhooks.start()
        try:
            yield
        finally:
            await run_in_threadpool(webhooks.stop)

    router = APIRouter(prefix="/api/v1", tags=["jobs"], lifespan=lifespan,
                       responses={401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}})
    visible = Annotated[Job, Depends(visible_job(ctx))]
    outbox = Outbox(ctx.jobs.engine)

    @router.post("/jobs", status_code=201, response_model=JobOut, summary="Create a job",
                 responses={403: {"model": ErrorBody}, 503: {"model": ErrorBody}})
    def create_job(body: Annotated[JobCreate, Body()], caller: Caller) -> dict[str, Any]:
        """Check the request and the Hub target (before any compute is spent), record the job and start it."""
        return job_dict(create(ctx, caller, body))

    @router.get("/jobs", response_model=JobPage, response_model_exclude_unset=True,  # a listed job is job_dict(job)
                summary="Your jobs, newest first")
    def list_jobs(
        caller: Caller,
        state: Annotated[list[JobState] | None, Query(description="Only jobs in these states.")] = None,
        trainer: Annotated[list[str] | None, Query(max_length=20, description="Only jobs of these trainers.")] = None,
        owner: Annotated[str | None, Query(max_length=200, description="Administrators: one user's jobs.")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=400)] = None,
    ) -> dict[str, Any]:
        if not caller.is_admin:
            if owner not in (None, caller.name):
                return {"jobs": [], "next_cursor": None}
            owner = caller.name
        rows = job_queries.page_ids(ctx.jobs.engine, owner=owner, states=[s.value for s in state or ()],
                                    trainers=[t[:64] for t in trainer or ()], after=_cursor(cursor), limit=limit)
        found = [job for job in (ctx.jobs.get(job_id) for job_id, _ in rows) if job is not None]
        more = len(rows) == limit
        return {"jobs": [job_dict(j) for j in found],
                "next_cursor": _next_cursor(rows[-1][1], rows[-1][0]) if more and rows else None}

    @router.get("/jobs/{job_id}", response_model=JobOut, summary="A job, with its timeline")
    def get_job(job: visible) -> dict[str, Any]:
        """A remote training is read from its provider first when nobody did within the poll interval."""
        try:
            job = remote.refresh(ctx, job.id)
        except HubferryError as exc:  # the provider is down: the stored state is still the answer
            log.warning("refreshing a remote job failed", job_id=job.id, error=exc.message)
        return job_dict(job, ctx.jobs.events(job.id, limit=MAX_TIMELINE))

    @router.post("/jobs/{job_id}/cancel", response_model=JobOut, summary="Cancel a job",
                 responses={409: {"model": ErrorBody}})
    def cancel_job(job: visible, caller: Caller) -> dict[str, Any]:
        return job_dict(_control(lambda: control.cancel(_for_caller(ctx, caller), job.id)))

    @router.post("/jobs/{job_id}/retry", response_model=JobOut, summary="Retry a failed job",
                 responses={409: {"model": ErrorBody}})
    def retry_job(job: visible, caller: Caller, body: RetryRequest | None = None) -> dict[str, Any]:
        """A failed or skipped publish is published again (to ``repo_id``/``endpoint``, with ``token`` when
        given) without retraining; a failed training is trained again."""
        body = body or RetryRequest()
        job_ctx = _for_caller(ctx, caller)
        token = _secret(body.token)
        refused = job.error is not None and job.error.category == "authentication"
        check_hub_endpoint(ctx.settings, body.endpoint)
        if token is None and (body.endpoint or refused):  # then the job's own token is not kept (control.retry)
            _refuse_server_login(job_ctx, caller, body.endpoint or str(job.params.get("hub_endpoint") or ""), None)
        return job_dict(_control(lambda: control.retry(job_ctx, job.id, token=token, repo_id=body.repo_id,
                                                       endpoint=body.endpoint)))

    @router.get("/jobs/{job_id}/timeline", response_model=Timeline, summary="A job's timeline")
    def timeline(job: visible, after: Annotated[int, Query(ge=0, le=2**31)] = 0,
                 limit: Annotated[int, Query(ge=1, le=MAX_TIMELINE)] = MAX_TIMELINE) -> dict[str, Any]:
        events = ctx.jobs.events(job.id, after_seq=after, limit=limit)
        return {"events": [event_dict(e) for e in events], "next_after": events[-1].seq if events else after}

    @router.get("/jobs/{job_id}/log", response_model=LogChunk, summary="A job's log")
    def job_log(
        job: visible,
        tail: Annotated[int | None, Query(ge=1, le=10_000, description="The last N lines (then offset and "
                                                                         "length are ignored).")] = None,
        offset: Annotated[int, Query(ge=0, le=2**53, description="First byte to read.")] = 0,
        length: Annotated[int, Query(ge=1, le=MAX_LOG_BYTES, description="Bytes to read.")] = 64 * 1024,
    ) -> dict[str, Any]:
        """Log text with terminal escapes removed and secrets redacted; follow it with ``offset=next_offset``."""
        if not job.log_path:
            return {"text": "", "offset": 0, "next_offset": 0, "size": 0}
        return read_log(Path(job.log_path), tail=tail, offset=offset, length=length)

    @router.get("/jobs/{job_id}/progress", response_model=ProgressHistory, summary="A job's progress over time")
    def progress(job: visible, after: Annotated[int, Query(ge=0, le=2**62)] = 0,
                 limit: Annotated[int, Query(ge=1, le=MAX_POINTS)] = MAX_POINTS) -> dict[str, Any]:
        """Stored progress points (at most one a second; a long run's older points thinned out): a loss curve."""
        points = progress_history.points(ctx.jobs.engine, job.id, after=after, limit=limit)
        return {"points": [{**dataclasses.asdict(p), "at": p.at.isoformat()} for p in points],
                "next_after": points[-1].id if points else after}

    @router.get("/jobs/{job_id}/deliveries", response_model=Deliveries, summary="Notifications sent about a job")
    def deliveries(job: visible) -> dict[str, Any]:
        return {"deliveries": [notifications.delivery_dict(d) for d in outbox.deliveries(job.id)]}

    @router.get("/naming/preview", response_model=NamingPreview, tags=["naming"],
                summary="The repo a job would publish to")
    def naming_preview(
        caller: Caller,
        name: Annotated[str, Query(min_length=1, max_length=200)],
        endpoint: Annotated[Url | None, Query()] = None,
    ) -> dict[str, Any]:
        """``{hub username}/{slug(name)}``, suffixed when taken, with your stored token for the endpoint (as a
        job created now would get it)."""
        job_ctx = _for_caller(ctx, caller)
        check_hub_endpoint(ctx.settings, endpoint)
        try:
            target, source = credentials.resolve_for_command(job_ctx.settings, job_ctx.credentials, caller.name,
                                                             endpoint=endpoint, token=None)
            if source == credentials.HF_LOGIN and caller.via != "local":
                target, source = dataclasses.replace(target, token=None), credentials.NONE
            repo_id = launch.target_repo(job_ctx, None, caller.name, printable(name), target, source, preflight=True)
        except HubferryError as exc:
            raise from_error(exc) from None
        return {"repo_id": repo_id, "endpoint": target.endpoint, "token_source": source}

    @router.get("/notifications/webhook", response_model=WebhookOut, tags=["notifications"],
                summary="Where your jobs' notifications go (never the signing secret)")
    def get_webhook(caller: Caller) -> dict[str, Any]:
        target = outbox.user_target(caller.name)
        return {"url": target.url if target else None, "secret": None,
                "secret_set": notifications.has_signing_secret(ctx.credentials.vault, caller.name)}

    @router.put("/notifications/webhook", response_model=WebhookOut, tags=["notifications"],
                summary="Send every state change of your jobs to a URL")
    def put_webhook(body: WebhookSettings, caller: Caller) -> dict[str, Any]:
        """Deliveries are signed Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
        ``webhook-signature``). The answer that makes your signing secret carries it, once; later ones do not
        (``POST /notifications/webhook/secret`` makes a new one)."""
        _checked_url(ctx, body.url, "url")
        created = not notifications.has_signing_secret(ctx.credentials.vault, caller.name)
        secret = notifications.signing_secret(ctx.credentials.vault, caller.name)
        target = outbox.set_target(caller.name, body.url, now=utcnow())
        return {"url": target.url, "secret": secret if created else None, "secret_set": True}

    @router.post("/notifications/webhook/secret", response_model=WebhookOut, tags=["notifications"],
                 summary="Make a new signing secret (shown in this answer only)")
    def new_webhook_secret(caller: Caller) -> dict[str, Any]:
        """Every delivery from now on (retries included, and those to jobs' own URLs) is signed with it."""
        target = outbox.user_target(caller.name)
        return {"url": target.url if target else None, "secret_set": True,
                "secret": notifications.new_signing_secret(ctx.credentials.vault, caller.name)}

    @router.delete("/notifications/webhook", status_code=204, tags=["notifications"],
                   summary="Stop sending your jobs' notifications")
    def delete_webhook(caller: Caller) -> Response:
        if not outbox.delete_user_target(caller.name):
            raise not_found("webhook")
        return Response(status_code=204)

    return router


def _control(action: Callable[[], Job]) -> Job:
    """Run a cancel or retry: a job in the wrong state for it is a 409, other failures as they are."""
    try:
        return action()
    except ValidationError as exc:
        if exc.context.get("field") in (None, "job_id"):
            raise ApiError(409, printable(exc.message), category="validation", hint=exc.hint) from None
        raise from_error(exc) from None
    except HubferryError as exc:
        raise from_error(exc) from None
