"""The registry's HTML pages: the repo list, and one page per repo with its files and history.

Rendered with Jinja2 with autoescaping on, so every value from the database or the request is
escaped. Visitors see public repos; after signing in (:mod:`hubferry.registry.account`) they also see
their private repos. Files link to signed, expiring downloads, so no token is needed in the browser.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from . import storage
from .api import iso
from .context import param
from .httperrors import HubHTTPError
from .resolve import download_url
from .security import page_policy
from .session import PageState, keep_nonce, page_state

router = APIRouter()

#: Commits shown on a repo page.
HISTORY_LENGTH = 100
#: Files listed on a repo page.
FILES_SHOWN = 1000

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("hubferry.registry", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_STYLE = _ENV.loader.get_source(_ENV, "_style.html")[0]  # type: ignore[union-attr]
_STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
#: The pages' Content-Security-Policy: their one stylesheet, no script at all.
PAGE_POLICY = page_policy(_STYLE_HASH)


def render(state: PageState, template: str, title: str, status: int = 200, **values: Any) -> HTMLResponse:
    """A page from ``template``, with the page CSP, no caching, and the CSRF nonce cookie."""
    html = _ENV.get_template(template).render(
        title=title, principal=state.principal, csrf=state.csrf, style=Markup(_STYLE), **values
    )
    headers = {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"}
    response = HTMLResponse(html, status_code=status, headers=headers)
    keep_nonce(state, response)
    return response


def message(state: PageState, status: int, text: str, back: str = "/") -> HTMLResponse:
    """A page that only says ``text`` (errors and refusals)."""
    title = "Not found" if status == 404 else "Sorry" if status >= 400 else "Done"
    return render(state, "message.html", title, status, message=text, back=back, error=status >= 400)


def human_size(n: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    state = page_state(request)
    repos = [
        {
            "id": repo.repo_id,
            "link": "/" + "/".join(quote(part, safe="") for part in repo.url_path.split("/")),
            "private": repo.private,
            "type": repo.type,
            "head": head or "",
            "updated": iso(date) if date else "",
        }
        for repo, head, date in state.ctx.repos.list_repos(state.principal)
    ]
    return render(state, "index.html", "Repositories", repos=repos)


def _repo_page(request: Request, rtype: str, ns: str, name: str) -> HTMLResponse:
    state = page_state(request)
    ctx = state.ctx
    try:
        repo = ctx.repos.visible(state.principal, rtype, param(ns), param(name))
    except HubHTTPError:
        hint = "" if state.principal.user else " If it is private, sign in first."
        return message(state, 404, f"Repository {ns}/{name} not found.{hint}")
    with storage.reading(ctx.engine) as conn:
        head = ctx.repos.resolve(conn, repo, "main")
        rows = ctx.repos.entries(conn, repo, head, recursive=True, kind="file", limit=FILES_SHOWN + 1)
    files = [
        {
            "path": row.path,
            "size": human_size(row.size),
            "lfs": row.lfs,
            "hash": row.sha256 if row.lfs else row.oid,
            # Relative links: the browser is already on the registry's origin.
            "url": download_url(ctx, "", repo, state.principal, row.sha256, row.size, head, row.path.split("/")[-1]),
        }
        for row in rows[:FILES_SHOWN]
    ]
    commits = [
        {"oid": c.oid, "title": c.title, "author": c.author, "date": iso(c.created_at)}
        for c in ctx.repos.commits(repo, head)[:HISTORY_LENGTH]
    ]
    return render(
        state, "repo.html", repo.repo_id, repo=repo, head=head, files=files, commits=commits,
        more_files=len(rows) > FILES_SHOWN, files_shown=FILES_SHOWN, link_minutes=ctx.settings.url_ttl_s // 60,
    )  # fmt: skip


@router.get("/datasets/{ns}/{name}", response_class=HTMLResponse)
def dataset_page(request: Request, ns: str, name: str) -> HTMLResponse:
    return _repo_page(request, "dataset", ns, name)


@router.get("/{ns}/{name}", response_class=HTMLResponse)
def model_page(request: Request, ns: str, name: str) -> HTMLResponse:
    return _repo_page(request, "model", ns, name)
