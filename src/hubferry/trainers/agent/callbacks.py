"""The agent's HTTP client for the orchestrator's callbacks (docs/pod-agent.md): spec, report, publish-grant.

Every call carries the job token as a Bearer token. Network errors, 408, 429, 5xx and answers that are
not JSON (a proxy's error page while the orchestrator restarts) are retried with exponential backoff and
full jitter, honouring ``Retry-After``, until ``patience_s`` has passed; then :class:`TransientError`.
401, 403, 404 and 422 end at once with :class:`PermanentError` (a revoked token, a job that is gone, a body
the orchestrator refuses); a 409 from publish-grant is :class:`GrantRefused`, which the agent waits out.
Report bodies are bounded (:func:`bound_lines`): at most 500 lines and 256 KiB of lines per report.
:class:`Reporter` sends them in ``seq`` order: batched lines, state changes and heartbeats.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hubferry.errors import HubferryError, PermanentError, TransientError, ValidationError
from hubferry.logs import get_logger, printable

log = get_logger(__name__)

#: Report limits of the contract: lines per report, bytes of lines per report, characters per line.
MAX_LINES = 500
MAX_LINES_BYTES = 256 * 1024
MAX_LINE_CHARS = 4096
#: Longest ``message`` sent in a report.
MAX_MESSAGE_CHARS = 4096
#: Largest answer body read from the orchestrator (a spec holds a config, never a dataset).
MAX_ANSWER_BYTES = 1024 * 1024
#: Statuses retried: the orchestrator is restarting, overloaded or behind a proxy that is.
RETRIED_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Actions a report's answer may carry.
ACTIONS = ("continue", "publish", "cancel", "exit")
#: Phases a report may carry.
PHASES = ("starting", "training", "trained", "publishing", "published", "failed")
#: Lines kept while the orchestrator is unreachable; older ones are dropped (and counted).
MAX_PENDING_LINES = 20_000


class GrantRefused(PermanentError):
    """publish-grant answered 409: no usable Hub token is stored yet; the hint says how to store one."""

    default_category = "authentication"


@dataclass(frozen=True)
class Grant:
    """What publish-grant hands over: where to publish, and the token to publish with."""

    endpoint: str
    token: str
    repo_id: str
    private: bool
    revision: str
    commit_message: str
    #: Model card facts (``hubferry.hub.card.CardInfo`` fields) the orchestrator knows; may be empty.
    card: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # never show the token
        return f"Grant(endpoint={self.endpoint!r}, repo_id={self.repo_id!r}, revision={self.revision!r}, token=set)"


@dataclass(frozen=True)
class Report:
    """One report; ``lines`` should already be bounded (see :func:`bound_lines`)."""

    seq: int
    phase: str
    lines: tuple[str, ...] = ()
    exit_code: int | None = None
    message: str = ""
    stage: str | None = None
    result: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        return {"seq": self.seq, "phase": self.phase, "lines": list(self.lines), "exit_code": self.exit_code,
                "message": self.message[:MAX_MESSAGE_CHARS], "stage": self.stage, "result": self.result}


def cut_line(line: str) -> str:
    """``line`` at most :data:`MAX_LINE_CHARS` long, marked when it was cut."""
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 12] + " ...(cut)"


def bound_lines(lines: Sequence[str]) -> tuple[list[str], int]:
    """The longest head of ``lines`` (each cut to :data:`MAX_LINE_CHARS`) that one report may carry.

    Returns:
        The lines to send and how many of ``lines`` they use up (the rest waits for the next report).
    """
    taken: list[str] = []
    size = 0
    for line in lines:
        line = cut_line(line)
        cost = len(line.encode("utf-8", "replace")) + 4  # quotes, comma, space in the JSON array
        if len(taken) >= MAX_LINES or (taken and size + cost > MAX_LINES_BYTES):
            break
        taken.append(line)
        size += cost
    return taken, len(taken)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _error_text(response: httpx.Response) -> tuple[str, str]:
    """The message and hint of an ``{"error": {...}}`` answer (or the start of whatever came back)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return printable(response.text[:300], keep_newlines=False), ""
    if not isinstance(error, dict):  # not hubferry's error shape (FastAPI's own 422 says "detail")
        return printable(response.text[:300], keep_newlines=False), ""
    return (printable(str(error.get("message", ""))[:1000], keep_newlines=False),
            printable(str(error.get("hint", ""))[:500], keep_newlines=False))


