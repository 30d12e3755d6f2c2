"""Who is asking: the one identity seam of the API and the dashboard.

Routes never read a user name from a header, a query or the environment: they take a
:class:`Principal` from :func:`current_principal`, which asks the authenticator installed on the
app (``app.state.authenticate``, set by ``create_app``). Tests swap the authenticator or use
FastAPI's ``dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request


@dataclass(frozen=True)
class Principal:
    """An authenticated user."""

    #: The user name; jobs, datasets and secrets are owned by it.
    name: str
    is_admin: bool = False
    #: How the request authenticated: ``token`` (Bearer API token), ``session`` (dashboard cookie) or ``local``.
    via: str = "token"

    def may_see(self, owner: str) -> bool:
        return self.is_admin or owner == self.name


#: ``(request) -> Principal | None``: None when the request carries no valid credential.
Authenticator = Callable[[Request], "Principal | None"]


def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the request's principal, or 401 with a ``WWW-Authenticate`` challenge."""
    authenticate: Authenticator | None = getattr(request.app.state, "authenticate", None)
    principal = authenticate(request) if authenticate is not None else None
    if principal is None:
        raise HTTPException(status_code=401, detail="sign in, or send an API token as 'Authorization: Bearer ...'",
                            headers={"WWW-Authenticate": "Bearer"})
    return principal
