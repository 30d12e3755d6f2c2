"""The dashboard's pages as HTTP answers: security headers, escaping, sign-in and the kept form, CSRF,
validation messages from the API's schemas, who sees what, and the files it serves."""

from __future__ import annotations

import re
import shlex
import sys

import pytest

from fakes.api_v1 import FAKE_TRAINER, ROOT, api_context, stored_job, wait_for_state
from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app
from hubferry.domain.jobs import ErrorInfo, JobState
from hubferry.web.forms import DRAFT_MAX_AGE_S, DraftSigner

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def ctx(tmp_path, hf_env):
    return api_context(tmp_path)


@pytest.fixture
def app(ctx):
    return create_app(ctx, run_consumer=False)


@pytest.fixture
def users(app):
    return TestUsers.of(app)


def local_form(tmp_path, csrf: str = "", **fields: str) -> dict[str, str]:
    out = tmp_path / "out"
    return {"csrf_token": csrf, "trainer": "local", "name": "web job", "skip_preflight": "on",
            "command": shlex.join([sys.executable, FAKE_TRAINER, "--output", str(out), "--steps", "3",
                                   "--step-s", "0.01"]),
            "output_dir": str(out), "cwd": str(ROOT), **fields}


def test_every_page_has_a_strict_csp_and_nosniff_and_loads_scripts_only_from_the_server(app, users):
    ann = users.browser(app, "ann")
    for path in ("/jobs", "/jobs/new", "/settings", "/signin", "/jobs/job_nope", "/static/web/app.js",
                 "/static/web/vendor/htmx.min.js"):
        response = ann.client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe" not in csp and "frame-ancestors 'none'" in csp, path
    page = ann.client.get("/jobs").text
    assert re.findall(r"<script\b[^>]*>", page) == [
        f'<script src="/static/web/{name}" defer>' for name in ("vendor/htmx.min.js", "vendor/htmx-ext-sse.min.js",
                                                                  "app.js")]
    assert not re.search(r"\son[a-z]+\s*=", page) and "javascript:" not in page  # no inline handlers
    assert 'src="http' not in page and "href=\"http" not in page.split("<main")[0]  # no CDN


def test_names_logs_and_errors_from_users_and_trainers_are_escaped(app, ctx, users, tmp_path):
    job = stored_job(ctx, "ann", name="x", trainer="local")
    log = tmp_path / "job.log"
    log.write_text(f"step 1/2 {HOSTILE}\n")
    ctx.jobs.transition(job.id, JobState.QUEUED, JobState.FAILED,
                        error=ErrorInfo("file_error", f"bad {HOSTILE}", f"hint {HOSTILE}"))
    with ctx.jobs.engine.begin() as conn:
        from hubferry.store import tables
        conn.execute(tables.jobs.update().where(tables.jobs.c.id == job.id).values(name=HOSTILE, log_path=str(log)))
    ann = users.browser(app, "ann")
    pages = [ann.client.get(p).text for p in (f"/jobs/{job.id}", "/jobs", f"/jobs/{job.id}/parts/log",
                                              f"/jobs/{job.id}/parts/status")]
    for page in pages:
        assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in pages[0]
    assert "bad &lt;script&gt;" in pages[3] and "hint &lt;script&gt;" in pages[3]


def test_a_signed_out_form_is_kept_signed_across_sign_in_and_starts_the_job(app, ctx, users, tmp_path):
    password = users.add("root", admin=True)
    from fastapi.testclient import TestClient

    browser = TestClient(app)
    answer = browser.post("/jobs/new", data=local_form(tmp_path))
    assert answer.status_code == 200 and "Sign in &amp; start training" in answer.text
    assert ctx.jobs.list_jobs(limit=5) == []
    draft = answer.text.split('name="draft" value="')[1].split('"')[0]
    signed_in = browser.post("/signin", data={"username": "root", "password": password, "draft": draft,
                                              "next": "/jobs"}, follow_redirects=False)
    assert signed_in.status_code == 303 and signed_in.headers["location"].startswith("/jobs/job_")
    [job] = ctx.jobs.list_jobs(limit=5)
    assert job.owner == "root" and job.name == "web job" and job.params["command"][1] == FAKE_TRAINER
    assert "hubferry_session" in signed_in.headers["set-cookie"]


