"""The dashboard as a person uses it, in Chromium: signing in, starting a job (also from signed out),
watching it train and publish live, retrying a failed publish, and not seeing other people's jobs."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from playwright.sync_api import expect

from fakes.api_v1 import FAKE_TRAINER, ROOT, stored_job
from hubferry.domain.jobs import JobState

from .conftest import Dashboard, shoot, wait_until


def fill_local_job(page, out: Path, *, name: str, steps: int = 40, step_s: float = 0.1, repo: str = "",
                   skip_preflight: bool = False) -> str:
    command = shlex.join([sys.executable, FAKE_TRAINER, "--output", str(out), "--steps", str(steps),
                          "--step-s", str(step_s)])
    page.goto("/jobs/new")
    page.get_by_label("Local command").check()
    page.get_by_label("Job name").fill(name)
    if repo:
        page.get_by_label("Repo (optional)").fill(repo)
    page.get_by_role("textbox", name="Training command").fill(command)
    page.get_by_label("Output folder").fill(str(out))
    page.get_by_label("Total steps").fill(str(steps))
    page.get_by_label("Working directory").fill(str(ROOT))
    if skip_preflight:
        page.locator("details.advanced summary").click()
        page.get_by_label("Skip the pre-flight check of the Hub token and repo").check()
    return command


def test_sign_in_shows_a_wrong_password_and_then_the_users_jobs(dashboard: Dashboard):
    page = dashboard.page()
    dashboard.users.add("ann")
    page.goto("/jobs")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fjobs$"))
    page.get_by_label("User name").fill("ann")
    page.get_by_label("Password").fill("not her password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("wrong user name or password")
    shoot(page, "signin-error")
    dashboard.sign_in(page, "ann")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    expect(page.locator(".user")).to_have_text("ann")
    expect(page.locator(".job-list")).to_contain_text("No jobs yet")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin$"))
    page.goto("/jobs")
    expect(page).to_have_url(re.compile(r"/signin"))


def test_a_signed_out_person_signs_in_and_the_job_they_configured_starts(dashboard: Dashboard, tmp_path, registry,
                                                                          alice_token):
    dashboard.ctx.credentials.set("root", registry.endpoint, alice_token)
    password = dashboard.users.add("root", admin=True)
    page = dashboard.page()
    command = fill_local_job(page, tmp_path / "seed-out", name="seed lora", steps=5, step_s=0.05)
    expect(page.locator("#repo-preview")).to_contain_text("sign in to see the exact name")
    page.get_by_role("button", name="Sign in & start training").click()
    expect(page.get_by_role("status")).to_contain_text("What you entered is kept")
    assert dashboard.ctx.jobs.list_jobs(limit=10) == []  # nothing starts before sign-in
    page.get_by_label("User name").fill("root")
    page.get_by_label("Password").fill(password)
    shoot(page, "seed-signin")
    page.get_by_role("button", name="Sign in & start training").click()
    page.wait_for_url(re.compile(r"/jobs/job_\w+$"))
    expect(page.get_by_role("heading", name="seed lora")).to_be_visible()
    expect(page.locator(".verified")).to_have_text("✓ verified")
    [job] = dashboard.ctx.jobs.list_jobs(limit=10)
    assert job.owner == "root" and job.repo_id == "alice/seed-lora" and job.state is JobState.PUBLISHED
    assert shlex.join(job.params["command"]) == command


def test_a_local_job_trains_live_publishes_and_shows_the_verified_files(dashboard: Dashboard, tmp_path, registry,
                                                                         alice_token):
    dashboard.ctx.credentials.set("root", registry.endpoint, alice_token)
    page = dashboard.page()
    dashboard.sign_in(page, "root", admin=True)
    fill_local_job(page, tmp_path / "out", name="live lora", steps=50, step_s=0.12)
    expect(page.locator("#repo-preview")).to_have_text("alice/live-lora")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r"/jobs/job_\w+$"))
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    bar = page.locator("#progress progress")
    expect(bar).to_have_attribute("value", re.compile(r"^(?:[1-8]\d|9[0-4])\.\d$"))  # training: 5-95 %
    first = float(bar.get_attribute("value"))
    expect(page.locator(".loss-curve")).to_be_visible()
    points = int(page.locator(".loss-curve").get_attribute("data-points"))
    expect(page.locator(".stat-stage")).to_have_text("training")
    expect(page.locator(".stat-eta")).not_to_have_text("-")
    shoot(page, "job-training")
    # the same document keeps changing (the CSP forbids wait_for_function's eval: poll from here)
    wait_until(lambda: float(bar.get_attribute("value")) > first + 5)
    wait_until(lambda: int(page.locator(".loss-curve").get_attribute("data-points")) > points)
    expect(page.locator("#log")).to_contain_text("train:")

    expect(page.locator(".verified")).to_have_text("✓ verified")
    assert page.evaluate("window.__sameDocument") is True
    job = dashboard.ctx.jobs.list_jobs(limit=1)[0]
    hub_link = page.get_by_role("link", name="alice/live-lora on the Hub ↗")
    expect(hub_link).to_have_attribute("href", f"{registry.endpoint}/alice/live-lora")
    expect(page.locator(".published")).to_contain_text(job.commit_sha[:12])
    weights = page.locator("table.files tr.file-row", has_text="adapter_model.safetensors")
    expect(weights.locator(".file-size")).to_have_text("262 KB")
    expect(weights.locator(".file-verified")).to_have_text("✓ verified")
    card = page.locator("table.files tr.file-row", has_text="README.md")
    expect(card.locator(".file-verified")).to_have_text("✓ verified")
    expect(card.locator(".file-size")).to_have_text(re.compile(r"^\d+(\.\d)? (B|KB)$"))
    expect(page.locator("#progress .badge, #status .badge")).to_have_text("published")
    expect(page.locator(".spans .span-stage")).to_have_text(["preparing", "training", "publishing", "verifying"])
    expect(page.locator(".spans .span.finished")).to_have_count(4)
    shoot(page, "job-published")

    page.goto("/jobs")
    row = page.locator(".job-row", has_text="live lora")
    expect(row.locator(".badge")).to_have_text("published")
    expect(row).to_contain_text("alice/live-lora")
    expect(row).to_contain_text("local")


def test_a_failed_publish_is_retried_from_the_job_page(dashboard: Dashboard, tmp_path, registry, alice_token):
    dashboard.ctx.credentials.set("root", registry.endpoint, alice_token)
    page = dashboard.page()
    dashboard.sign_in(page, "root", admin=True)
    fill_local_job(page, tmp_path / "out", name="refused", steps=3, step_s=0.02, repo="bob/not-alices",
                   skip_preflight=True)
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r"/jobs/job_\w+$"))
    expect(page.locator("#status .badge")).to_have_text("failed")
    expect(page.locator(".error-box")).to_contain_text("authentication")
    expect(page.locator(".stage.failed")).to_have_text("publishing")
    expect(page.locator(".stage.done")).to_have_text(["preparing", "training"])
    # the training is shown done with its steps, not a bar that stopped short (and no loss curve of repeats)
    expect(page.locator("p.training-done")).to_contain_text("Training done: 100 % · step 3 / 3")
    expect(page.locator("p.training-done")).to_contain_text("Publishing failed (authentication)")
    expect(page.locator(".stat-stage")).to_have_text("publishing failed")
    expect(page.locator(".stat-step")).to_have_text("3 / 3")
    expect(page.locator(".error-box .hint")).to_contain_text("push to alice/")
    shoot(page, "job-failed")
    page.goto("/jobs")
    row = page.locator(".job-row", has_text="refused")
    expect(row.locator(".after-failed")).to_have_text("training done (step 3/3), publishing failed: authentication")
    page.go_back()
    page.get_by_label("Publish to another repo (optional)").fill("alice/retried-from-the-page")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".verified")).to_have_text("✓ verified")
    expect(page.get_by_role("link", name="alice/retried-from-the-page on the Hub ↗")).to_be_visible()


def test_another_user_sees_neither_the_job_nor_its_page(dashboard: Dashboard):
    dashboard.users.add("root", admin=True)
    job = stored_job(dashboard.ctx, "carol", name="carols-secret-run")
    page = dashboard.page()
    dashboard.sign_in(page, "dave")
    expect(page.locator(".job-list")).to_contain_text("No jobs yet")
    expect(page.locator(".job-list")).not_to_contain_text("carols-secret-run")
    response = page.goto(f"/jobs/{job.id}")
    assert response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert page.request.get(f"/jobs/{job.id}/parts/status").status == 404
    dashboard.sign_in(page, "carol")
    expect(page.locator(".job-list")).to_contain_text("carols-secret-run")


def test_settings_store_a_hub_token_show_only_its_end_and_make_an_api_token_once(dashboard: Dashboard, registry,
                                                                                 alice_token):
    page = dashboard.page()
    dashboard.sign_in(page, "ann")
    page.goto("/settings")
    expect(page.get_by_text("No Hub token stored")).to_be_visible()
    page.get_by_label("Endpoint").fill(registry.endpoint)
    page.get_by_label("Hub token", exact=True).fill("hf_not_a_real_token_at_all_1234")
    page.get_by_role("button", name="Save Hub token").click()
    expect(page.get_by_role("region", name="Hugging Face Hub tokens").get_by_role("alert")).to_contain_text(
        "did not accept this token")
    page.get_by_label("Hub token", exact=True).fill(alice_token)
    page.get_by_role("button", name="Save Hub token").click()
    stored = page.locator(".secrets li", has_text=registry.endpoint)
    expect(stored).to_contain_text("user alice")
    expect(stored).to_contain_text("…" + alice_token[-4:])
    assert alice_token not in page.content()

    page.get_by_label("Label").fill("laptop")
    page.get_by_role("button", name="Create API token").click()
    token = page.locator(".token-value")
    expect(token).to_have_text(re.compile(r"^hfy_"))
    secret = token.text_content()
    shoot(page, "settings-token-shown")
    page.get_by_role("link", name="Done").click()
    expect(page.locator(".secrets li", has_text="laptop")).to_be_visible()
    assert secret not in page.content()  # shown once
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke the token laptop").click()
    expect(page.locator(".secrets li", has_text="laptop")).to_have_count(0)
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Delete the Hub token for {registry.endpoint}").click()
    expect(page.get_by_text("No Hub token stored")).to_be_visible()


def test_every_page_fits_a_phone_and_follows_dark_mode(dashboard: Dashboard, tmp_path, registry, alice_token):
    dashboard.ctx.credentials.set("root", registry.endpoint, alice_token)
    desktop = dashboard.page()
    dashboard.sign_in(desktop, "root", admin=True)
    fill_local_job(desktop, tmp_path / "out", name="phone check", steps=12, step_s=0.05)
    desktop.get_by_role("button", name="Start training").click()
    desktop.wait_for_url(re.compile(r"/jobs/job_\w+$"))
    expect(desktop.locator(".verified")).to_be_visible()
    job_path = "/jobs/" + desktop.url.rsplit("/", 1)[1]
    cookies = desktop.context.cookies()
    for dark in (False, True):
        for width, height, label in ((1280, 900, "desktop"), (390, 844, "phone")):
            page = dashboard.page(width=width, height=height, dark=dark)
            page.context.add_cookies(cookies)
            for path, name in ((job_path, "job"), ("/jobs", "jobs"), ("/jobs/new", "new"), ("/settings", "settings")):
                page.goto(path)
                expect(page.locator("main h1")).to_be_visible()
                overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
                assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at {width}px"
                background = page.evaluate("getComputedStyle(document.body).backgroundColor")
                assert (background == "rgb(15, 18, 22)") == dark, background
                shoot(page, f"{name}-{label}-{'dark' if dark else 'light'}")


def test_settings_set_test_and_remove_a_webhook_by_keyboard_with_the_secret_shown_once(dashboard: Dashboard):
    from fakes.webhook_receiver import running_webhook_receiver

    page = dashboard.page(width=390, height=844, dark=True)
    dashboard.sign_in(page, "ann")
    page.goto("/settings")
    section = page.get_by_role("region", name="Webhooks")
    expect(section.get_by_text("No webhook URL")).to_be_visible()
    field = section.get_by_label("Webhook URL")
    field.fill("http://10.1.2.3/hook")
    field.press("Enter")  # the form submits from the keyboard
    expect(section.get_by_role("alert").first).to_contain_text("a private address")
    expect(section.get_by_label("Webhook URL")).to_have_attribute("aria-invalid", "true")
    with running_webhook_receiver() as receiver:
        section.get_by_label("Webhook URL").fill(receiver.url)
        section.get_by_label("Webhook URL").press("Enter")
        secret = page.get_by_label("Signing secret")
        expect(secret).to_have_text(re.compile(r"^whsec_"))
        shown = secret.text_content()
        shoot(page, "settings-webhook-secret-phone-dark")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"the settings page scrolls sideways by {overflow}px on a phone"
        test = section.get_by_role("button", name="Send a test event")
        test.focus()
        page.keyboard.press("Enter")
        expect(page.locator(".test-result")).to_contain_text("Test event delivered")
        expect(page.locator(".test-result")).to_contain_text("HTTP 200")
        assert shown not in page.content()  # shown once
        assert len(receiver.received) == 1
    expect(page.locator(".webhook-url")).to_contain_text("/hooks/replicate?…")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove the webhook URL").click()
    expect(page.get_by_role("region", name="Webhooks").get_by_text("No webhook URL")).to_be_visible()
