"""The pod agent's life (docs/pod-agent.md): spec, dataset, training child, reports, grant, publish, exit.

:func:`run` is what ``hubferry agent`` calls. The training runs as a child process in its own process
group (``python -m hubferry.trainers.agent.trl_train``); its output is streamed to the orchestrator in
batched ``training`` reports while a :class:`Reporter` thread heartbeats. On exit 0 the marker
``output/.hubferry-trained`` is written, so an agent restarted on the same volume publishes without
training again. Publishing uses hubferry's own publisher with the token the orchestrator grants *then*.

Exit codes: 0 told to exit (published, or the job is final); 2 bad environment or spec; 1 failed
(cancelled, the publish could not be reported, the orchestrator refused us); the training command's own
code when the training failed; 143 stopped by SIGTERM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from hubferry.config import Settings
from hubferry.errors import HubferryError, PermanentError, TransientError, ValidationError
from hubferry.logs import get_logger, printable, register_secret
from hubferry.trainers.agent.callbacks import AgentCallbacks, GrantRefused, Reporter, cut_line

if TYPE_CHECKING:
    from hubferry.training_config import TrainingConfigModel

log = get_logger(__name__)

#: The file, inside the output folder, that says the training finished (never published).
MARKER = ".hubferry-trained"
#: The last report number sent, kept on the volume so a restarted agent continues the sequence.
SEQ_FILE = ".hubferry-seq"
#: Longest a spec may ask between heartbeats.
MAX_HEARTBEAT_S = 3600.0
#: A publish progress line at most this often.
PUBLISH_PROGRESS_S = 5.0
#: Dataset download: chunk size, and attempts on network errors and 5xx.
_CHUNK = 1024 * 1024
DATASET_ATTEMPTS = 5
#: Exit codes.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SIGTERM = 0, 1, 2, 143


@dataclass(frozen=True)
class AgentEnv:
    """What the pod's environment says (see :func:`from_settings`)."""

    callback_url: str
    job_token: str
    job_id: str
    agent_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentEnv:
        """The agent's environment from ``HUBFERRY_CALLBACK_URL``, ``_JOB_TOKEN``, ``_JOB_ID``, ``_AGENT_DIR``.

        Raises:
            ValidationError: a variable is missing or malformed; every problem is named.
        """
        token = settings.job_token.get_secret_value() if settings.job_token else ""
        problems = [f"{name} is not set" for name, value in (
            ("HUBFERRY_CALLBACK_URL", settings.callback_url), ("HUBFERRY_JOB_TOKEN", token),
            ("HUBFERRY_JOB_ID", settings.job_id)) if not value]
        url = settings.callback_url or ""
        if url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc):
            problems.append(f"HUBFERRY_CALLBACK_URL should be an http(s) URL, not {printable(url)[:80]!r}")
        if problems:
            raise ValidationError(
                "the agent cannot start: " + "; ".join(problems), category="validation",
                hint="the orchestrator sets these in the pod's environment (docs/pod-agent.md); a pod started by "
                     "hand needs them too")
        return cls(url.rstrip("/"), token, str(settings.job_id), settings.agent_dir)


@dataclass(frozen=True)
class Spec:
    """The job's spec, checked."""

    job_id: str
    config: TrainingConfigModel
    raw_config: dict[str, Any]
    dataset_url: str | None
    heartbeat_s: float


