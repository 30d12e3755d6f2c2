"""Helpers for tests of ``/api/v1``: a context and app with users, jobs made fast, a served app, SSE reading.

- :func:`api_context`: a context under ``tmp_path`` (127.0.0.1 allowed for webhooks).
- :class:`HeaderUsers`: a bare app whose caller is the ``X-User`` header (``X-Admin: 1`` for an admin),
  for tests that build the routers with injected parts (a notifier, a webhook sender).
- :func:`stored_job`: a job recorded straight in the store (no pre-flight, no run).
- :func:`serving`: the app on a real socket (uvicorn in a thread), for streams.
- :func:`sse_events`: the events of an SSE response, parsed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request

from fakes.serving import bound_socket, serve_in_thread
from hubferry.api.errors import install_error_handlers
from hubferry.api.principal import Principal
from hubferry.config import Settings
from hubferry.domain.jobs import Job, new_job
from hubferry.services.context import Context, open_context

ROOT = Path(__file__).parents[2]
FAKE_TRAINER = str(ROOT / "tests" / "fixtures" / "fake_trainer.py")


def api_context(tmp_path: Path, **settings: Any) -> Context:
    values: dict[str, Any] = {"home": tmp_path / "home", "fetch_allow_hosts": ("127.0.0.1",),
                              "retry_base_delay": 0.01, "max_attempts": 2, **settings}
    return open_context(Settings(**values))


def header_app(ctx: Context, *routers: Any) -> FastAPI:
    """An app of ``routers`` whose caller is named by the ``X-User`` header (``X-Admin: 1``: an admin)."""
    app = FastAPI()
    install_error_handlers(app)

    def authenticate(request: Request) -> Principal | None:
        name = request.headers.get("x-user")
        return Principal(name, is_admin=request.headers.get("x-admin") == "1") if name else None

    app.state.authenticate = authenticate
    for router in routers:
        app.include_router(router)
    return app


def as_user(name: str, *, admin: bool = False) -> dict[str, str]:
    return {"X-User": name, **({"X-Admin": "1"} if admin else {})}


def stored_job(ctx: Context, owner: str, *, name: str = "job", trainer: str = "local", **fields: Any) -> Job:
    """A queued job recorded straight in the store."""
    job = new_job(owner=owner, name=name, trainer=trainer, params={}, dataset="/data", repo_id=f"{owner}/{name}",
                  now=ctx.jobs.clock(), **fields)
    return ctx.jobs.create(job)


def local_job(out: Path, *, steps: int = 20, step_s: float = 0.02, **fields: Any) -> dict[str, Any]:
    """The body of a ``local`` job running the fake trainer into ``out``."""
    return {"trainer": "local", "command": [sys.executable, FAKE_TRAINER, "--output", str(out), "--steps",
                                            str(steps), "--step-s", str(step_s)],
            "output_dir": str(out), "total_steps": steps, "cwd": str(ROOT), **fields}


def wait_for_state(client: Any, job_id: str, states: set[str], timeout: float = 60.0, **kwargs: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}", **kwargs).json()
        if job.get("state") in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.get('state')}: {job}"
        time.sleep(0.05)


@dataclass
class Served:
    url: str
    app: FastAPI


@contextmanager
def serving(app: FastAPI) -> Iterator[Served]:
    """Serve ``app`` (lifespan included) with uvicorn on a free 127.0.0.1 port in a thread."""
    sock, url = bound_socket()
    with serve_in_thread(app, sock, name=f"api:{url}", timeout_graceful_shutdown=1):
        yield Served(url, app)


@dataclass(frozen=True)
class Sse:
    event: str | None
    id: str | None
    data: Any
    comment: str | None = None


def sse_events(lines: Iterator[str]) -> Iterator[Sse]:
    """Events (and comments, as ``Sse(comment=...)``) of an SSE stream given as its lines."""
    event = event_id = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data or event:
                yield Sse(event, event_id, json.loads("\n".join(data)) if data else None)
            event = event_id = None
            data = []
        elif line.startswith(":"):
            yield Sse(None, None, None, comment=line[1:].strip())
        else:
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                event = value
            elif key == "id":
                event_id = value
            elif key == "data":
                data.append(value)