class AgentCallbacks:
    """The three callbacks of one job.

    Args:
        callback_url: ``{public_url}/api/v1/agent/jobs/{job_id}``.
        token: the per-job token (sent only to ``callback_url``; never logged).
        patience_s: how long one call keeps retrying transient failures before it raises TransientError.
        base_delay, max_delay: the backoff's first and largest delay (full jitter).
        timeout_s: connect/read timeout of one attempt.
        transport: an httpx transport (tests pass one); default: a real connection.
        sleep, clock: how to wait and tell time (tests pass a fake pair that only advances when slept).
    """

    def __init__(
        self, callback_url: str, token: str, *, patience_s: float = 900.0, base_delay: float = 1.0,
        max_delay: float = 30.0, timeout_s: float = 30.0, transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = callback_url.rstrip("/")
        self.patience_s = patience_s
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.clock = clock
        self._client = httpx.Client(
            headers={"Authorization": f"Bearer {token}", "User-Agent": "hubferry-agent"},
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)), transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AgentCallbacks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the three calls --------------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """``GET /spec``: the job's spec as sent (the runner validates it)."""
        answer = self._call("GET", "spec", None)
        if not isinstance(answer, dict):
            raise ValidationError("the orchestrator's spec is not a JSON object", url=f"{self.url}/spec",
                                  hint="check that HUBFERRY_CALLBACK_URL points at hubferry's agent callbacks")
        return answer

    def report(self, report: Report) -> str:
        """``POST /report``; returns the action the orchestrator answered."""
        if report.phase not in PHASES:
            raise ValueError(f"unknown phase {report.phase!r}")
        answer = self._call("POST", "report", report.body())
        action = answer.get("action") if isinstance(answer, dict) else None
        if action not in ACTIONS:
            raise PermanentError(f"the orchestrator answered a report with {printable(str(action))[:40]!r}, "
                                 f"not one of {', '.join(ACTIONS)}", category="service_error",
                                 url=f"{self.url}/report", hint="the agent and the orchestrator disagree on the "
                                 "contract (docs/pod-agent.md): update the training image")
        return str(action)

    def publish_grant(self) -> Grant:
        """``POST /publish-grant``: the Hub target and token to publish with, read now.

        Raises:
            GrantRefused: 409, no usable token is stored yet (its message and hint say what to do).
        """
        answer = self._call("POST", "publish-grant", {}, refused_is_grant=True)
        fields = ("endpoint", "token", "repo_id", "revision")
        if not isinstance(answer, dict) or not all(isinstance(answer.get(k), str) and answer[k] for k in fields):
            raise PermanentError("the publish grant lacks endpoint, token, repo_id or revision",
                                 category="service_error", url=f"{self.url}/publish-grant",
                                 hint="the agent and the orchestrator disagree on the contract (docs/pod-agent.md)")
        return Grant(endpoint=answer["endpoint"].rstrip("/"), token=answer["token"], repo_id=answer["repo_id"],
                     private=answer.get("private") is not False, revision=answer["revision"],
                     commit_message=str(answer.get("commit_message") or "Upload with hubferry agent"),
                     card=dict(answer["card"]) if isinstance(answer.get("card"), dict) else {})

    # -- transport --------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None, *, refused_is_grant: bool = False) -> Any:
        url = f"{self.url}/{path}"
        started = self.clock()
        attempt = 0
        while True:
            attempt += 1
            delay: float | None = None
            try:
                response = self._client.request(method, url, json=body)
            except httpx.TransportError as exc:
                problem, status = f"{type(exc).__name__}: {printable(str(exc), keep_newlines=False)[:200]}", None
            else:
                status = response.status_code
                if 200 <= status < 300:
                    if len(response.content) > MAX_ANSWER_BYTES:
                        raise PermanentError(f"the answer to {method} {path} is larger than 1 MiB", url=url,
                                             status=status, category="service_error")
                    try:
                        return response.json()
                    except ValueError:
                        problem = f"the answer to {method} {path} is not JSON (status {status})"
                elif status in RETRIED_STATUSES:
                    message, _ = _error_text(response)
                    problem, delay = f"status {status}: {message}", _retry_after(response)
                else:
                    self._refuse(method, path, url, response, attempt, refused_is_grant)
            elapsed = self.clock() - started
            wait = delay if delay is not None else random.uniform(0, min(self.max_delay,
                                                                         self.base_delay * 2 ** (attempt - 1)))
            wait = min(wait, self.max_delay)
            if elapsed + wait > self.patience_s:
                raise TransientError(
                    f"{method} {path} kept failing for {elapsed:.0f}s: {problem}", url=url, status=status,
                    attempt=attempt, elapsed_s=round(elapsed, 1),
                    hint="the orchestrator (hubferry serve) is unreachable from the pod: check HUBFERRY_PUBLIC_URL "
                         "and that the service runs; the agent resumes where it stopped when restarted")
            log.warning("callback failed, retrying", call=f"{method} {path}", problem=problem, attempt=attempt,
                        retry_in_s=round(wait, 2))
            self.sleep(wait)

    def _refuse(self, method: str, path: str, url: str, response: httpx.Response, attempt: int,
                refused_is_grant: bool) -> None:
        status = response.status_code
        message, hint = _error_text(response)
        context: dict[str, Any] = {"url": url, "status": status, "attempt": attempt}
        if status == 409 and refused_is_grant:
            raise GrantRefused(message or "no usable Hub token is stored for this job", hint=hint, **context)
        if status in (401, 403):
            raise PermanentError(f"{method} {path} refused the job token ({status}): {message}",
                                 category="authentication", hint=hint or "the job's token was revoked (the job "
                                 "ended) or HUBFERRY_JOB_TOKEN is wrong", **context)
        if status == 404:
            raise PermanentError(f"{method} {path}: no such job ({message})", category="validation",
                                 hint=hint or "check HUBFERRY_CALLBACK_URL and HUBFERRY_JOB_ID", **context)
        if status == 422:
            raise PermanentError(f"{method} {path}: the orchestrator refused the body: {message}",
                                 category="validation", hint=hint or "the agent and the orchestrator disagree on "
                                 "the contract (docs/pod-agent.md): update the training image", **context)
        raise PermanentError(f"{method} {path} answered {status}: {message}", category="service_error",
                             hint=hint, **context)


