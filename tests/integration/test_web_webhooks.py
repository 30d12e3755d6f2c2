"""Webhooks on the dashboard's settings page: the URL set, tested, removed (and a job's own URL removed), the
signing secret shown once when it is made, the delivery log, and the URL treated as hostile input (https,
public addresses, bounded length), behind the same CSRF and Origin checks as every form."""

from __future__ import annotations

import html
import re

import pytest
from standardwebhooks import Webhook

from fakes.api_v1 import api_context, stored_job
from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app
from hubferry.domain.jobs import JobState
from hubferry.services import notifications
from hubferry.store.database import utcnow
from hubferry.store.outbox import Outbox

SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


@pytest.fixture
def ctx(tmp_path, hf_env):
    return api_context(tmp_path)  # 127.0.0.1 allowed, as for an on-prem receiver


@pytest.fixture
def app(ctx):
    return create_app(ctx, run_consumer=False)


@pytest.fixture
def users(app):
    return TestUsers.of(app)


def _set(browser, url: str, **kwargs):
    return browser.client.post("/settings/webhook", data={"csrf_token": browser.csrf, "url": url}, **kwargs)


def _post(browser, path: str, **kwargs):
    return browser.client.post(path, data={"csrf_token": browser.csrf}, **kwargs)


def test_the_signing_secret_is_shown_once_when_made_and_never_again(app, ctx, users, webhook_receiver):
    ann = users.browser(app, "ann")
    assert "No webhook URL" in ann.client.get("/settings").text
    saved = _set(ann, webhook_receiver.url)
    assert saved.status_code == 200, saved.text
    [secret] = SECRET.findall(saved.text)
    assert secret == ctx.credentials.vault.get("ann", notifications.SECRET_NAME)
    assert Outbox(ctx.jobs.engine).user_target("ann").url == webhook_receiver.url
    page = ann.client.get("/settings").text
    assert secret not in page and not SECRET.search(page)
    # the URL is shown without its query (it may carry the receiver's own secret)
    assert "/hooks/replicate?…" in html.unescape(page) and "customId=123" not in page

    again = _set(ann, webhook_receiver.url.replace("customId=123", "customId=456"))
    assert again.status_code == 200 and not SECRET.search(again.text)  # a secret exists: not shown again

    renewed = _post(ann, "/settings/webhook/secret")
    [new] = SECRET.findall(renewed.text)
    assert new != secret and new == ctx.credentials.vault.get("ann", notifications.SECRET_NAME)
    assert not SECRET.search(ann.client.get("/settings").text)


