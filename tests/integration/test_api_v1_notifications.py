"""Outgoing notifications: every state change of a user's jobs (or one job's) sent as a signed Standard
Webhook to a URL that is treated as hostile - checked after DNS resolution, no redirects followed, timeouts,
bounded retries with backoff - with a delivery log, and never in the request path."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx2
import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from fakes.api_v1 import api_context, local_job, stored_job, wait_for_state
from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app
from hubferry.domain.jobs import JobState
from hubferry.services import notifications
from hubferry.store.database import utcnow
from hubferry.store.outbox import Outbox


@pytest.fixture
def ctx(tmp_path):
    return api_context(tmp_path)


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _verified(received, secret: str) -> dict:
    headers = {k: received.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    return Webhook(secret).verify(received.body, headers)


def test_every_state_change_of_a_users_jobs_is_delivered_signed_and_logged(ctx, webhook_receiver):
    app = create_app(ctx, run_consumer=False)
    users = TestUsers(ctx.jobs.engine)
    with TestClient(app, headers={"Authorization": f"Bearer {users.token('ann')}"}) as ann:  # runs the sender
        configured = ann.put("/api/v1/notifications/webhook", json={"url": webhook_receiver.url})
        assert configured.status_code == 200, configured.text
        secret = configured.json()["secret"]
        assert secret.startswith("whsec_")
        # the secret is in the answer that made it, never again
        shown = {"url": webhook_receiver.url, "secret": None, "secret_set": True}
        assert ann.get("/api/v1/notifications/webhook").json() == shown
        assert ann.put("/api/v1/notifications/webhook", json={"url": webhook_receiver.url}).json() == shown
        job = stored_job(ctx, "ann")
        other = stored_job(ctx, "ben")
        for before, after in ((JobState.QUEUED, JobState.PREPARING), (JobState.PREPARING, JobState.TRAINING),
                              (JobState.TRAINING, JobState.CANCELLED)):
            ctx.jobs.transition(job.id, before, after)
        ctx.jobs.transition(other.id, JobState.QUEUED, JobState.CANCELLED)  # not ann's: not sent to her

        received = webhook_receiver.wait_until(lambda got: len(got) >= 3)
        bodies = [_verified(r, secret) for r in received]
        assert [(b["data"]["from"], b["data"]["to"]) for b in bodies] == [
            ("queued", "preparing"), ("preparing", "training"), ("training", "cancelled")]
        assert {b["type"] for b in bodies} == {"job.state_changed"}
        assert {b["data"]["job_id"] for b in bodies} == {job.id}
        assert len({r.headers["webhook-id"] for r in received}) == 3

        log = ann.get(f"/api/v1/jobs/{job.id}/deliveries").json()["deliveries"]
        assert [d["state"] for d in log] == ["delivered"] * 3 and [d["event"]["to"] for d in log] == [
            "preparing", "training", "cancelled"]
        assert log[0]["log"][0]["status"] == 200 and log[0]["id"] == received[0].headers["webhook-id"]
        assert ann.delete("/api/v1/notifications/webhook").status_code == 204
        assert ann.delete("/api/v1/notifications/webhook").status_code == 404
    assert len(webhook_receiver.received) == 3  # nothing twice, and nothing of ben's


def test_a_jobs_own_notify_url_gets_its_changes(ctx, webhook_receiver, tmp_path):
    app = create_app(ctx, run_consumer=False)
    users = TestUsers(ctx.jobs.engine)
    with TestClient(app, headers={"Authorization": f"Bearer {users.token('root', admin=True)}"}) as root:
        assert root.get("/api/v1/notifications/webhook").json() == {"url": None, "secret": None, "secret_set": False}
        secret = root.post("/api/v1/notifications/webhook/secret").json()["secret"]
        assert secret.startswith("whsec_") and root.get("/api/v1/notifications/webhook").json()["secret"] is None
        created = root.post("/api/v1/jobs", json=local_job(tmp_path / "o", steps=2, preflight=False,
                                                          notify_url=webhook_receiver.url))
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        wait_for_state(root, job_id, {"trained", "failed"})
        received = webhook_receiver.wait_until(lambda got: len(got) >= 3)
        assert [_verified(r, secret)["data"]["to"] for r in received] == ["preparing", "training", "trained"]
        renewed = root.post("/api/v1/notifications/webhook/secret").json()["secret"]
        assert renewed != secret and renewed == ctx.credentials.vault.get("root", notifications.SECRET_NAME)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://[::1]/hook", "http://10.1.2.3/hook",
                                 "http://169.254.169.254/latest/meta-data", "http://user:pw@93.184.216.34/hook",
                                 "ftp://93.184.216.34/hook", "http://0x7f000001/hook"])
def test_private_loopback_metadata_and_odd_urls_are_refused_when_set(tmp_path, url):
    ctx = api_context(tmp_path, fetch_allow_hosts=())
    app = create_app(ctx, run_consumer=False)
    users = TestUsers(ctx.jobs.engine)
    refused = users.token_client(app, "ann").put("/api/v1/notifications/webhook", json={"url": url})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "url", refused.text
    job = users.token_client(app, "root", admin=True).post("/api/v1/jobs", json={
        "trainer": "local", "command": ["true"], "preflight": False, "notify_url": url})
    assert job.status_code == 422 and job.json()["error"]["field"].endswith("notify_url")
    assert ctx.jobs.list_jobs() == [] and Outbox(ctx.jobs.engine).targets() == []


def _one_delivery(ctx, url: str, clock: Clock, **sender_args) -> tuple[notifications.Sender, str]:
    sender = notifications.Sender(ctx.jobs, ctx.credentials.vault, ctx.settings, clock=clock, **sender_args)
    Outbox(ctx.jobs.engine).set_target("ann", url, now=clock())
    job = stored_job(ctx, "ann")
    ctx.jobs.transition(job.id, JobState.QUEUED, JobState.CANCELLED)
    assert sender.scan() == 1
    return sender, job.id


def _attempt(sender: notifications.Sender) -> int:
    started = sender.send_due()
    assert sender.wait_idle()
    return started


def test_failures_are_retried_with_backoff_until_delivered_or_given_up(ctx, webhook_receiver):
    clock = Clock()
    webhook_receiver.script = [500, 503]
    sender, job_id = _one_delivery(ctx, webhook_receiver.url, clock)
    try:
        assert _attempt(sender) == 1
        clock.advance(notifications.RETRY_DELAYS_S[0] / 2)
        assert _attempt(sender) == 0  # not due yet
        clock.advance(notifications.RETRY_DELAYS_S[0] / 2)
        assert _attempt(sender) == 1
        clock.advance(notifications.RETRY_DELAYS_S[1])
        assert _attempt(sender) == 1
        (delivery,) = Outbox(ctx.jobs.engine).deliveries(job_id)
        assert delivery.state == "delivered" and [e["status"] for e in delivery.log] == [500, 503, 200]
        assert len({r.headers["webhook-id"] for r in webhook_receiver.received}) == 1  # one message, three tries

        webhook_receiver.script = [500] * 20
        other = stored_job(ctx, "ann", name="doomed")
        ctx.jobs.transition(other.id, JobState.QUEUED, JobState.CANCELLED)
        sender.scan()
        for delay in (0, *notifications.RETRY_DELAYS_S, 10_000):
            clock.advance(delay)
            _attempt(sender)
        (doomed,) = Outbox(ctx.jobs.engine).deliveries(other.id)
        assert doomed.state == "failed" and doomed.attempts == notifications.MAX_ATTEMPTS
    finally:
        sender.stop()


def test_redirects_are_not_followed(ctx, webhook_receiver):
    webhook_receiver.redirect_to = "http://169.254.169.254/latest/meta-data/"
    sender, job_id = _one_delivery(ctx, webhook_receiver.url, Clock())
    try:
        _attempt(sender)
        (delivery,) = Outbox(ctx.jobs.engine).deliveries(job_id)
        assert delivery.state == "pending" and delivery.last_status == 307
        assert "redirects are not followed" in delivery.last_error and len(webhook_receiver.received) == 1
    finally:
        sender.stop()


def test_a_name_resolving_to_a_private_address_at_send_time_is_refused_for_good(ctx):
    sent = []
    transport = httpx2.MockTransport(lambda request: sent.append(request) or httpx2.Response(200))
    sender, job_id = _one_delivery(ctx, "https://hooks.example.test/x", Clock(), transport=transport,
                                   resolve=lambda host, port: ["10.0.0.5"])
    try:
        _attempt(sender)
        (delivery,) = Outbox(ctx.jobs.engine).deliveries(job_id)
        assert delivery.state == "failed" and "private address" in delivery.last_error and sent == []
    finally:
        sender.stop()


def test_a_timeout_is_retried_and_gone_is_final(ctx):
    answers = [httpx2.ReadTimeout("no answer"), httpx2.Response(410)]

    def handler(request: httpx2.Request) -> httpx2.Response:
        assert request.url.host == "93.184.216.34" and request.headers["host"] == "hooks.example.test"
        assert json.loads(request.content)["type"] == "job.state_changed"
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = Clock()
    sender, job_id = _one_delivery(ctx, "https://hooks.example.test/x", clock, transport=httpx2.MockTransport(handler),
                                   resolve=lambda host, port: ["93.184.216.34"])
    try:
        _attempt(sender)
        (delivery,) = Outbox(ctx.jobs.engine).deliveries(job_id)
        assert delivery.state == "pending" and "ReadTimeout" in delivery.last_error
        clock.advance(notifications.RETRY_DELAYS_S[0])
        _attempt(sender)
        (delivery,) = Outbox(ctx.jobs.engine).deliveries(job_id)
        assert delivery.state == "failed" and delivery.last_status == 410 and answers == []
    finally:
        sender.stop()
