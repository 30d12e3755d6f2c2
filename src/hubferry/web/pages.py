"""The dashboard's routes: sign in, jobs (list, page, new), settings, and the fragments htmx refreshes.

Pages read through the same seams as ``/api/v1``: the caller is :func:`app.state.authenticate`'s
principal, a job is shown only to whom :meth:`Principal.may_see` allows (else the same 404 as a job
that does not exist), jobs are created by :func:`hubferry.api.v1_jobs.create`. Actions that change
state from a page (cancel, retry, secrets, tokens) are sent by ``static/app.js`` to the JSON API with
the session's CSRF token; the forms posted here (sign in, sign out, new job) carry it as a field,
which :class:`hubferry.api.auth.RequestGuard` checks before any route runs.

Live updates: a job page whose job can still change listens to ``/api/v1/jobs/{id}/events`` (htmx's
SSE extension) and each panel re-reads its fragment on the events that concern it; the jobs list
re-reads its table every few seconds.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from hubferry.accounts import Accounts
from hubferry.api import v1_jobs
from hubferry.api.auth import Authenticator, vault_session_key
from hubferry.api.errors import ApiError
from hubferry.api.principal import Principal
from hubferry.api.v1_secrets import stored_view
from hubferry.dataset.fetch import display_url
from hubferry.domain.jobs import Job, JobState
from hubferry.errors import HubferryError
from hubferry.logs import get_logger, printable
from hubferry.services import notifications
from hubferry.services.context import Context
from hubferry.store import job_queries, progress_history
from hubferry.store.database import utcnow
from hubferry.store.outbox import Outbox
from hubferry.web import views
from hubferry.web.forms import DraftSigner, FormErrors, form_values, job_request
from hubferry.web.rendering import Renderer, static_file, with_security_headers

log = get_logger(__name__)

#: Jobs shown on the jobs page.
LIST_LIMIT = 100
#: Log lines in a job page's tail.
LOG_TAIL_LINES = 200
#: Thumbnails of a job's dataset fit in this square.
THUMBNAIL_SIDE = 192
#: Images and rejections shown in a job's dataset report.
MAX_REPORT_ITEMS = 60
#: Progress points drawn in a loss curve.
MAX_POINTS = 5000
PARTS = ("progress", "status", "timeline", "log")
#: Webhook deliveries listed on the settings page.
RECENT_DELIVERIES = 20


def _safe_next(target: str | None) -> str:
    """A local path to go to after signing in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/jobs"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/jobs"