def test_send_a_test_event_signed_with_the_secret_and_show_the_answer(app, ctx, users, webhook_receiver):
    ann = users.browser(app, "ann")
    refused = _post(ann, "/settings/webhook/test")
    assert refused.status_code == 409 and "set a webhook URL before testing it" in refused.text
    [secret] = SECRET.findall(_set(ann, webhook_receiver.url).text)
    shown = _post(ann, "/settings/webhook/test")
    assert shown.status_code == 200
    assert re.search(r"Test event delivered to .*: HTTP 200 in \d+ ms", html.unescape(shown.text))
    [received] = webhook_receiver.received
    headers = {k: received.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    event = Webhook(secret).verify(received.body, headers)
    assert event["type"] == "webhook.test" and event["data"]["owner"] == "ann"

    webhook_receiver.script.append(500)
    failed = _post(ann, "/settings/webhook/test")
    assert "The test event was not delivered" in failed.text and "HTTP 500" in failed.text
    webhook_receiver.redirect_to = "http://169.254.169.254/latest/meta-data/"
    redirected = _post(ann, "/settings/webhook/test")
    assert "HTTP 307 (redirects are not followed)" in redirected.text
    assert len(webhook_receiver.received) == 3  # the redirect was not followed


def test_the_delivery_log_shows_event_status_attempts_and_time_of_the_users_own_jobs(app, ctx, users,
                                                                                       webhook_receiver):
    ann, ben = users.browser(app, "ann"), users.browser(app, "ben")
    _set(ann, webhook_receiver.url)
    job = stored_job(ctx, "ann", name="hooked-run")
    ctx.jobs.transition(job.id, JobState.QUEUED, JobState.CANCELLED)
    sender = notifications.Sender(ctx.jobs, ctx.credentials.vault, ctx.settings)
    try:
        assert sender.scan() == 1 and sender.send_due() == 1 and sender.wait_idle()
    finally:
        sender.stop()
    page = ann.client.get("/settings").text
    row = page.split('<tr class="delivery state-delivered">')[1].split("</tr>")[0]
    assert "hooked-run" in row and "queued → cancelled" in row and ">1<" in row.replace(" ", "")
    assert re.search(r"<td class=\"num\">200 ", row) and "UTC" in row
    assert "hooked-run" not in ben.client.get("/settings").text  # only one's own deliveries


def test_a_jobs_own_url_is_listed_and_removed_and_the_users_url_removed(app, ctx, users):
    ann, ben = users.browser(app, "ann"), users.browser(app, "ben")
    job = stored_job(ctx, "ann", name="own-url-run")
    outbox = Outbox(ctx.jobs.engine)
    outbox.set_target("ann", "https://hooks.example.com/per-job?token=abc", now=utcnow(), job_id=job.id)
    page = ann.client.get("/settings").text
    assert "own-url-run" in page and "token=abc" not in page
    assert _post(ben, f"/settings/webhook/jobs/{job.id}/delete").status_code == 404  # not ben's
    assert len(outbox.job_targets("ann")) == 1
    removed = _post(ann, f"/settings/webhook/jobs/{job.id}/delete")
    assert removed.status_code == 200 and outbox.job_targets("ann") == []

    assert _post(ann, "/settings/webhook/delete").status_code == 404
    outbox.set_target("ann", "https://hooks.example.com/all", now=utcnow())
    gone = _post(ann, "/settings/webhook/delete")
    assert gone.status_code == 200 and "no longer sent" in gone.text and outbox.user_target("ann") is None


@pytest.mark.parametrize(("url", "says"), [
    ("http://10.1.2.3/hook", "a private address"),
    ("https://169.254.169.254/latest/meta-data", "a cloud metadata address"),
    ("https://[::ffff:10.0.0.1]/hook", "a private address"),
    ("http://93.184.216.34/hook", "must use https"),
    ("https://user:pw@93.184.216.34/hook", "user name or password"),
    ("ftp://93.184.216.34/hook", "must be http or https"),
    ("javascript:alert(1)", "http or https"),
    ("https://93.184.216.34/" + "a" * 3000, "at most 2048"),
    ("", "enter the URL"),
])
def test_hostile_urls_are_refused_with_the_reason_and_nothing_is_stored(tmp_path, hf_env, url, says):
    ctx = api_context(tmp_path, fetch_allow_hosts=())
    app = create_app(ctx, run_consumer=False)
    ann = TestUsers.of(app).browser(app, "ann")
    refused = _set(ann, url)
    assert refused.status_code == 422, refused.text
    error = html.unescape(refused.text.split('id="hook-url-error"')[1].split("</p>")[0])
    assert says in error
    assert 'aria-invalid="true"' in refused.text and "<script" not in error
    assert Outbox(ctx.jobs.engine).user_target("ann") is None
    assert not ctx.credentials.vault.get("ann", notifications.SECRET_NAME)


def test_http_only_to_an_allowed_loopback(tmp_path, hf_env):
    ctx = api_context(tmp_path, fetch_allow_hosts=("127.0.0.1",))
    app = create_app(ctx, run_consumer=False)
    ann = TestUsers.of(app).browser(app, "ann")
    assert _set(ann, "http://127.0.0.1:9/hook").status_code == 200
    closed = api_context(tmp_path / "closed", fetch_allow_hosts=())
    app = create_app(closed, run_consumer=False)
    ben = TestUsers.of(app).browser(app, "ben")
    assert "a loopback address" in html.unescape(_set(ben, "http://127.0.0.1:9/hook").text)


def test_every_webhook_form_needs_the_csrf_token_and_this_origin(app, ctx, users):
    ann = users.browser(app, "ann")
    outbox = Outbox(ctx.jobs.engine)
    for path, data in (("/settings/webhook", {"url": "https://hooks.example.com/x"}), ("/settings/webhook/test", {}),
                       ("/settings/webhook/secret", {}), ("/settings/webhook/delete", {})):
        assert ann.client.post(path, data=data).status_code == 403, path
        cross = ann.client.post(path, data={**data, "csrf_token": ann.csrf}, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403, path
    assert outbox.user_target("ann") is None
    assert not ctx.credentials.vault.get("ann", notifications.SECRET_NAME)
    signed_out = ann.client.__class__(app).post("/settings/webhook", data={"url": "https://hooks.example.com/x"},
                                                follow_redirects=False)
    assert signed_out.status_code == 303 and "/signin" in signed_out.headers["location"]


def test_the_form_is_labelled_and_keyboard_reachable(app, users):
    page = users.browser(app, "ann").client.get("/settings").text
    section = page.split('id="webhooks"')[1].split("</section>")[0]
    assert '<label for="hook-url">' in section and 'id="hook-url"' in section
    assert 'aria-describedby="hook-url-error"' in section and "tabindex=\"-1\"" not in section
