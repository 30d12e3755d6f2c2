"""``GET /api/models`` and ``GET /api/datasets``: what ``HfApi.list_models`` / ``list_datasets`` call.

Supported: ``author``, ``search`` (substring of the repo id), ``sort`` (``lastModified``,
``createdAt`` or ``id``; others sort by ``lastModified``), ``direction`` (``-1`` descending, the
default, or ``1``), ``limit``, and pages through a ``Link`` header. Repos carry no tags here, so a
``filter`` matches nothing. Private repos are listed to their owner only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from .api import MAX_OFFSET, iso
from .context import base_url, caller, context

router = APIRouter()

Text = Annotated[str | None, Query(max_length=256)]
Count = Annotated[int | None, Query(ge=1, le=MAX_OFFSET)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def _listing(
    request: Request, repo_type: str, author: str | None, search: str | None, sort: str | None,
    direction: int, limit: int | None, cursor: int, filtered: bool,
) -> JSONResponse:  # fmt: skip
    ctx = context(request)
    page = min(limit or ctx.settings.repos_page_size, ctx.settings.repos_page_size)
    if filtered:
        return JSONResponse([])
    rows = ctx.repos.list_repos(
        caller(request), repo_type=repo_type, author=author, search=search, sort=sort or "lastModified",
        descending=direction < 0, offset=cursor, limit=page + 1,
    )  # fmt: skip
    items: list[dict[str, Any]] = [
        {
            "_id": f"{repo.type}-{repo.pk}",
            "id": repo.repo_id,
            "author": repo.namespace,
            "private": repo.private,
            "sha": head,
            "createdAt": iso(repo.created_at),
            "lastModified": iso(date or repo.created_at),
            "downloads": 0,
            "likes": 0,
            "tags": [],
        }
        for repo, head, date in rows[:page]
    ]
    headers = {}
    if len(rows) > page and (limit is None or limit > page):
        query = {k: v for k, v in request.query_params.items() if k != "cursor"}
        url = f"{base_url(request)}{request.url.path}?{urlencode({**query, 'cursor': cursor + page})}"
        headers["Link"] = f'<{url}>; rel="next"'
    return JSONResponse(items, headers=headers)


def _route(repo_type: str) -> Callable[..., JSONResponse]:
    def listing(
        request: Request, author: Text = None, search: Text = None, sort: Text = None,
        direction: Annotated[int, Query(ge=-1, le=1)] = -1, limit: Count = None, cursor: Offset = 0,
        filter: Annotated[list[str] | None, Query()] = None,
    ) -> JSONResponse:  # fmt: skip
        return _listing(request, repo_type, author, search, sort, direction, limit, cursor, bool(filter))

    return listing


for _path, _type in (("/api/models", "model"), ("/api/datasets", "dataset")):
    router.add_api_route(_path, _route(_type), methods=["GET"])
