"""Staging through Replicate's Files API: Replicate serves the file to its own trainer, so neither a
public address nor a bucket is needed. The default for the Replicate trainer.

Uploads are retried on transient failures; an upload whose answer was lost leaves an unused file
that Replicate expires itself. Deleting needs a Replicate token: the job's own (``delete(ref,
token=...)``) or ``HUBFERRY_REPLICATE_TOKEN``; without one, cleanup forgets files Replicate has
already expired.
"""

from __future__ import annotations

import mimetypes
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

from hubferry.config import Settings
from hubferry.errors import ConfigError, PermanentError, ValidationError
from hubferry.hub import retry
from hubferry.staging.base import StagedFile, split_ref, validate_key
from hubferry.staging.index import StagingIndex
from hubferry.staging.retries import classified_call
from hubferry.trainers.replicate_api import ReplicateApi, classify, connect

T = TypeVar("T")
KIND = "replicate-files"
TOKEN_SETTING = "HUBFERRY_REPLICATE_TOKEN"
_FILE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class ReplicateFilesStaging:
    """Files uploaded with ``client.files.create``; the trainer gets their ``urls.get``."""

    kind = KIND

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.index = StagingIndex(settings.home / "staging")
        self.ttl_s = settings.staging_ttl_s
        self.policy = retry.RetryPolicy.from_settings(settings)
        self.clock = clock
        self._transport = transport

    def stage(self, path: Path, *, key: str, token: str | None = None) -> StagedFile:
        filename = validate_key(key).rsplit("/", 1)[-1]
        api = self._api(token)
        if api is None:
            raise ConfigError("the replicate-files staging needs a Replicate token", setting=TOKEN_SETTING,
                              category="authentication", hint=f"set {TOKEN_SETTING} or store the job's Replicate token")
        expires = int(self.clock()) + self.ttl_s

        def upload() -> dict[str, Any]:
            with path.open("rb") as body:  # opened per attempt: a retry re-sends from the start
                made = api.client.files.create(
                    body, filename=filename,
                    content_type=mimetypes.guess_type(filename)[0] or "application/octet-stream",
                    metadata={"hubferry_key": key, "hubferry_expires": expires},
                )
            return made.dict()

        made = self._call(api, "upload file", "/v1/files", upload)
        file_id, url = str(made.get("id", "")), (made.get("urls") or {}).get("get")
        if not _FILE_ID.fullmatch(file_id) or not isinstance(url, str):
            raise PermanentError("Replicate answered a file upload without an id or a download URL",
                                 url=api.endpoint + "/v1/files", hint="report this with the log")
        remote = _timestamp(made.get("expires_at"))
        ref = f"{KIND}:{file_id}"
        self.index.record(ref, expires, remote)
        until = min(expires, remote) if remote is not None else expires
        return StagedFile(url=url, expires_at=datetime.fromtimestamp(until, UTC), ref=ref)

    def delete(self, ref: str, *, token: str | None = None) -> None:
        backend, file_id = split_ref(ref)
        if backend != KIND or not _FILE_ID.fullmatch(file_id):
            raise ValidationError(f"not a replicate-files staging reference: {ref[:80]!r}", field="ref",
                                  hint="pass the ref of a file staged on Replicate unchanged")
        api = self._api(token)
        if api is None:
            entry = self.index.get(ref) or {}
            remote = entry.get("remote_expires_at")
            if remote is not None and remote < self.clock():
                self.index.forget(ref)  # Replicate has deleted it already
                return
            raise ConfigError(f"cannot delete the Replicate file {file_id} without a Replicate token",
                              setting=TOKEN_SETTING, category="authentication",
                              hint=f"set {TOKEN_SETTING}, or pass the job's token")
        try:
            self._call(api, "delete file", f"/v1/files/{file_id}", lambda: api.client.files.delete(file_id))
        except PermanentError as exc:
            if exc.context.get("status") != 404:
                raise
        self.index.forget(ref)

    def expired(self, now: float | None = None) -> list[str]:
        return self.index.expired(KIND, self.clock() if now is None else now)

    def _api(self, token: str | None) -> ReplicateApi | None:
        value = token or (self.settings.replicate_token.get_secret_value() if self.settings.replicate_token else None)
        return connect(self.settings, value, self._transport) if value else None

    def _call(self, api: ReplicateApi, what: str, path: str, fn: Callable[[], T]) -> T:
        url = api.endpoint.rstrip("/") + path
        return classified_call(fn, classify=lambda exc: classify(exc, what, url), what=f"Replicate {what}",
                               endpoint=api.endpoint, policy=self.policy)


def _timestamp(value: object) -> float | None:
    """Unix time of an ISO 8601 timestamp from Replicate; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
