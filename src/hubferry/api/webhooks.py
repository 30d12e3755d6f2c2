"""``POST /webhooks/replicate?job=ID``: a Replicate training event, verified, recorded once, handed to a task.

The body is trusted only after its Standard Webhooks signature checks out with the job owner's
signing secret (read from Replicate, cached, re-read when a check fails at most once per
:data:`SECRET_REFRESH_S`). Stale timestamps, bad or missing signatures and malformed bodies get a
4xx, a repeated ``webhook-id`` is acknowledged and ignored, and the answer comes at once: the task
re-reads the training itself, at once when it has finished, and for progress events only when no
read happened within the poll interval (webhooks add no provider calls to the polls' budget).
"""

from __future__ import annotations

import json
import threading
import time

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from hubferry.domain.jobs import Job, JobState
from hubferry.errors import HubferryError
from hubferry.logs import get_logger
from hubferry.services.context import Context
from hubferry.services.credentials import provider_key
from hubferry.services.remote import stale_after
from hubferry.trainers.replicate_api import connect

log = get_logger(__name__)
#: Largest webhook body accepted (a training object with its whole log).
MAX_BODY_BYTES = 4 * 1024 * 1024
#: A signing secret is re-read from Replicate at most this often per token, so a flood of forged
#: webhooks cannot become a flood of Replicate calls (a rotated secret is picked up within this time).
SECRET_REFRESH_S = 60.0
#: Training statuses that are still moving; any other status is read at once.
_RUNNING = ("starting", "processing")


class _Secrets:
    """Signing secrets per Replicate token, read once and re-read when a signature does not verify."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, ctx: Context, token: str, *, refresh: bool = False) -> str | None:
        """The cached secret; with ``refresh`` a freshly read one, or ``None`` when it was read too recently."""
        with self._lock:  # held while reading: concurrent deliveries wait for one read instead of each making one
            cached = self._cache.get(token)
            if cached is not None and refresh and time.monotonic() - cached[1] < SECRET_REFRESH_S:
                return None
            if cached is not None and not refresh:
                return cached[0]
            secret = connect(ctx.settings, token).webhook_secret()
            self._cache[token] = (secret, time.monotonic())
            return secret


def _answer(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"category": "validation", "message": message}}, status_code=status)


def webhook_router(ctx: Context) -> APIRouter:
    router = APIRouter()
    secrets = _Secrets()

    def verify(job_id: str, body: bytes, headers: dict[str, str]) -> JSONResponse:
        job = ctx.jobs.get(job_id)
        if job is None or job.trainer != "replicate" or not job.trainer_handle:
            return _answer(404, "no such Replicate job")
        token = provider_key(ctx.credentials, "replicate", job.owner, job.id)
        if not token:
            return _answer(409, "the job has no Replicate token to check the signature with")
        if not _signed(ctx, secrets, token, body, headers):
            return _answer(401, "bad, missing or stale webhook signature")
        try:
            payload = json.loads(body)
        except ValueError:
            return _answer(400, "the body is not JSON")
        if not isinstance(payload, dict) or payload.get("id") != job.trainer_handle.get("training_id"):
            return _answer(400, "the body is not this job's training")
        if not ctx.jobs.record_delivery("replicate", headers["webhook-id"], job.id):
            return JSONResponse({"status": "duplicate ignored"})
        if job.state is JobState.TRAINING and _worth_reading(ctx, job, payload.get("status")):
            ctx.dispatch().observe(job.id)
        return JSONResponse({"status": "accepted"}, status_code=202)

    @router.post("/webhooks/replicate", include_in_schema=False)
    async def replicate_webhook(request: Request, job: str = "") -> JSONResponse:
        if not job or len(job) > 64:
            return _answer(400, "the webhook URL names no job (?job=ID)")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _answer(413, "webhook body too large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _answer(413, "webhook body too large")
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            return await run_in_threadpool(verify, job, bytes(body), headers)
        except HubferryError as exc:
            log.warning("webhook not handled", job_id=job, error=exc.message)
            return _answer(503 if exc.retryable else 400, exc.message)

    return router


def _signed(ctx: Context, secrets: _Secrets, token: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether the body carries a fresh, valid signature (a bad one re-reads the secret, rate-limited)."""
    for refresh in (False, True):
        secret = secrets.get(ctx, token, refresh=refresh)
        if secret is None:
            return False
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
            return True
        except WebhookVerificationError as exc:
            if "no matching signature" not in str(exc).lower():
                return False  # a fresh secret cannot fix a stale, unsigned or garbled delivery
        except ValueError:  # a signature that is not ``v1,<base64>``, a body that is not UTF-8
            return False
    return False


def _worth_reading(ctx: Context, job: Job, status: object) -> bool:
    """A finished training is read at once; a progress event only when nobody read it within the poll interval."""
    if status not in _RUNNING:
        return True
    return job.observed_at is None or job.observed_at <= ctx.jobs.clock() - stale_after(ctx)
