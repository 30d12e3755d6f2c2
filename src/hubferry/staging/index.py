"""The record of staged files this home created (local and replicate-files), so cleanup can find them.

``$HUBFERRY_HOME/staging/index.json`` (0600) maps each ref to when it expires; writers hold an
``fcntl.flock`` on ``index.lock`` and replace the file atomically, so workers and ``hubferry serve``
sharing a home can all stage and clean up. S3 needs no index: its objects carry their expiry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hubferry.errors import ConfigError


class StagingIndex:
    """``ref -> {"expires_at": unix time, "remote_expires_at": unix time | None}`` under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "index.json"

    def record(self, ref: str, expires_at: float, remote_expires_at: float | None = None) -> None:
        with self._locked() as entries:
            entries[ref] = {"expires_at": expires_at, "remote_expires_at": remote_expires_at}

    def forget(self, ref: str) -> None:
        with self._locked() as entries:
            entries.pop(ref, None)

    def get(self, ref: str) -> dict[str, Any] | None:
        return self._read().get(ref)

    def expired(self, backend: str, now: float) -> list[str]:
        """Refs of ``backend`` whose expiry is before ``now``, oldest first."""
        entries = self._read()
        due = [(e["expires_at"], ref) for ref, e in entries.items()
               if ref.startswith(backend + ":") and e["expires_at"] < now]
        return [ref for _, ref in sorted(due)]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.folder / "index.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entries = self._read()
            yield entries
            self._write(entries)
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ConfigError(f"the staging index {self.path} is not a JSON object", path=str(self.path),
                              hint="delete it; staged files it listed then expire on their own or stay until removed")
        return data

    def _write(self, entries: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".index.", suffix=".tmp")  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entries, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