def web_router(ctx: Context) -> APIRouter:
    """The dashboard over ``ctx`` (the app's authenticator is read per request from ``app.state``)."""
    router = APIRouter(include_in_schema=False)
    pages = Renderer()
    drafts = DraftSigner(vault_session_key(ctx.credentials.vault))

    def authenticator(request: Request) -> Authenticator:
        return request.app.state.authenticate

    def caller(request: Request) -> Principal | None:
        try:
            return authenticator(request)(request)
        except ApiError:
            return None

    def csrf_for(request: Request) -> str:
        auth = authenticator(request)
        session_id = auth.session_id(request)
        return auth.signer.csrf_token(session_id) if session_id else ""

    def render(request: Request, template: str, user: Principal | None, status: int = 200,
               **context: Any) -> HTMLResponse:
        return pages.render(request, template, {"user": user, "csrf": csrf_for(request), "nav": "", **context},
                            status=status)

    def sign_in_redirect(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)

    def visible(user: Principal, job_id: str) -> Job | None:
        job = ctx.jobs.get(job_id[:64])
        return job if job is not None and user.may_see(job.owner) else None

    def not_found(request: Request, user: Principal | None) -> HTMLResponse:
        return render(request, "not_found.html", user, status=404)

    # -- static files, sign in and out --------------------------------------------------------

    @router.get("/static/web/{path:path}")
    def static(path: str) -> Response:
        return static_file(path)

    @router.get("/")
    def home(request: Request) -> Response:
        return RedirectResponse("/jobs" if caller(request) else "/jobs/new", status_code=303)

    @router.get("/signin")
    def sign_in_page(request: Request, next: str | None = None) -> Response:
        return render(request, "signin.html", caller(request), next=_safe_next(next), draft="", error=None,
                      username="")

    @router.post("/signin")
    async def sign_in(request: Request) -> Response:
        form = await request.form()
        username, password = str(form.get("username", ""))[:200], str(form.get("password", ""))[:1024]
        target, draft = _safe_next(str(form.get("next", ""))), str(form.get("draft", ""))
        auth = authenticator(request)
        address = request.client.host if request.client else "unknown"
        try:
            if not username or not password:
                raise ApiError(422, "enter your user name and password")
            session = await run_in_threadpool(auth.accounts.sign_in, username, password, address)
        except (HubferryError, ApiError) as exc:
            retry = getattr(exc, "context", {}).get("retry_after_s")
            message = exc.message if isinstance(exc, ApiError) else printable(exc.message)
            if retry:
                message = f"too many failed sign-ins: try again in {int(retry)} s"
            status = 429 if retry else 401
            return render(request, "signin.html", None, status=status, next=target, draft=draft, error=message,
                          username=username)
        user = Principal(session.user.name, session.user.is_admin, via="session")
        response: Response = RedirectResponse(target, status_code=303)
        values = drafts.read(draft) if draft else None
        if values is not None:
            job, errors = await run_in_threadpool(create_job, user, values)
            if job is not None:
                response = RedirectResponse(f"/jobs/{job.id}", status_code=303)
            else:  # show the form again, filled in, saying what to fix (now signed in)
                response = pages.render(request, "new_job.html", {
                    "user": user, "csrf": auth.signer.csrf_token(session.secret), "nav": "new",
                    **new_job_context(user, values),
                    "errors": errors}, status=422)
        elif draft:
            response = RedirectResponse("/jobs/new?expired=1", status_code=303)
        auth.set_cookies(request, response, session)
        return response

    @router.post("/signout")
    def sign_out(request: Request) -> Response:
        auth = authenticator(request)
        response = RedirectResponse("/signin", status_code=303)
        if session_id := auth.session_id(request):
            auth.accounts.sign_out(session_id)
        auth.clear_cookies(request, response)
        return response

    # -- jobs ------------------------------------------------------------------------------

    def job_rows(user: Principal) -> list[Job]:
        rows = job_queries.page_ids(ctx.jobs.engine, owner=None if user.is_admin else user.name, states=[],
                                    trainers=[], after=None, limit=LIST_LIMIT)
        return [job for job in (ctx.jobs.get(job_id) for job_id, _ in rows) if job is not None]

    @router.get("/jobs")
    def jobs_page(request: Request) -> Response:
        user = caller(request)
        if user is None:
            return sign_in_redirect(request)
        return render(request, "jobs.html", user, jobs=job_rows(user), views=views)

    @router.get("/jobs/parts/list")
    def jobs_part(request: Request) -> Response:
        user = caller(request)
        if user is None:
            return Response(status_code=401)
        return render(request, "parts/job_rows.html", user, jobs=job_rows(user), views=views)

    def new_job_context(user: Principal | None, values: dict[str, str]) -> dict[str, Any]:
        return {"values": {"trainer": "local", "private": "on", **values}, "errors": FormErrors(),
                "endpoint": ctx.settings.resolved_endpoint(), "admin": bool(user and user.is_admin)}

    def create_job(user: Principal, values: dict[str, str]) -> tuple[Job | None, FormErrors]:
        body, errors = job_request(values)
        if body is None:
            return None, errors
        try:
            return v1_jobs.create(ctx, user, body), errors
        except ApiError as exc:
            errors.add(exc.field, exc.message + (f" ({exc.hint})" if exc.hint else ""))
            return None, errors

    @router.get("/jobs/new")
    def new_job_page(request: Request, expired: int = 0) -> Response:
        user = caller(request)
        context = new_job_context(user, {})
        if expired:
            context["errors"].form.append("the form kept across sign-in had expired: please fill it in again")
        return render(request, "new_job.html", user, **context)

    @router.post("/jobs/new")
    async def new_job(request: Request) -> Response:
        values = form_values(await request.form())
        user = caller(request)
        if user is None:  # keep what they entered, signed, and ask them to sign in
            return render(request, "signin.html", None, next="/jobs", draft=drafts.sign(values), error=None,
                          username="", starting=True)
        job, errors = await run_in_threadpool(create_job, user, values)
        if job is None:
            return render(request, "new_job.html", user, status=422, **{**new_job_context(user, values),
                                                                       "errors": errors})
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    def job_context(job: Job, part: str | None = None) -> dict[str, Any]:
        context: dict[str, Any] = {"job": job, "views": views, "now": datetime.now(UTC)}
        if part in (None, "progress"):
            points = progress_history.points(ctx.jobs.engine, job.id, limit=MAX_POINTS)
            context["chart"] = views.loss_chart(points)
            context["failed_stage"] = views.failed_stage(ctx.jobs.events(job.id, limit=v1_jobs.MAX_TIMELINE)) \
                if not views.is_live(job) else None
        if part in (None, "status", "timeline"):
            events = ctx.jobs.events(job.id, limit=v1_jobs.MAX_TIMELINE)
            context["events"] = events
            context["spans"] = views.stage_spans(events, ctx.jobs.clock(), live=views.is_live(job))
            context["verified"] = views.verified_files(events)
            context["files"] = views.published_files(job, events) if job.state is JobState.PUBLISHED else []
        if part in (None, "log"):
            context["log"] = v1_jobs.read_log(Path(job.log_path), tail=LOG_TAIL_LINES, offset=0, length=0)["text"] \
                if job.log_path else ""
        if part is None:
            report = job.params.get("dataset_report")
            context["report"] = report if isinstance(report, dict) else None
            context["max_items"] = MAX_REPORT_ITEMS
        return context

    @router.get("/jobs/{job_id}")
    def job_page(request: Request, job_id: str) -> Response:
        user = caller(request)
        if user is None:
            return sign_in_redirect(request)
        job = visible(user, job_id)
        if job is None:
            return not_found(request, user)
        return render(request, "job.html", user, **job_context(job))

    @router.get("/jobs/{job_id}/parts/{part}")
    def job_part(request: Request, job_id: str, part: str) -> Response:
        user = caller(request)
        job = visible(user, job_id) if user else None
        if user is None or job is None or part not in PARTS:
            return Response(status_code=404 if user else 401)
        # 286 tells htmx to stop polling: a job that cannot change by itself has nothing more to show
        status = 286 if part == "log" and not views.is_live(job) else 200
        return render(request, f"parts/job_{part}.html", user, status=status, **job_context(job, part))

    @router.get("/jobs/{job_id}/thumbnails/{name:path}")
    def thumbnail(request: Request, job_id: str, name: str) -> Response:
        user = caller(request)
        job = visible(user, job_id) if user else None
        report = job.params.get("dataset_report") if job else None
        packed = job.params.get("dataset_zip") if job else None
        names = {str(i.get("name")) for i in (report or {}).get("images", [])} if isinstance(report, dict) else set()
        if job is None or name not in names or not isinstance(packed, str) or not Path(packed).is_file():
            return with_security_headers(Response(status_code=404))
        return with_security_headers(Response(_thumbnail(Path(packed), name), media_type="image/jpeg",
                                              headers={"Cache-Control": "private, max-age=3600"}))

    # -- settings ----------------------------------------------------------------------------

    outbox = Outbox(ctx.jobs.engine)

    def settings_response(request: Request, user: Principal, status: int = 200, **webhook: Any) -> HTMLResponse:
        accounts: Accounts = authenticator(request).accounts
        return render(request, "settings.html", user, status=status, secrets=stored_view(ctx, user.name),
                      tokens=[t.to_dict() for t in accounts.tokens(user.name)],
                      endpoint=ctx.settings.resolved_endpoint(), webhook=webhook_view(user, **webhook))

    def webhook_view(user: Principal, **shown: Any) -> dict[str, Any]:
        target = outbox.user_target(user.name)
        names = {}
        job_hooks = []
        for t in outbox.job_targets(user.name):
            job = ctx.jobs.get(str(t.job_id))
            if job is not None:
                names[job.id] = job.name
                job_hooks.append({"job_id": job.id, "job_name": job.name, "url": display_url(t.url)})
        deliveries = []
        for d in outbox.recent(user.name, limit=RECENT_DELIVERIES):
            if d.job_id not in names:
                job = ctx.jobs.get(d.job_id)
                names[d.job_id] = job.name if job else d.job_id
            data = d.payload.get("data") or {}
            deliveries.append({"job_id": d.job_id, "job_name": names[d.job_id], "url": display_url(d.url),
                               "event": f"{data.get('from') or '?'} → {data.get('to') or '?'}", "state": d.state,
                               "status": d.last_status, "attempts": d.attempts, "at": d.updated_at,
                               "error": d.last_error})
        return {"url": display_url(target.url) if target else None, "since": target.created_at if target else None,
                "has_secret": notifications.has_signing_secret(ctx.credentials.vault, user.name),
                "job_hooks": job_hooks, "deliveries": deliveries, "value": "", "error": None, "secret": None,
                "message": None, "test": None, **shown}

    @router.get("/settings")
    def settings_page(request: Request) -> Response:
        user = caller(request)
        if user is None:
            return sign_in_redirect(request)
        return settings_response(request, user)

    @router.post("/settings/webhook")
    async def set_webhook(request: Request) -> Response:
        user = caller(request)
        if user is None:
            return sign_in_redirect(request)
        url = str((await request.form()).get("url", "")).strip()
        try:
            if not url:
                raise ApiError(422, "enter the URL to send your jobs' events to", field="url")
            await run_in_threadpool(notifications.check_url, ctx.settings, url, field="url")
        except (HubferryError, ApiError) as exc:
            message = printable(exc.message) + (f" ({exc.hint})" if exc.hint else "")
            shown = url if len(url) <= notifications.MAX_URL_CHARS else ""
            return settings_response(request, user, status=422, value=shown, error=message)
        created = not notifications.has_signing_secret(ctx.credentials.vault, user.name)
        secret = notifications.signing_secret(ctx.credentials.vault, user.name)
        outbox.set_target(user.name, url, now=utcnow())
        log.info("webhook set", owner=user.name, url=display_url(url))
        return settings_response(request, user, secret=secret if created else None,
                                 message="Saved: every state change of your jobs is sent there.")

    @router.post("/settings/webhook/test")
    async def test_webhook(request: Request) -> Response:
        user = caller(request)
        if user is None:
            return sign_in_redirect(request)
        target = outbox.user_target(user.name)
        if target is None:
            return settings_response(request, user, status=409, error="set a webhook URL before testing it")
        result = await run_in_threadpool(notifications.send_test, ctx.settings, ctx.credentials.vault, user.name,
                                         target.url)
        return settings_response(request, user, test=result)

    @router.post("/settings/webhook/secret")
    def new_webhook_secret(request: Request) -> Response:
        user = caller(request)
        if user is None:
            return sign_in_redirect(request)
        secret = notifications.new_signing_secret(ctx.credentials.vault, user.name)
        return settings_response(request, user, secret=secret,
                                 message="A new signing secret: deliveries from now on are signed with it.")

    @router.post("/settings/webhook/delete")
    def delete_webhook(request: Request) -> Response:
        user = caller(request)
        if user is None:
            return sign_in_redirect(request)
        removed = outbox.delete_user_target(user.name)
        return settings_response(request, user, status=200 if removed else 404,
                                 message="Removed: your jobs' events are no longer sent." if removed else None,
                                 error=None if removed else "there is no webhook URL to remove")

    @router.post("/settings/webhook/jobs/{job_id}/delete")
    def delete_job_webhook(request: Request, job_id: str) -> Response:
        user = caller(request)
        if user is None:
            return sign_in_redirect(request)
        removed = outbox.delete_job_target(user.name, job_id[:64])
        return settings_response(request, user, status=200 if removed else 404,
                                 message="Removed the job's own webhook URL." if removed else None,
                                 error=None if removed else "that job has no webhook URL of its own")

    return router


def _thumbnail(packed: Path, name: str) -> bytes:
    from PIL import Image

    with zipfile.ZipFile(packed) as archive, archive.open(name) as member:
        data = member.read()
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        out = io.BytesIO()
        image.convert("RGB").save(out, "JPEG", quality=80)
    return out.getvalue()
