"""Attacks on the sign-in pages: forged forms (CSRF), stolen or forged cookies, privilege escalation
through a read-only session, and script injection through names shown on the pages."""

from __future__ import annotations

import re
import time
from http.cookies import SimpleCookie
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi

from hubferry.registry.auth import list_tokens
from hubferry.registry.signing import Signer
from hubferry.registry.storage import make_engine
from hubferry.testing import RunningRegistry, running_registry


def _csrf(page: httpx2.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def _browser(registry: RunningRegistry) -> httpx2.Client:
    return httpx2.Client(base_url=registry.endpoint, timeout=20, headers={"origin": registry.endpoint})


def _sign_in(registry: RunningRegistry, token: str) -> httpx2.Client:
    browser = _browser(registry)
    response = browser.post("/login", data={"token": token, "csrf": _csrf(browser.get("/login"))})
    assert response.status_code == 303, response.text
    return browser


def _user_tokens(registry: RunningRegistry, user: str) -> list:
    engine = make_engine(registry.data_dir)
    try:
        return list_tokens(engine, user)
    finally:
        engine.dispose()


def test_cookies_are_httponly_strict_and_expire(registry: RunningRegistry, alice_token: str) -> None:
    browser = _browser(registry)
    login = browser.get("/login")
    signed_in = browser.post("/login", data={"token": alice_token, "csrf": _csrf(login)})
    for response in (login, signed_in):
        cookie = SimpleCookie(response.headers["set-cookie"])
        (morsel,) = cookie.values()
        assert morsel["httponly"] and morsel["samesite"].lower() == "strict"
        assert int(morsel["max-age"]) > 0 and morsel["path"] == "/"
    assert "hubferry_session" in signed_in.headers["set-cookie"]
    assert alice_token not in signed_in.headers["set-cookie"]


def test_cookies_are_secure_behind_an_https_public_url(tmp_path: Path) -> None:
    with running_registry(tmp_path, public_url="https://hub.example.test") as hub:
        page = httpx2.get(f"{hub.endpoint}/login")
    assert "Secure" in page.headers["set-cookie"]


@pytest.mark.parametrize(
    ("form", "origin"),
    [
        ({}, None),  # no CSRF token
        ({"csrf": "0" * 32}, None),  # a made-up one
        ("valid", "https://evil.example"),  # the right token, sent from another site
        ("valid", "null"),  # sandboxed frame
    ],
)
def test_a_forged_sign_in_form_is_refused(
    registry: RunningRegistry, alice_token: str, form: object, origin: str | None
) -> None:
    browser = _browser(registry)
    csrf = _csrf(browser.get("/login"))
    data = {"token": alice_token, **({"csrf": csrf} if form == "valid" else form)}  # type: ignore[dict-item]
    headers = {"origin": origin} if origin else {}
    response = browser.post("/login", data=data, headers=headers)
    assert response.status_code == 403
    assert "hubferry_session" not in response.headers.get("set-cookie", "")


def test_a_forged_token_form_creates_nothing(registry: RunningRegistry) -> None:
    token = registry.create_token("victor")
    browser = _sign_in(registry, token)
    before = len(_user_tokens(registry, "victor"))
    cross_site = browser.post("/settings/tokens", data={"name": "stolen", "role": "write",
                                                          "csrf": _csrf(browser.get("/settings/tokens"))},
                              headers={"origin": "https://evil.example"})  # fmt: skip
    no_csrf = browser.post("/settings/tokens", data={"name": "stolen", "role": "write"})
    other_session_csrf = _csrf(_sign_in(registry, token).get("/settings/tokens"))
    foreign = browser.post("/settings/tokens", data={"name": "stolen", "role": "write", "csrf": other_session_csrf})
    for response in (cross_site, no_csrf, foreign):
        assert response.status_code == 403 and "hf_" not in re.sub(r"hf_[A-Za-z]{6}…", "", response.text)
    assert len(_user_tokens(registry, "victor")) == before


def test_a_read_only_session_cannot_mint_a_write_token(registry: RunningRegistry) -> None:
    browser = _sign_in(registry, registry.create_token("rita", read_only=True))
    page = browser.get("/settings/tokens")
    assert 'value="write"' not in page.text
    response = browser.post("/settings/tokens", data={"name": "escalate", "role": "write", "csrf": _csrf(page)})
    assert response.status_code == 403
    assert {t.role for t in _user_tokens(registry, "rita")} == {"read"}


def test_revoking_a_token_ends_its_sessions(registry: RunningRegistry, api: HfApi) -> None:
    token = registry.create_token("sam")
    browser, other = _sign_in(registry, token), _sign_in(registry, token)
    assert "Signed in as" in browser.get("/").text
    (info,) = _user_tokens(registry, "sam")
    response = browser.post(f"/settings/tokens/{info.id}/revoke", data={"csrf": _csrf(browser.get("/settings/tokens"))})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    for client in (browser, other):
        assert "Signed in as" not in client.get("/").text
        assert client.get("/settings/tokens").status_code == 303


def test_a_user_cannot_revoke_someone_elses_token(registry: RunningRegistry) -> None:
    registry.create_token("vera")
    (victim,) = _user_tokens(registry, "vera")
    browser = _sign_in(registry, registry.create_token("mallet"))
    page = browser.get("/settings/tokens")
    response = browser.post(f"/settings/tokens/{victim.id}/revoke", data={"csrf": _csrf(page)})
    assert response.status_code == 404
    assert [t.id for t in _user_tokens(registry, "vera")] == [victim.id]


def test_forged_and_expired_session_cookies_are_anonymous(registry: RunningRegistry, alice_token: str) -> None:
    browser = _sign_in(registry, alice_token)
    value = browser.cookies["hubferry_session"]
    token_id, expires, mac = value.split(".")
    key = (registry.data_dir / "signing.key").read_text().strip().encode()
    past = str(int(time.time()) - 10)
    forged = {
        "other token id": f"{int(token_id) + 1}.{expires}.{mac}",
        "later expiry": f"{token_id}.{int(expires) + 10**6}.{mac}",
        "expired": f"{token_id}.{past}.{Signer(key, 60).tag('session', token_id, past)}",
        "not ascii": "\u00e9\u00e9.1.x",
    }
    for why, cookie in forged.items():
        header = ("hubferry_session=" + cookie).encode()
        page = httpx2.get(f"{registry.endpoint}/", headers=[(b"cookie", header)])
        assert page.status_code == 200 and "Signed in as" not in page.text, why


def test_names_on_the_pages_are_escaped(registry: RunningRegistry, api: HfApi, repo_id: str) -> None:
    api.upload_file(path_or_fileobj=b"x", path_in_repo='"><svg onload=alert(1)>.txt', repo_id=repo_id,
                    commit_message="<script>alert(2)</script>")  # fmt: skip
    token = registry.create_token("xena")
    browser = _sign_in(registry, token)
    page = browser.get("/settings/tokens")
    created = browser.post("/settings/tokens", data={"name": "<script>alert(3)</script>", "role": "read",
                                                     "csrf": _csrf(page)})  # fmt: skip
    repo_page = browser.get(f"/{repo_id}")
    for text in (created.text, repo_page.text):
        assert "<script>alert" not in text and "<svg onload" not in text
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in created.text
    assert "&lt;svg onload=alert(1)&gt;.txt" in repo_page.text


def test_pages_are_not_cached_and_the_full_token_is_shown_once(registry: RunningRegistry) -> None:
    browser = _sign_in(registry, registry.create_token("tess"))
    page = browser.get("/settings/tokens")
    assert page.headers["cache-control"] == "no-store"
    created = browser.post("/settings/tokens", data={"name": "ci", "role": "read", "csrf": _csrf(page)})
    (new_token,) = re.findall(r"hf_[A-Za-z]{34}", created.text)
    assert new_token not in browser.get("/settings/tokens").text
    assert new_token[:9] in browser.get("/settings/tokens").text
