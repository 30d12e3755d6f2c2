"""The Staging port: put a dataset zip where a remote trainer can fetch it, for a limited time."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from hubferry.errors import ValidationError
from hubferry.logs import redact

#: A staged file's key: segments of letters, digits, '.', '_', '-' (each starting with a letter or a
#: digit, so never '..') joined by '/'; safe in a URL, an S3 key and a file name alike.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
MAX_KEY_CHARS = 200


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid staging key, such as ``"<job id>/dataset.zip"``.

    Raises:
        ValidationError: naming the field ``key``.
    """
    if not isinstance(key, str) or len(key) > MAX_KEY_CHARS or not _KEY.fullmatch(key):
        raise ValidationError(
            f"invalid staging key {str(key)[:80]!r}",
            field="key",
            hint=f"use at most {MAX_KEY_CHARS} characters: segments of A-Z, a-z, 0-9, '.', '_' and '-', each "
            "starting with a letter or digit, joined by '/'",
        )
    return key


def split_ref(ref: str) -> tuple[str, str]:
    """``"s3:bucket/key"`` -> ``("s3", "bucket/key")``: the backend that staged a file, and its id there.

    Raises:
        ValidationError: ``ref`` names no backend.
    """
    backend, sep, ident = ref.partition(":")
    if not sep or not backend or not ident:
        raise ValidationError(f"invalid staging reference {ref[:80]!r}", field="ref",
                              hint="pass the ref of a StagedFile unchanged")
    return backend, ident


@dataclass(frozen=True)
class StagedFile:
    """Where a trainer fetches a staged file, until when, and how to delete it."""

    #: The URL to hand to the trainer. A bearer credential (signed or presigned): never log it.
    url: str
    #: When the URL stops working (UTC).
    expires_at: datetime
    #: What :meth:`Staging.delete` needs: ``"<backend>:<id>"``, safe to store and to log.
    ref: str

    def __repr__(self) -> str:
        return f"StagedFile(url={redact(self.url)!r}, expires_at={self.expires_at.isoformat()!r}, ref={self.ref!r})"


class Staging(Protocol):
    """One place remote trainers fetch dataset zips from; services hold this port, never an adapter."""

    #: The backend's name, as in the ``staging`` setting and the first part of every ref.
    kind: str

    def stage(self, path: Path, *, key: str, token: str | None = None) -> StagedFile:
        """Upload ``path`` and return where to fetch it.

        Args:
            path: the file (a dataset zip).
            key: its name (:func:`validate_key`), e.g. ``"<job id>/dataset.zip"``; the backend's own name
                for the file derives from it.
            token: the provider credential of the job, for backends that need one (replicate-files);
                others ignore it.
        """
        ...

    def delete(self, ref: str, *, token: str | None = None) -> None:
        """Delete a staged file; one already gone is not an error."""
        ...

    def expired(self, now: float | None = None) -> list[str]:
        """The refs of this backend's staged files that expired before ``now`` (Unix time; default: now)."""
        ...
