"""Reading trainer logs as they grow: new complete lines after a cursor, and the tail of a log."""

from __future__ import annotations

import os
from pathlib import Path

from hubferry.logs import redact

#: Most log bytes returned by one read (the rest comes with the next).
READ_LIMIT = 4 * 1024 * 1024
#: Bytes read from the end of a log to find its last lines.
_TAIL_BYTES = 64_000


def read_lines(path: Path, cursor: str = "", *, final: bool = False) -> tuple[list[str], str]:
    """Complete lines appended after ``cursor`` (a byte offset; ``""`` is the start) and the next cursor.

    ``\\r`` ends a line too, so each tqdm redraw is a line. A trailing partial line is left for the
    next read, unless ``final`` (the writer has stopped).
    """
    offset = int(cursor or 0)
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read(READ_LIMIT)
    except FileNotFoundError:
        return [], str(offset)
    if not final and len(data) < READ_LIMIT:
        end = max(data.rfind(b"\n"), data.rfind(b"\r"))
        data = data[: end + 1]
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    return [line for line in text.split("\n") if line], str(offset + len(data))


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log (tqdm redraws collapsed), secrets redacted."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - _TAIL_BYTES))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    rows = [r.rstrip("\r").split("\r")[-1] for r in text.split("\n") if r.strip()]
    return redact("\n".join(rows[-lines:]))


def append(path: Path, lines: list[str]) -> None:
    """Append ``lines`` to a log, creating it 0600 in a 0700 folder (logs may hold what a trainer printed)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in lines))
