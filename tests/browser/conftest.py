"""Fixtures for the dashboard in a real browser: Debian's Chromium driven by Playwright, against
``hubferry serve``'s app on a 127.0.0.1 port (uvicorn in a thread) with the session registry as the Hub.

Without ``/usr/bin/chromium`` the tests skip, except under ``CI=true``, where they fail: a missing
browser can never turn CI green. Screenshots go to ``tests/browser/artifacts/`` (ignored by git).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fakes.api_v1 import api_context, serving
from hubferry.accounts.testing import TestUsers
from hubferry.api.app import create_app
from hubferry.services.context import Context

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
#: Longest a user-visible change may take to show (the fake trainer's jobs finish in seconds).
WAIT_MS = 30_000


# Package scope: sync Playwright runs an event loop in this thread, which must stop before other tests
# (asyncio.run() refuses to start inside a running loop).
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    print(f"\nbrowser screenshots: {ARTIFACTS}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Dashboard:
    """A running server, its context and users, and a way to open pages as someone."""

    url: str
    ctx: Context
    users: TestUsers
    browser: Any
    contexts: list[Any] = field(default_factory=list)

    def page(self, *, width: int = 1280, height: int = 900, dark: bool = False) -> Any:
        context = self.browser.new_context(viewport={"width": width, "height": height},
                                           color_scheme="dark" if dark else "light", base_url=self.url)
        context.set_default_timeout(WAIT_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and print("browser console:", m.text))
        return page

    def sign_in(self, page: Any, name: str, *, admin: bool = False) -> None:
        password = self.users.add(name, admin=admin)
        page.goto("/signin")
        page.get_by_label("User name").fill(name)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/jobs")


def wait_until(condition: Callable[[], bool], timeout_s: float = WAIT_MS / 1000) -> None:
    """Poll ``condition`` until it holds (``page.wait_for_function`` evaluates a string: the CSP forbids it)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the page did not change in time"
        time.sleep(0.1)


def shoot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artifact."""
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def dashboard(browser: Any, tmp_path: Path, hf_env: Path, registry: Any) -> Iterator[Dashboard]:
    ctx = api_context(tmp_path, endpoint=registry.endpoint)
    app = create_app(ctx, run_consumer=False)
    with serving(app) as served:
        board = Dashboard(served.url, ctx, TestUsers.of(app), browser)
        try:
            yield board
        finally:
            for context in board.contexts:  # before the server stops, so no page polls a closed port
                context.close()