class Reporter:
    """Sends reports in ``seq`` order: batched log lines, state changes, and a heartbeat every ``heartbeat_s``.

    Every report carries the agent's current state (phase, and the stage, message, exit code and result
    that go with it); a heartbeat repeats it with no lines. A report that could not be delivered is
    re-sent as it was (same ``seq``) before anything newer. The last action that asks for something
    (``publish``, ``cancel``, ``exit``) is kept for :meth:`take_action`.
    """

    def __init__(self, client: AgentCallbacks, seq_path: Path, *, heartbeat_s: float, interval_s: float) -> None:
        self.client = client
        self.seq_path = seq_path
        self.heartbeat_s = heartbeat_s
        self.interval_s = min(interval_s, heartbeat_s)
        self._lines: deque[str] = deque()
        self._dropped = 0
        self._state: dict[str, Any] = {"phase": "starting", "exit_code": None, "message": "", "stage": None,
                                       "result": None}
        self._unsent: Report | None = None
        self._lock = threading.Lock()  # lines and state
        self._send_lock = threading.Lock()  # one report at a time, in seq order
        self._changed = threading.Condition()
        self._action: str | None = None
        self._last_sent = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: A refusal (401/404/422) met by the heartbeat thread: the agent must stop.
        self.fatal: HubferryError | None = None

    # -- state ------------------------------------------------------------------------------------

    def add_line(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)
            if len(self._lines) > MAX_PENDING_LINES:
                self._lines.popleft()
                self._dropped += 1

    def _seq(self) -> int:
        try:
            last = int(self.seq_path.read_text().strip() or 0)
        except (OSError, ValueError):
            last = 0
        seq = last + 1
        temp = self.seq_path.with_name(self.seq_path.name + ".tmp")
        temp.write_text(str(seq))
        os.replace(temp, self.seq_path)
        return seq

    def _next(self) -> Report:
        with self._lock:
            if self._dropped:
                self._lines.appendleft(f"[hubferry agent] {self._dropped} earlier lines were dropped while the "
                                       "orchestrator was unreachable")
                self._dropped = 0
            lines, used = bound_lines(list(self._lines)[:1000])
            for _ in range(used):
                self._lines.popleft()
            state = dict(self._state)
        return Report(seq=self._seq(), lines=tuple(lines), **state)

    @property
    def phase(self) -> str:
        with self._lock:
            return str(self._state["phase"])

    def pending_lines(self) -> int:
        with self._lock:
            return len(self._lines)

    # -- sending ----------------------------------------------------------------------------------

    def send(self, phase: str | None = None, **fields: Any) -> str:
        """Change the state (when ``phase`` is given) and send every pending line (at least one report).

        Returns:
            The last action answered.

        Raises:
            TransientError: the orchestrator stayed unreachable (the report is kept and re-sent next time).
            PermanentError: the orchestrator refused the report.
        """
        if phase is not None:
            with self._lock:
                self._state = {"phase": phase, "exit_code": fields.get("exit_code"),
                               "message": fields.get("message", ""), "stage": fields.get("stage"),
                               "result": fields.get("result")}
        with self._send_lock:
            if self._unsent is not None:  # an older report first, as it was
                self._send_one()
            action = self._send_one()  # the current state
            while self.pending_lines():
                action = self._send_one()
            return action

    def _send_one(self) -> str:
        report = self._unsent or self._next()
        self._unsent = report
        action = self.client.report(report)
        self._unsent = None
        self._last_sent = time.monotonic()
        if action != "continue":
            with self._changed:
                # cancel and exit outrank a publish that was not taken yet
                if not (self._action in ("cancel", "exit") and action == "publish"):
                    self._action = action
                self._changed.notify_all()
        return action

    def take_action(self, timeout: float) -> str | None:
        """The pending ``publish``/``cancel``/``exit`` (consumed), waiting up to ``timeout`` for one."""
        with self._changed:
            if self._action is None and not self._stop.is_set():
                self._changed.wait(timeout)
            action, self._action = self._action, None
            return action

    def peek_action(self) -> str | None:
        with self._changed:
            return self._action

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- the heartbeat thread ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="agent-reporter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(min(0.2, self.interval_s)):
            since = time.monotonic() - self._last_sent
            due = since >= self.heartbeat_s or (since >= self.interval_s and self.pending_lines())
            if not due or not self._send_lock.acquire(blocking=False):
                continue
            try:
                self._send_one()
            except PermanentError as error:
                log.error("the orchestrator refused a report", error=str(error))
                self.fatal = error
                self.wake()
                return
            except TransientError as error:
                log.warning("report not delivered, kept for the next one", error=str(error))
            finally:
                self._send_lock.release()
