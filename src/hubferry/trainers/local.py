"""Run any training command as a local subprocess in its own process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar

from hubferry.config import Settings
from hubferry.domain.jobs import Job
from hubferry.errors import ValidationError
from hubferry.tracking.logfile import read_lines
from hubferry.trainers.base import Capabilities, Handle, Observation, RunStatus

#: How long to wait for the kernel to finish off a SIGKILLed process group.
_KILL_WAIT_S = 5.0


class LocalTrainer:
    """Runs a job's command (``params.command``) with its recorded environment and working directory.

    stdout and stderr go, merged and unbuffered, to the job's log. The exit code is known only to the
    process that started the command; any other process sees a run whose group has vanished as lost.
    """

    kind = "local"
    capabilities = Capabilities(can_retry_training=True, pushes_events=False)
    _processes: ClassVar[dict[int, subprocess.Popen[bytes]]] = {}
    _cancelled: ClassVar[set[int]] = set()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def start(self, job: Job, log_path: Path, secrets: Mapping[str, str] | None = None) -> Handle:
        command = list(job.params.get("command") or [])
        if not command:
            raise ValidationError("no training command given", hint="put the command after --, e.g. -- python train.py")
        output_dir = str(job.params["output_dir"])
        env = {**job.params.get("env", {}), **(secrets or {}),
               "HUBFERRY_OUTPUT_DIR": output_dir, "PYTHONUNBUFFERED": "1"}
        log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "ab") as log:
                process = subprocess.Popen(
                    command, cwd=job.params.get("cwd"), env=env, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
        except OSError as exc:
            raise ValidationError(
                f"cannot start the training command {command[0]!r}: {exc.strerror}",
                hint="check the command after -- exists and is executable, and the working directory exists",
            ) from None
        with self._lock:
            self._processes[process.pid] = process
        return {"pid": process.pid, "host": socket.gethostname(), "log_path": str(log_path),
                "output_dir": output_dir}

    def poll(self, handle: Handle, cursor: str = "") -> Observation:
        pid = int(handle["pid"])
        with self._lock:
            process = self._processes.get(pid)
            cancelled = pid in self._cancelled
        code = process.poll() if process is not None else None
        foreign = handle.get("host") not in (None, socket.gethostname())  # its own runner watches it
        running = code is None and (process is not None or foreign or group_alive(pid))
        lines, cursor = read_lines(Path(handle["log_path"]), cursor, final=not running)
        if running:
            return Observation(RunStatus.RUNNING, lines, cursor)
        if cancelled:
            return Observation(RunStatus.CANCELLED, lines, cursor, code, "cancelled")
        if process is None:
            return Observation(RunStatus.LOST, lines, cursor, None, "the trainer process is gone, and its exit "
                               "code with it (the process that started it stopped)")
        if code == 0:
            return Observation(RunStatus.SUCCEEDED, lines, cursor, 0, outputs=str(handle["output_dir"]))
        if code is not None and code < 0:
            return Observation(RunStatus.FAILED, lines, cursor, 128 - code,
                               f"the training command was killed by signal {-code}")
        return Observation(RunStatus.FAILED, lines, cursor, code, f"the training command exited with code {code}")

    def cancel(self, handle: Handle, grace_s: float) -> None:
        pid = int(handle["pid"])
        if handle.get("host") not in (None, socket.gethostname()):
            return  # another machine's process: its runner sees the cancelled job and stops it
        with self._lock:
            self._cancelled.add(pid)
            process = self._processes.get(pid)
        terminate_group(pid, grace_s, reap=process.poll if process else None)

    def fetch_outputs(self, handle: Handle, dest: Path) -> Path:
        """Local outputs are already on this machine, in the job's output folder."""
        return Path(handle["output_dir"])


def terminate_group(pid: int, grace_s: float, reap: Callable[[], object] | None = None) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL it if still alive after ``grace_s``.

    ``reap`` (the parent's ``Popen.poll``) collects the exited leader so it does not linger as a zombie.
    """
    if not _signal_group(pid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_alive(pid):
            return
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + _KILL_WAIT_S
    while time.monotonic() < deadline:  # SIGKILL is delivered asynchronously
        if reap is not None:
            reap()
        if not group_alive(pid):
            return
        time.sleep(0.02)


def _signal_group(pid: int, sig: int) -> bool:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    return True


def group_alive(pid: int) -> bool:
    """Whether any process of the group led by ``pid`` still exists."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