def check_spec(answer: dict[str, Any], job_id: str) -> Spec:
    """Validate the orchestrator's spec.

    Raises:
        ValidationError: what is wrong with it (the config's problems all listed).
    """
    from hubferry.training_config import parse

    if answer.get("job_id") != job_id:
        raise ValidationError(f"the spec is for job {printable(str(answer.get('job_id')))[:40]!r}, not {job_id}",
                              hint="HUBFERRY_CALLBACK_URL and HUBFERRY_JOB_ID name different jobs")
    heartbeat = answer.get("heartbeat_s")
    if isinstance(heartbeat, bool) or not isinstance(heartbeat, (int, float)) or not 0 < heartbeat <= MAX_HEARTBEAT_S:
        raise ValidationError(f"the spec's heartbeat_s should be a number of seconds in (0, {MAX_HEARTBEAT_S:g}]",
                              field="heartbeat_s")
    url = answer.get("dataset_url")
    if url is not None and (not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https")):
        raise ValidationError("the spec's dataset_url should be an http(s) URL or null", field="dataset_url")
    raw = answer.get("config")
    config = parse(raw, source="the job's config")
    if url is None and config.dataset_is_local:
        raise ValidationError(f"the dataset {config.dataset} is a local file but the spec has no dataset_url",
                              field="dataset_url", hint="the orchestrator stages local datasets: retry the job")
    if url is not None and Path(urlsplit(url).path).suffix.lower() not in (".jsonl", ".parquet"):
        raise ValidationError("the spec's dataset_url path should end in .jsonl or .parquet", field="dataset_url")
    assert isinstance(raw, dict)
    return Spec(job_id, config, raw, url, float(heartbeat))


class Agent:
    """One agent run; :meth:`run` returns the exit code."""

    def __init__(self, env: AgentEnv, settings: Settings, client: AgentCallbacks | None = None,
                 python: str = sys.executable) -> None:
        self.env = env
        self.settings = settings
        self.client = client or AgentCallbacks(
            env.callback_url, env.job_token, patience_s=settings.agent_patience_s,
            base_delay=settings.retry_base_delay, max_delay=settings.retry_max_delay)
        self.python = python
        self.dir = env.agent_dir
        self.output = self.dir / "output"
        self.reporter: Reporter | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        #: The training command's own explanation of a failure (its ``error: ...`` line).
        self.last_error = ""

    # -- the life ---------------------------------------------------------------------------------

    def run(self) -> int:
        register_secret(self.env.job_token)
        register_secret(self.settings.shell_token())  # HF_TOKEN, only with --token-in-env
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            answer = self.client.spec()
            heartbeat = answer.get("heartbeat_s")
            heartbeat_s = heartbeat if isinstance(heartbeat, (int, float)) and 0 < heartbeat <= MAX_HEARTBEAT_S else 15
            self.reporter = Reporter(self.client, self.dir / SEQ_FILE, heartbeat_s=float(heartbeat_s),
                                     interval_s=self.settings.agent_report_interval_s)
            try:
                spec = check_spec(answer, self.env.job_id)
            except ValidationError as error:
                log.error("the job's spec is unusable", error=str(error))
                return self._final("failed", EXIT_BAD_INPUT, stage="training", message=f"bad spec: {error}")
            log.info("spec received", job_id=spec.job_id, summary=spec.config.summary(),
                     heartbeat_s=spec.heartbeat_s)
            self.reporter.start()
            if (self.output / MARKER).is_file():
                log.info("the training finished earlier (marker found): not training again")
            else:
                code = self._train(spec)
                if code is not None:
                    return code
            return self._follow(spec)
        except ValidationError as error:  # the spec answer itself was not a JSON object
            log.error("cannot read the job's spec", error=str(error))
            return EXIT_BAD_INPUT
        except PermanentError as error:
            log.error("the orchestrator refused the agent", error=str(error))
            return EXIT_FAILED
        except TransientError as error:
            log.error("the orchestrator is unreachable; giving up", error=str(error))
            return EXIT_FAILED
        except OSError as error:
            log.error("the agent's folder is unusable", folder=str(self.dir), error=str(error))
            return EXIT_BAD_INPUT
        finally:
            if self.reporter is not None:
                self.reporter.stop()
            self._kill_child()
            self.client.close()

    def _final(self, phase: str, code: int, **fields: Any) -> int:
        """Report a final state (best effort) and return ``code``."""
        assert self.reporter is not None
        try:
            self.reporter.send(phase, **fields)
        except HubferryError as error:
            log.error("could not report", phase=phase, error=str(error))
        return code

    # -- training ---------------------------------------------------------------------------------

    def _train(self, spec: Spec) -> int | None:
        """Fetch the dataset and run the training; ``None`` when it succeeded, else the exit code."""
        assert self.reporter is not None
        self.reporter.send("starting")
        if (stopped := self._stop_before_training()) is not None:  # e.g. a container restarted after a failure
            return stopped
        if spec.dataset_url is not None:
            try:
                data = str(fetch_dataset(spec.dataset_url, self.dir / "data", self.settings.agent_max_dataset_bytes))
            except HubferryError as error:
                log.error("cannot fetch the dataset", error=str(error))
                return self._final("failed", EXIT_FAILED, stage="training",
                                   message=f"cannot fetch the staged dataset: {printable(error.message)}")
        else:
            data = spec.config.dataset
        config_path = self.dir / "config.json"
        config_path.write_text(json.dumps(spec.raw_config, indent=2))
        shutil.rmtree(self.output, ignore_errors=True)  # what an interrupted training left
        command = [self.python, "-m", "hubferry.trainers.agent.trl_train", "--config", str(config_path),
                   "--data", data, "--output", str(self.output), "--work-dir", str(self.dir / "work")]
        env = {k: v for k, v in os.environ.items() if k not in ("HUBFERRY_JOB_TOKEN", "HUBFERRY_CALLBACK_URL")}
        env["PYTHONUNBUFFERED"] = "1"
        self.reporter.send("training")
        if (stopped := self._stop_before_training()) is not None:
            return stopped
        log.info("training started", command=" ".join(command[1:4]))
        self.child = subprocess.Popen(command, cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        reader = threading.Thread(target=self._read_child, args=(self.child,), name="agent-child-output",
                                  daemon=True)
        reader.start()
        stop_reason = self._wait_child()
        reader.join(timeout=10)
        code = self.child.returncode
        self.child = None
        shutil.rmtree(self.dir / "work", ignore_errors=True)
        if stop_reason == "exit":  # the job is final already: nothing to report
            return EXIT_OK
        if stop_reason is not None:
            return self._final("failed", EXIT_SIGTERM if stop_reason == "sigterm" else EXIT_FAILED,
                               stage="training", message=_STOP_MESSAGES[stop_reason])
        if code != 0:
            log.error("the training failed", exit_code=code)
            reported = code if code > 0 else 128 - code  # killed by a signal: the shell's convention
            why = f": {self.last_error}" if self.last_error else ""
            return self._final("failed", reported, stage="training", exit_code=reported,
                               message=f"the training command exited with code {reported}{why}")
        (self.output / MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
        log.info("training finished", output=str(self.output))
        self.reporter.send("trained")
        return None

    def _stop_before_training(self) -> int | None:
        """The exit code when a report was answered ``cancel`` or ``exit`` before the training started."""
        assert self.reporter is not None
        early = self.reporter.peek_action()
        if early not in ("cancel", "exit"):
            return None
        self.reporter.take_action(0)
        log.info("told to stop before training", action=early)
        if early == "exit":
            return EXIT_OK
        return self._final("failed", EXIT_FAILED, stage="training", message=_STOP_MESSAGES["cancel"])

    def _read_child(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None and self.reporter is not None
        for raw in iter(lambda: child.stdout.readline(256 * 1024), b""):  # type: ignore[union-attr]
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if "\r" in text:  # a progress bar's updates: the last one says where it is
                text = next((s for s in reversed(text.split("\r")) if s.strip()), "")
            line = cut_line(printable(text, keep_newlines=False))
            if line.startswith("error: "):  # trl_train's last word on a failure
                self.last_error = line.removeprefix("error: ")[:1000]
            self.reporter.add_line(line)
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def _wait_child(self) -> str | None:
        """Wait for the child; kill its group on cancel, SIGTERM or a refusal. Returns why it was stopped."""
        assert self.child is not None and self.reporter is not None
        while self.child.poll() is None:
            reason = None
            if self.stopping.is_set():
                reason = "sigterm"
            elif self.reporter.fatal is not None:
                reason = "refused"
            elif self.reporter.peek_action() in ("cancel", "exit"):
                reason = self.reporter.take_action(0) or "cancel"
            if reason is not None:
                log.warning("stopping the training", reason=reason)
                self._kill_child()
                return reason
            time.sleep(0.1)
        return None

    def _kill_child(self) -> None:
        child = self.child
        if child is None or child.poll() is not None:
            return
        from hubferry.trainers.local import terminate_group

        terminate_group(child.pid, self.settings.cancel_grace_s, reap=child.poll)
        child.wait(timeout=10)

    # -- publishing -------------------------------------------------------------------------------

    def _follow(self, spec: Spec) -> int:
        """After the training: heartbeat, and do what the orchestrator says until it says exit."""
        assert self.reporter is not None
        if self.reporter.fatal is not None:
            raise self.reporter.fatal
        action = self.reporter.take_action(0)
        if self.reporter.phase != "trained" and action is None:
            self.reporter.send("trained")
            action = self.reporter.take_action(0)
        while True:
            if self.reporter.fatal is not None:
                raise self.reporter.fatal
            if self.stopping.is_set():
                return EXIT_SIGTERM
            if action == "exit":
                log.info("the orchestrator says there is nothing more to do")
                return EXIT_OK
            if action == "cancel":
                return self._final("failed", EXIT_FAILED, stage="publishing", message=_STOP_MESSAGES["cancel"])
            if action == "publish":
                self._publish(spec)
            action = self.reporter.take_action(self.reporter.heartbeat_s)

    def _publish(self, spec: Spec) -> None:
        assert self.reporter is not None
        try:
            grant = self.client.publish_grant()
        except GrantRefused as error:
            log.warning("no Hub token to publish with yet; waiting for the orchestrator", error=error.message)
            message = error.message + (f" ({error.hint})" if error.hint else "")
            self.reporter.send("failed", stage="publishing", message=message)
            return
        register_secret(grant.token)
        self.reporter.send("publishing", message=f"publishing to {grant.repo_id} on {grant.endpoint}")
        log.info("publishing", repo_id=grant.repo_id, endpoint=grant.endpoint, revision=grant.revision)
        try:
            publication = publish_output(self.output, grant, spec, self.settings, self.reporter.add_line)
        except HubferryError as error:
            log.error("the publish failed", error=str(error))
            self.reporter.send("failed", stage="publishing", message=printable(str(error), keep_newlines=False))
            return
        files = {f.path_in_repo: {"size": f.size, "sha256": f.sha256, "git_sha1": f.git_sha1}
                 for f in publication.files}
        result = {"repo_id": publication.repo_id, "commit_sha": publication.commit_sha,
                  "revision": publication.revision, "files": files}
        log.info("published", repo_id=publication.repo_id, commit=publication.commit_sha, files=len(files))
        self.reporter.send("published", result=result)

    # -- signals ----------------------------------------------------------------------------------

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """The pod is stopping: stop the training (its group), report, exit 143."""
        self.stopping.set()
        if self.reporter is not None:
            self.reporter.wake()
        if self.child is None:
            raise SystemExit(EXIT_SIGTERM)


_STOP_MESSAGES = {
    "cancel": "cancelled by the orchestrator",
    "sigterm": "the agent was stopped (SIGTERM: the pod is stopping)",
    "refused": "the orchestrator refused the agent's reports",
}


def fetch_dataset(url: str, folder: Path, max_bytes: int, *, transport: httpx.BaseTransport | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> Path:
    """Download the staged dataset at the signed ``url`` into ``folder``, streamed, at most ``max_bytes``.

    Returns:
        The file (``dataset.jsonl`` or ``dataset.parquet``, after the URL path's suffix).

    Raises:
        PermanentError: the URL was refused (expired or wrong: 4xx) or the file is larger than ``max_bytes``.
        TransientError: the network or the server kept failing.
    """
    suffix = Path(urlsplit(url).path).suffix.lower()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"dataset{suffix}"
    partial = folder / f"dataset{suffix}.part"
    shown = printable(url, keep_newlines=False)  # the signature is a credential: redacted
    problem = ""
    with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), transport=transport, follow_redirects=True,
                      max_redirects=5) as http:
        for attempt in range(1, DATASET_ATTEMPTS + 1):
            try:
                with http.stream("GET", url) as response:
                    status = response.status_code
                    if status >= 500 or status == 429:
                        problem = f"status {status}"
                    elif status >= 400:
                        raise PermanentError(f"the staged dataset was refused ({status}) at {shown}", status=status,
                                             category="file_error", hint="the signed URL expired or is wrong: "
                                             "retry the job so the orchestrator stages it again")
                    else:
                        declared = response.headers.get("Content-Length")
                        if declared and declared.isdigit() and int(declared) > max_bytes:
                            raise _too_big(max_bytes)
                        size = 0
                        with partial.open("wb") as handle:
                            for chunk in response.iter_bytes(_CHUNK):
                                size += len(chunk)
                                if size > max_bytes:
                                    raise _too_big(max_bytes)
                                handle.write(chunk)
                        os.replace(partial, target)
                        log.info("dataset fetched", bytes=size, file=target.name)
                        return target
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {printable(str(exc), keep_newlines=False)[:200]}"
            except PermanentError:
                partial.unlink(missing_ok=True)
                raise
            if attempt < DATASET_ATTEMPTS:
                log.warning("dataset download failed, retrying", problem=problem, attempt=attempt)
                sleep(min(30.0, 2.0 ** attempt))
    partial.unlink(missing_ok=True)
    raise TransientError(f"cannot download the staged dataset from {shown}: {problem}", attempt=DATASET_ATTEMPTS,
                         hint="the orchestrator's staging is unreachable from the pod; retry the job")


def _too_big(max_bytes: int) -> PermanentError:
    return PermanentError(f"the staged dataset is larger than {max_bytes} bytes", category="file_error",
                          hint="raise HUBFERRY_AGENT_MAX_DATASET_BYTES in the pod, or use a smaller dataset")


def publish_output(folder: Path, grant: Any, spec: Spec, settings: Settings,
                   line: Callable[[str], None]) -> Any:
    """Publish the trained ``folder`` (without the marker) as the grant says, verified by reading it back."""
    from hubferry.hub.progress import PushProgress, format_size
    from hubferry.hub.publish import publish

    last = [0.0]

    def progress(event: PushProgress) -> None:
        now = time.monotonic()
        if event.stage in ("uploading", "hashing") and now - last[0] < PUBLISH_PROGRESS_S:
            return
        last[0] = now
        line(f"publish: {event.stage} {format_size(event.bytes_done)}/{format_size(event.bytes_total)} "
             f"{event.files_done}/{event.files_total} files")

    card = card_info(grant.card, spec)
    return publish(folder, grant.repo_id, endpoint=grant.endpoint, token=grant.token, private=grant.private,
                   revision=grant.revision, message=grant.commit_message, exclude=[MARKER], card=card,
                   settings=settings, progress=progress, verify_after=True)


def card_info(facts: dict[str, Any], spec: Spec) -> Any:
    """The model card facts: the orchestrator's (the grant's ``card``), else the config's; the rest (LoRA,
    steps, loss) comes from the folder's ``training_args.json`` when the card is rendered."""
    from hubferry.hub.card import CardInfo

    fields = CardInfo.__dataclass_fields__
    known = {k: v for k, v in facts.items() if k in fields and k not in ("tags", "training_params")}
    tags = [t for t in facts.get("tags") or [] if isinstance(t, str)]
    params = facts.get("training_params") if isinstance(facts.get("training_params"), dict) else {}
    config = spec.config
    return CardInfo(**{"base_model": config.model.base, **known,
                       "tags": list(dict.fromkeys([*tags, "trl", config.method, "text-generation"])),
                       "training_params": dict(params or {})})


def run(settings: Settings) -> int:
    """``hubferry agent``: check the environment, then live the agent's life (see the module docstring)."""
    env = AgentEnv.from_settings(settings)
    agent = Agent(env, settings)
    previous = signal.signal(signal.SIGTERM, agent.on_sigterm)
    try:
        return agent.run()
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)
