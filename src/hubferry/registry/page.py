"""The registry's HTML pages: a list of repos, and one page per repo with its files and history.

Server-rendered with ``string.Template``; every value from the database goes through
``html.escape``. Browsers send no token, so they see public repos only.
"""

from __future__ import annotations

import html
from importlib import resources
from string import Template
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from . import storage
from .api import iso
from .auth import ANONYMOUS, Principal
from .context import caller, context, param
from .httperrors import HubHTTPError

router = APIRouter()

#: Commits shown on a repo page.
HISTORY_LENGTH = 100

_TEMPLATE = Template(resources.files(__package__).joinpath("templates/index.html").read_text(encoding="utf-8"))


def _render(title: str, body: str, status: int = 200) -> HTMLResponse:
    page = _TEMPLATE.substitute(title=html.escape(title), body=body, home="/")
    return HTMLResponse(page, status_code=status)


def _principal(request: Request) -> Principal:
    try:
        return caller(request)
    except HubHTTPError:
        return ANONYMOUS


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    repos = context(request).repos.list_repos(_principal(request))
    if not repos:
        return _render("Repositories", '<p class="muted">No repositories yet.</p>')
    rows = []
    for repo, head, date in repos:
        link = "/" + "/".join(quote(part) for part in repo.url_path.split("/"))
        badge = ' <span class="badge">private</span>' if repo.private else ""
        rows.append(
            f'<tr><td><a href="{html.escape(link)}">{html.escape(repo.repo_id)}</a>{badge}</td>'
            f"<td>{html.escape(repo.type)}</td><td><code>{html.escape((head or '')[:12])}</code></td>"
            f"<td>{html.escape(iso(date) if date else '')}</td></tr>"
        )
    table = (
        "<table><thead><tr><th>Repository</th><th>Type</th><th>Head</th><th>Updated</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return _render("Repositories", table)


def _repo_page(request: Request, rtype: str, ns: str, name: str) -> HTMLResponse:
    ctx = context(request)
    try:
        repo = ctx.repos.visible(_principal(request), rtype, param(ns), param(name))
    except HubHTTPError:
        return _render("Not found", "<p>Repository not found.</p>", status=404)
    with storage.reading(ctx.engine) as conn:
        head = ctx.repos.resolve(conn, repo, "main")
        files = ctx.repos.entries(conn, repo, head, recursive=True, kind="file")
    history = ctx.repos.commits(repo, head)[:HISTORY_LENGTH]
    file_rows = "".join(
        f"<tr><td>{html.escape(f.path)}</td><td class='num'>{html.escape(_size(f.size))}</td>"
        f"<td>{'LFS' if f.lfs else ''}</td><td><code>{html.escape(f.sha256 if f.lfs else f.oid)}</code></td></tr>"
        for f in files
    )
    commit_rows = "".join(
        f"<tr><td><code>{html.escape(c.oid[:12])}</code></td><td>{html.escape(c.title)}</td>"
        f"<td>{html.escape(c.author)}</td><td>{html.escape(iso(c.created_at))}</td></tr>"
        for c in history
    )
    visibility = "private" if repo.private else "public"
    body = (
        f'<p class="muted">{html.escape(repo.type)} · {visibility} · head <code>{html.escape(head)}</code></p>'
        "<h2>Files</h2><table><thead><tr><th>Path</th><th>Size</th><th>Storage</th>"
        "<th>sha256 (LFS) / git oid</th></tr></thead>"
        f"<tbody>{file_rows}</tbody></table>"
        "<h2>History</h2><table><thead><tr><th>Commit</th><th>Title</th><th>Author</th><th>Date</th></tr></thead>"
        f"<tbody>{commit_rows}</tbody></table>"
    )
    return _render(repo.repo_id, body)


@router.get("/datasets/{ns}/{name}", response_class=HTMLResponse)
def dataset_page(request: Request, ns: str, name: str) -> HTMLResponse:
    return _repo_page(request, "dataset", ns, name)


@router.get("/{ns}/{name}", response_class=HTMLResponse)
def model_page(request: Request, ns: str, name: str) -> HTMLResponse:
    return _repo_page(request, "model", ns, name)
