"""The registry's pages for people: sign in with a token, see private repos, download, manage tokens."""

from __future__ import annotations

import os
import re
import time
import uuid

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hubferry.testing import RunningRegistry


def _csrf(page: httpx2.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


@pytest.fixture
def browser(registry: RunningRegistry) -> httpx2.Client:
    # A browser sends Origin with form posts; the cookie jar keeps the session.
    return httpx2.Client(base_url=registry.endpoint, timeout=20, headers={"origin": registry.endpoint})


def _sign_in(browser: httpx2.Client, token: str) -> httpx2.Response:
    return browser.post("/login", data={"token": token, "csrf": _csrf(browser.get("/login"))})


def test_signing_in_shows_private_repos_files_and_history(
    browser: httpx2.Client, api: HfApi, alice_token: str
) -> None:
    private = f"alice/private-{uuid.uuid4().hex[:8]}"
    api.create_repo(private, private=True)
    weights = os.urandom(3 * 1024 * 1024 // 2)
    api.upload_file(path_or_fileobj=weights, path_in_repo="weights/model.safetensors", repo_id=private,
                    commit_message="Add the weights")  # fmt: skip
    api.upload_file(path_or_fileobj=b'{"dim": 4}', path_in_repo="config.json", repo_id=private)

    assert private not in browser.get("/").text
    assert browser.get(f"/{private}").status_code == 404

    signed_in = _sign_in(browser, alice_token)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
    index = browser.get("/")
    assert "Signed in as <strong>alice</strong>" in index.text and private in index.text

    page = browser.get(f"/{private}")
    assert page.status_code == 200
    assert "weights/model.safetensors" in page.text and "1.5 MiB" in page.text and "10 B" in page.text
    assert "Add the weights" in page.text and "initial commit" in page.text
    links = dict(re.findall(r'<a href="([^"]+)" download>([^<]+)</a>', page.text))
    by_name = {name: href.replace("&amp;", "&") for href, name in links.items()}
    assert browser.get(by_name["weights/model.safetensors"]).content == weights
    assert browser.get(by_name["config.json"]).content == b'{"dim": 4}'

    signed_out = browser.post("/logout", data={"csrf": _csrf(index)})
    assert signed_out.status_code == 303
    assert private not in browser.get("/").text


def test_a_wrong_token_is_explained(browser: httpx2.Client) -> None:
    response = _sign_in(browser, "hf_" + "x" * 34)
    assert response.status_code == 401
    assert "not valid" in response.text
    assert "hubferry_session" not in response.headers.get("set-cookie", "")


def test_tokens_page_creates_lists_and_revokes(browser: httpx2.Client, registry: RunningRegistry) -> None:
    assert browser.get("/settings/tokens").headers["location"] == "/login"
    _sign_in(browser, registry.create_token("nina"))
    page = browser.get("/settings/tokens")
    assert page.status_code == 200 and "Access tokens of nina" in page.text

    created = browser.post("/settings/tokens", data={"name": "laptop", "role": "write", "csrf": _csrf(page)})
    assert created.status_code == 200 and "shown only this once" in created.text
    (token,) = re.findall(r"hf_[A-Za-z]{34}", created.text)
    nina = HfApi(endpoint=registry.endpoint, token=token)
    assert nina.whoami()["auth"]["accessToken"] == {"displayName": "laptop", "role": "write"}

    used = re.compile(r"<td>laptop</td>\s*<td>write</td>.*?<td>\d{4}-\d\d-\d\dT[^<]+</td><td>\d{4}", re.S)
    deadline = time.monotonic() + 5
    while not used.search(listing := browser.get("/settings/tokens").text) and time.monotonic() < deadline:
        time.sleep(0.05)  # "last used" is recorded in the background
    assert used.search(listing), "created and last-used times are listed"
    assert f"{token[:9]}…" in listing and token not in listing
    laptop_id = re.findall(r'action="/settings/tokens/(\d+)/revoke"', listing)[-1]
    assert browser.post(f"/settings/tokens/{laptop_id}/revoke", data={"csrf": _csrf(page)}).status_code == 303
    assert "<td>laptop</td>" not in browser.get("/settings/tokens").text
    with pytest.raises(HfHubHTTPError) as caught:
        nina.whoami()
    assert caught.value.response.status_code == 401


def test_pages_show_sign_in_hints_when_anonymous(browser: httpx2.Client) -> None:
    index = browser.get("/")
    assert '<a href="/login">Sign in</a>' in index.text
    missing = browser.get("/alice/does-not-exist")
    assert missing.status_code == 404 and "sign in" in missing.text.lower()
