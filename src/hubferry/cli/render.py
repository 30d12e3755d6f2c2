"""How jobs look in a terminal: the live watch, the end-of-job summary, the timeline, the job list."""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from hubferry.cli.console import err, out, plain, say
from hubferry.domain.jobs import FINAL_STATES, RESTING_STATES, Job, JobEvent, JobState
from hubferry.services.context import Context
from hubferry.tracking.logfile import tail as log_tail

#: How often `watch` re-reads the job.
WATCH_INTERVAL_S = 0.5
#: Log lines shown under the live bar (a fixed height, so the display does not jump).
TAIL_LINES = 4


def ended(job: Job) -> bool:
    return job.state in FINAL_STATES or job.state in RESTING_STATES


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA --:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"ETA {minutes:02d}:{secs:02d}"


def _tail(job: Job) -> str:
    lines = plain(log_tail(Path(job.log_path), lines=TAIL_LINES)).splitlines() if job.log_path else []
    lines = [line[:200] for line in lines][-TAIL_LINES:]
    return "\n".join(lines + [""] * (TAIL_LINES - len(lines)))


def watch_job(ctx: Context, job_id: str, *, show: bool = True, until: threading.Event | None = None) -> Job:
    """Show a live progress bar with stage, ETA and log tail until the job ends; returns the final job."""
    from hubferry.services import remote
    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), TaskProgressColumn(),
                   TextColumn("{task.fields[eta]}", markup=False), console=err, disable=not show)
    task = bar.add_task("queued", total=100, eta="")
    tail = Text()
    with Live(Group(bar, tail), console=err, refresh_per_second=4, transient=False) if show else nullcontext():
        while True:
            job = remote.refresh(ctx, job_id)  # a remote training is read from its provider when stale
            p = job.progress
            step = f" step {p.step}/{p.total_steps}" if p.step is not None and p.total_steps else ""
            loss = f" loss {p.loss:.4g}" if p.loss is not None else ""
            bar.update(task, completed=p.percent or 0, eta=format_eta(p.eta_seconds),
                       description=f"{job.state.value}{step}{loss}")
            tail.plain = _tail(job)
            if ended(job) or (until is not None and until.is_set()):
                break
            time.sleep(WATCH_INTERVAL_S)
    if show and not err.is_terminal:
        err.line()  # off a terminal, Rich leaves the display's last line open: what follows would join it
    return ctx.jobs.require(job_id)


def summary(job: Job) -> None:
    """One or two lines on how the job ended and what to do next."""
    if job.state is JobState.PUBLISHED:
        say("published and verified: ", f"{job.repo_url} (commit {job.commit_sha})", style="green")
        endpoint = str(job.params.get("hub_endpoint", ""))
        prefix = "" if endpoint.endswith("huggingface.co") else f"HF_ENDPOINT={endpoint} "
        say("download it back: ", f"{prefix}hf download {job.repo_id}   or in Python: "
            f"huggingface_hub.snapshot_download({job.repo_id!r}, endpoint={endpoint!r})")
    elif job.state is JobState.TRAINED:
        say("trained, not published: ", f"no Hub token configured; weights kept in {job.output_dir}. Store one "
            f"(`hubferry secrets set hf_token`) or pass it: `hubferry retry {job.id} --token TOKEN`.",
            style="yellow")
    elif job.state is JobState.CANCELLED:
        say("cancelled: ", f"job {job.id}", style="yellow")
    elif job.error is not None:
        say(f"{job.state.value} ({job.error.category}): ", job.error.message, style="red")
        if job.error.hint:
            say("  next step: ", job.error.hint)
    else:
        say(f"job {job.id} is {job.state.value}")


def _clock(at: datetime) -> str:
    return at.strftime("%H:%M:%S")


def _context(event: JobEvent) -> str:
    return "  ".join(f"{k}={v}" for k, v in event.context.items() if v not in (None, "", [], {}))


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


def job_table(jobs: list[Job]) -> None:
    """The job list: a table on a terminal (ids never shortened), tab-separated lines when piped."""
    rows = [
        (j.id, plain(j.name, keep_newlines=False), j.state.value,
         f"{j.progress.percent:.0f}%" if j.progress.percent is not None else "",
         plain(j.repo_url or j.repo_id, keep_newlines=False), j.updated_at.strftime("%Y-%m-%d %H:%M:%S"))
        for j in jobs
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
