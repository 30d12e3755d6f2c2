"""How jobs look in a terminal: the live watch, the end-of-job summary, the timeline, the job list."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from hubferry.cli.console import err, out, plain, say
from hubferry.domain.jobs import (
    FINAL_STATES,
    RESTING_STATES,
    ErrorInfo,
    EventKind,
    Job,
    JobEvent,
    JobState,
    StageProgress,
)
from hubferry.services.context import Context
from hubferry.tracking.logfile import tail as log_tail

#: How often `watch` re-reads the job.
WATCH_INTERVAL_S = 0.5
#: Log lines shown under the live bar (a fixed height, so the display does not jump).
TAIL_LINES = 4


@dataclass(frozen=True)
class JobView:
    """A job as the renderers take it: its JSON (:func:`hubferry.services.views.job_dict` here, the API's answer
    through a service: the same shape), so a job looks the same whichever side describes it."""

    data: Mapping[str, Any]

    @classmethod
    def of(cls, job: Job | JobView, events: list[JobEvent] | None = None) -> JobView:
        """``job`` as a view (with its timeline when ``events`` are given)."""
        if isinstance(job, JobView):
            return job
        from hubferry.services.views import job_dict

        return cls(job_dict(job, events))

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def state(self) -> JobState:
        return JobState(self.data["state"])

    @property
    def progress(self) -> StageProgress:
        p = self.data.get("progress") or {}
        return StageProgress(stage=p.get("stage"), percent=p.get("percent"), step=p.get("step"),
                             total_steps=p.get("total_steps"), loss=p.get("loss"), eta_seconds=p.get("eta_seconds"))

    @property
    def error(self) -> ErrorInfo | None:
        error = self.data.get("error")
        return ErrorInfo.from_dict(error) if error else None

    @property
    def timeline(self) -> list[JobEvent]:
        return [JobEvent(job_id=self.id, seq=int(e["seq"]), at=datetime.fromisoformat(e["at"]),
                         kind=EventKind(e["kind"]), stage=e.get("stage"), message=e.get("message") or "",
                         context=e.get("context") or {})
                for e in self.data.get("timeline") or []]

    def get(self, key: str) -> Any:
        return self.data.get(key)


def ended(job: Job | JobView | JobState) -> bool:
    state = job if isinstance(job, JobState) else job.state
    return state in FINAL_STATES or state in RESTING_STATES


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA --:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"ETA {minutes:02d}:{secs:02d}"


def tail_lines(text: str) -> str:
    """The last :data:`TAIL_LINES` lines of log text, printable and padded to a fixed height."""
    lines = [line[:200] for line in plain(text).splitlines()][-TAIL_LINES:]
    return "\n".join(lines + [""] * (TAIL_LINES - len(lines)))


@dataclass(frozen=True)
class Snapshot:
    """What the live display shows of a job at one moment."""

    state: JobState
    progress: StageProgress
    #: The last lines of its log.
    tail: str = ""


def show_live(snapshots: Iterable[Snapshot], *, show: bool = True) -> None:
    """A live progress bar with stage, ETA and log tail, redrawn for each snapshot until they stop coming."""
    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[eta]}", markup=False), console=err, disable=not show)
    task = bar.add_task("queued", total=100, eta="")
    tail = Text()
    with Live(Group(bar, tail), console=err, refresh_per_second=4, transient=False) if show else nullcontext():
        for snap in snapshots:
            p = snap.progress
            step = f" step {p.step}/{p.total_steps}" if p.step is not None and p.total_steps else ""
            loss = f" loss {p.loss:.4g}" if p.loss is not None else ""
            bar.update(task, completed=p.percent or 0, eta=format_eta(p.eta_seconds),
                       description=f"{snap.state.value}{step}{loss}")
            tail.plain = tail_lines(snap.tail)
    if show and not err.is_terminal:
        err.line()  # off a terminal, Rich leaves the display's last line open: what follows would join it


def watch_job(ctx: Context, job_id: str, *, show: bool = True, until: threading.Event | None = None) -> Job:
    """Show a job of the local database live until it ends (or ``until`` is set); returns the final job."""
    from hubferry.services import remote

    def snapshots() -> Iterable[Snapshot]:
        while True:
            job = remote.refresh(ctx, job_id)  # a remote training is read from its provider when stale
            text = log_tail(Path(job.log_path), lines=TAIL_LINES) if job.log_path else ""
            yield Snapshot(job.state, job.progress, text)
            if ended(job) or (until is not None and until.is_set()):
                return
            time.sleep(WATCH_INTERVAL_S)

    show_live(snapshots(), show=show)
    return ctx.jobs.require(job_id)


def summary(job: Job | JobView) -> None:
    """One or two lines on how the job ended and what to do next."""
    view = JobView.of(job)
    state, error = view.state, view.error
    if state is JobState.PUBLISHED:
        say("published and verified: ", f"{view.get('repo_url')} (commit {view.get('commit_sha')})", style="green")
        endpoint, repo_id = str(view.get("endpoint") or ""), str(view.get("repo_id"))
        prefix = "" if endpoint.endswith("huggingface.co") else f"HF_ENDPOINT={endpoint} "
        say("download it back: ", f"{prefix}hf download {repo_id}   or in Python: "
            f"huggingface_hub.snapshot_download({repo_id!r}, endpoint={endpoint!r})")
    elif state is JobState.TRAINED:
        say("trained, not published: ", f"no Hub token configured; weights kept in {view.get('output_dir')}. Store "
            f"one (`hubferry secrets set hf_token`) or pass it: `hubferry retry {view.id} --token TOKEN`.",
            style="yellow")
    elif state is JobState.CANCELLED:
        say("cancelled: ", f"job {view.id}", style="yellow")
    elif error is not None:
        say(f"{state.value} ({error.category}): ", error.message, style="red")
        if error.hint:
            say("  next step: ", error.hint)
    else:
        say(f"job {view.id} is {state.value}")


def exit_code(job: JobView) -> int:
    """0 when published (or trained with publishing skipped), the trainer's own code when its training failed
    (from the timeline), else 1."""
    if job.state in (JobState.PUBLISHED, JobState.TRAINED):
        return 0
    if job.state is JobState.FAILED:
        for event in reversed(job.timeline):
            code = event.context.get("exit_code") if event.kind is EventKind.STAGE_FAILED else None
            if isinstance(code, int) and 0 < code < 256:
                return code
    return 1


def _clock(at: datetime) -> str:
    return at.strftime("%H:%M:%S")


def _context(event: JobEvent) -> str:
    return "  ".join(f"{k}={_value(v)}" for k, v in event.context.items() if v not in (None, "", [], {}))


def _value(value: Any) -> str:
    """A timeline detail as a reader wants it: a list by its length, a table as compact JSON, never a repr."""
    if isinstance(value, list | tuple):
        return f"{len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def timeline(events: list[JobEvent]) -> Table:
    """The job's timeline as a readable table: when, +seconds since submit, what, details."""
    table = Table("at", "+s", "stage", "event", "details", box=None, pad_edge=False, show_edge=False)
    start = events[0].at if events else None
    for e in events:
        offset = f"{(e.at - start).total_seconds():.1f}" if start else ""
        details = "  ".join(part for part in (e.message, _context(e)) if part)
        table.add_row(_clock(e.at), offset, e.stage or "", e.kind.value,
                      Text(plain(details, keep_newlines=False)[:400]))
    return table


def job_table(jobs: Sequence[Job | JobView]) -> None:
    """The job list: a table on a terminal (ids never shortened), tab-separated lines when piped."""
    views = [JobView.of(j) for j in jobs]
    rows = [
        (j.id, plain(j.get("name"), keep_newlines=False), j.state.value,
         f"{j.progress.percent:.0f}%" if j.progress.percent is not None else "",
         plain(j.get("repo_url") or j.get("repo_id"), keep_newlines=False),
         datetime.fromisoformat(str(j.get("updated_at"))).strftime("%Y-%m-%d %H:%M:%S"))
        for j in views
    ]
    if not out.is_terminal:
        for row in rows:
            out.file.write("\t".join(row) + "\n")
        return
    table = Table(box=None)
    width = max((len(r[0]) for r in rows), default=2)
    table.add_column("id", no_wrap=True, min_width=width)
    for name in ("name", "state", "progress", "repo", "updated"):
        table.add_column(name, overflow="ellipsis", no_wrap=name != "repo")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    out.print(table)
