"""Test helpers for anything behind ``hubferry serve``'s sign-in: users, API tokens, signed-in clients.

Typical use::

    app = create_app(ctx, run_consumer=False)
    users = TestUsers.of(app)
    alice = users.token_client(app, "alice")        # sends alice's API token as a Bearer header
    bob = users.browser(app, "bob")                 # signed in by cookie, like the dashboard
    bob.client.post("/api/v1/tokens", headers=bob.csrf_headers)

Users are created on first mention, with random passwords kept here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from hubferry.accounts.users import Accounts


@dataclass
class Browser:
    """A client signed in with the session cookie, and the session's CSRF token."""

    client: Any  # fastapi.testclient.TestClient (imported lazily: it needs httpx)
    csrf: str
    user: str

    @property
    def csrf_headers(self) -> dict[str, str]:
        """The header every state-changing request of this session must carry."""
        return {"X-CSRF-Token": self.csrf}


@dataclass
class TestUsers:
    """Users of one job database, with their passwords, for tests."""

    __test__ = False  # not a test class, despite the name

    engine: Engine
    is_admin: dict[str, bool] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.accounts = Accounts.on(self.engine)

    @classmethod
    def of(cls, app: Any) -> TestUsers:
        """The users of the database behind an app made by ``create_app``."""
        return cls(app.state.authenticate.accounts.store.engine)

    def add(self, name: str, *, admin: bool = False) -> str:
        """Create ``name`` unless it exists; returns its password."""
        if name not in self.passwords:
            self.passwords[name] = self.accounts.create_user(name, admin=admin)[1]
            self.is_admin[name] = admin
        return self.passwords[name]

    def token(self, name: str, *, admin: bool = False, label: str = "test") -> str:
        """A new API token of ``name`` (created first if needed)."""
        self.add(name, admin=admin)
        return self.accounts.create_token(name, label).secret

    def token_client(self, app: Any, name: str, *, admin: bool = False) -> Any:
        """A ``TestClient`` of ``app`` sending a new API token of ``name``."""
        from fastapi.testclient import TestClient

        return TestClient(app, headers={"Authorization": f"Bearer {self.token(name, admin=admin)}"})

    def browser(self, app: Any, name: str, *, admin: bool = False) -> Browser:
        """A ``TestClient`` of ``app`` signed in as ``name`` through ``POST /api/v1/session``."""
        from fastapi.testclient import TestClient

        client = TestClient(app)
        response = client.post("/api/v1/session", json={"username": name, "password": self.add(name, admin=admin)})
        assert response.status_code == 200, response.text
        return Browser(client, response.json()["csrf_token"], name)
