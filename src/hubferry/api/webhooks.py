"""``POST /webhooks/replicate?job=ID``: a Replicate training event, verified, recorded once, handed to a task.

The body is trusted only after its Standard Webhooks signature checks out with the job owner's
signing secret (read from Replicate, cached, re-read once when a check fails). Stale timestamps,
bad or missing signatures and malformed bodies get a 4xx, a repeated ``webhook-id`` is
acknowledged and ignored, and the answer comes at once: the task re-reads the training itself.
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from hubferry.domain.jobs import JobState
from hubferry.errors import HubferryError
from hubferry.logs import get_logger
from hubferry.services.context import Context
from hubferry.services.credentials import replicate_token
from hubferry.trainers.replicate_api import connect

log = get_logger(__name__)
#: Largest webhook body accepted (a training object with its whole log).
MAX_BODY_BYTES = 4 * 1024 * 1024


class _Secrets:
    """Signing secrets per Replicate token, read once and re-read when a signature does not verify."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, ctx: Context, token: str, *, refresh: bool = False) -> str:
        with self._lock:
            if not refresh and token in self._cache:
                return self._cache[token]
        secret = connect(ctx.settings, token).webhook_secret()
        with self._lock:
            self._cache[token] = secret
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
        token = replicate_token(ctx.credentials, job.owner, job.id)
        if not token:
            return _answer(409, "the job has no Replicate token to check the signature with")
        payload = _verified(ctx, secrets, token, body, headers)
        if payload is None:
            return _answer(401, "bad, missing or stale webhook signature")
        if not isinstance(payload, dict) or payload.get("id") != job.trainer_handle.get("training_id"):
            return _answer(400, "the body is not this job's training")
        if not ctx.jobs.record_delivery("replicate", headers["webhook-id"], job.id):
            return JSONResponse({"status": "duplicate ignored"})
        if job.state is JobState.TRAINING:
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


def _verified(ctx: Context, secrets: _Secrets, token: str, body: bytes, headers: dict[str, str]) -> Any | None:
    """The JSON body when its signature verifies (re-reading the secret once); else None."""
    for refresh in (False, True):
        try:
            return Webhook(secrets.get(ctx, token, refresh=refresh)).verify(body, headers)
        except WebhookVerificationError as exc:
            if "timestamp" in str(exc).lower() or "missing" in str(exc).lower():
                return None  # a fresh secret cannot fix a stale or unsigned delivery
        except (ValueError, UnicodeDecodeError):
            return None
    return None