def test_a_tampered_or_expired_draft_never_runs(app, ctx, users, tmp_path):
    password = users.add("root", admin=True)
    from fastapi.testclient import TestClient

    browser = TestClient(app)
    draft = browser.post("/jobs/new", data=local_form(tmp_path)).text.split('name="draft" value="')[1].split('"')[0]
    payload, tag = draft.rsplit(".", 1)
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + tag
    answer = browser.post("/signin", data={"username": "root", "password": password, "draft": forged},
                          follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/jobs/new?expired=1"
    assert ctx.jobs.list_jobs(limit=5) == []
    signer = DraftSigner(lambda: b"k" * 32, clock=lambda: 1000.0)
    old = signer.sign({"trainer": "local", "command": "true"})
    assert signer.read(old) == {"trainer": "local", "command": "true"}
    assert DraftSigner(lambda: b"k" * 32, clock=lambda: 1001.0 + DRAFT_MAX_AGE_S).read(old) is None
    assert DraftSigner(lambda: b"j" * 32, clock=lambda: 1000.0).read(old) is None


def test_a_signed_in_form_without_the_csrf_token_is_refused(app, ctx, users, tmp_path):
    root = users.browser(app, "root", admin=True)
    refused = root.client.post("/jobs/new", data=local_form(tmp_path))
    assert refused.status_code == 403 and ctx.jobs.list_jobs(limit=5) == []
    cross = root.client.post("/jobs/new", data=local_form(tmp_path, root.csrf), headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403 and ctx.jobs.list_jobs(limit=5) == []
    made = root.client.post("/jobs/new", data=local_form(tmp_path, root.csrf), follow_redirects=False)
    assert made.status_code == 303
    job_id = made.headers["location"].rsplit("/", 1)[1]
    assert wait_for_state(root.client, job_id, {"trained", "failed"})["state"] == "trained"


def test_form_messages_are_the_apis_and_name_the_field(app, ctx, users, tmp_path):
    root = users.browser(app, "root", admin=True)
    bad = root.client.post("/jobs/new", data=local_form(tmp_path, root.csrf, total_steps="-3", repo_id="not a repo"))
    assert bad.status_code == 422 and ctx.jobs.list_jobs(limit=5) == []
    api = root.client.post("/api/v1/jobs", headers=root.csrf_headers,
                           json={"trainer": "local", "command": ["x"], "total_steps": -3}).json()["error"]
    steps_error = bad.text.split('id="e-total_steps"')[1].split("</p>")[0]
    assert api["message"].split(": ", 1)[1] in steps_error
    assert "namespace/name" in bad.text.split('id="e-repo_id"')[1].split("</p>")[0]
    assert 'value="web job"' in bad.text  # what was entered is kept

    ann = users.browser(app, "ann")
    refused = ann.client.post("/jobs/new", data=local_form(tmp_path, ann.csrf, trainer="local"))
    assert refused.status_code == 422 and "only administrators may run a command" in refused.text
    no_dataset = ann.client.post("/jobs/new", data={"csrf_token": ann.csrf, "trainer": "replicate"})
    assert "Field required" in no_dataset.text.split('id="e-dataset_upload_id"')[1].split("</p>")[0]


def test_another_users_job_is_not_found_anywhere_in_the_dashboard(app, ctx, users):
    job = stored_job(ctx, "carol", name="private-run")
    dave = users.browser(app, "dave")
    assert "private-run" not in dave.client.get("/jobs").text
    assert "private-run" not in dave.client.get("/jobs/parts/list").text
    for path in (f"/jobs/{job.id}", *(f"/jobs/{job.id}/parts/{p}" for p in ("progress", "status", "timeline", "log")),
                 f"/jobs/{job.id}/thumbnails/a.jpg"):
        answer = dave.client.get(path)
        assert answer.status_code == 404 and "private-run" not in answer.text, path
    admin = users.browser(app, "root", admin=True)
    assert "private-run" in admin.client.get("/jobs").text


def test_signed_out_pages_send_to_sign_in_and_back(app):
    from fastapi.testclient import TestClient

    browser = TestClient(app)
    answer = browser.get("/jobs/job_x?tab=log", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/signin?next=%2Fjobs%2Fjob_x%3Ftab%3Dlog"
    assert browser.get("/jobs/parts/list").status_code == 401
    assert browser.get("/", follow_redirects=False).headers["location"] == "/jobs/new"
    page = browser.get("/signin", params={"next": "https://evil.example/"}).text
    assert 'name="next" value="/jobs"' in page


def test_static_files_are_the_packages_own_and_nothing_else(app):
    from fastapi.testclient import TestClient

    browser = TestClient(app)
    assert browser.get("/static/web/vendor/htmx.min.js").headers["content-type"].startswith("text/javascript")
    assert browser.get("/static/web/app.css").headers["content-type"].startswith("text/css")
    for path in ("/static/web/../pages.py", "/static/web/%2e%2e/pages.py", "/static/web/vendor/README.md",
                 "/static/web/nope.js"):
        assert browser.get(path).status_code == 404, path
