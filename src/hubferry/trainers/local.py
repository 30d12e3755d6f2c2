"""Run any training command as a local subprocess in its own process group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hubferry.errors import ValidationError
from hubferry.trainers.base import RunState, RunStatus

#: How long to wait for the kernel to finish off a SIGKILLed process group.
_KILL_WAIT_S = 5.0


class LocalTrainer:
    """Wraps ``command``; stdout and stderr go (merged, unbuffered) to a log file."""

    supports_retry = True

    def __init__(self, command: Sequence[str], *, cwd: str | None = None, env: dict[str, str] | None = None) -> None:
        if not command:
            raise ValidationError("no training command given", hint="put the command after --, e.g. -- python train.py")
        self.command = list(command)
        self.cwd = cwd
        self.env = env
        self._process: subprocess.Popen[bytes] | None = None
        self._cancelled = False

    def start(self, log_path: Path) -> int:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        try:
            with log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    self.command, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
        except OSError as exc:
            raise ValidationError(
                f"cannot start the training command {self.command[0]!r}: {exc.strerror}",
                hint="check the command after -- exists and is executable",
            ) from None
        return self._process.pid

    def poll(self) -> RunState:
        assert self._process is not None, "start() first"
        code = self._process.poll()
        if code is None:
            return RunState(RunStatus.RUNNING)
        if self._cancelled:
            return RunState(RunStatus.CANCELLED, code, "cancelled")
        if code == 0:
            return RunState(RunStatus.SUCCEEDED, 0)
        return RunState(RunStatus.FAILED, code, f"the training command exited with code {code}")

    def cancel(self, grace_s: float) -> None:
        if self._process is None:
            return
        self._cancelled = True
        terminate_group(self._process.pid, grace_s, reap=self._process.poll)


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
