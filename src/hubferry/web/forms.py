"""The new-job form: its fields as the API's request body, validated by the API's own schemas, and kept
signed across a sign-in so a signed-out person's job starts once they sign in.

The form is never trusted more than the JSON API: :func:`job_request` builds the body of
``POST /api/v1/jobs`` and validates it with the same pydantic models, so a field's message here is the
API's. A draft travels as a hidden field signed with the server's session key (purpose ``web-draft``),
expiring after :data:`DRAFT_MAX_AGE_S`; a tampered or stale draft is dropped, never run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic
from pydantic import TypeAdapter

from hubferry import training_config
from hubferry.api.schemas import JobCreate, LocalJobCreate, ReplicateJobCreate, RunpodJobCreate
from hubferry.errors import ValidationError

#: The new-job form's fields (anything else a request sends is ignored).
FIELDS = ("trainer", "name", "repo_id", "private", "endpoint", "skip_preflight", "command", "output_dir", "cwd",
          "total_steps", "dataset_upload_id", "dataset_path", "trigger_word", "steps", "learning_rate", "lora_rank",
          "runpod_config", "gpu", "cloud_type")
#: How long a draft kept across a sign-in stays usable.
DRAFT_MAX_AGE_S = 3600
#: Longest draft accepted back (a form is small; anything bigger was not made here).
MAX_DRAFT_CHARS = 64 * 1024
#: The API's fields that the form names differently.
_FIELD_FOR = {"dataset": "dataset_upload_id", "preflight": "skip_preflight"}

_ADAPTER: TypeAdapter[LocalJobCreate | ReplicateJobCreate | RunpodJobCreate] = TypeAdapter(JobCreate)


@dataclass
class FormErrors:
    """Messages to show: per form field, and for the form as a whole."""

    fields: dict[str, str] = field(default_factory=dict)
    form: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.form)

    def add(self, api_field: str | None, message: str) -> None:
        """A message about an API field (``local.total_steps``, ``dataset.path``, ``token``...)."""
        name = (api_field or "").split(".")[0]
        name = _FIELD_FOR.get(name, name)
        if name in FIELDS and name not in self.fields:
            self.fields[name] = message
        elif name not in FIELDS:
            self.form.append(message)


def form_values(data: Mapping[str, Any]) -> dict[str, str]:
    """The form's own fields of a submitted form, as stripped strings."""
    return {name: str(data[name]).strip() for name in FIELDS if name in data and isinstance(data[name], str)}


def job_request(
    values: Mapping[str, str],
) -> tuple[LocalJobCreate | ReplicateJobCreate | RunpodJobCreate | None, FormErrors]:
    """The API request the form describes, or the messages saying what to fix."""
    errors = FormErrors()
    trainer = values.get("trainer") or "local"
    body: dict[str, Any] = {"trainer": trainer, "private": values.get("private") == "on",
                            "preflight": values.get("skip_preflight") != "on"}
    for name in ("name", "repo_id", "endpoint"):
        if values.get(name):
            body[name] = values[name]
    if values.get("dataset_upload_id"):
        body["dataset"] = {"upload_id": values["dataset_upload_id"]}
    elif values.get("dataset_path"):
        body["dataset"] = {"path": values["dataset_path"]}
    if trainer == "local":
        try:
            body["command"] = shlex.split(values.get("command", ""))
        except ValueError as exc:
            errors.fields["command"] = f"the command cannot be split into arguments: {exc}"
        for name in ("output_dir", "cwd", "total_steps"):
            if values.get(name):
                body[name] = values[name]
    elif trainer == "runpod":
        try:
            body["config"] = training_config.loads(values.get("runpod_config", "")).model_dump(mode="json")
        except ValidationError as exc:
            errors.fields["runpod_config"] = exc.message
        for name in ("gpu", "cloud_type"):
            if values.get(name):
                body[name] = values[name].upper() if name == "cloud_type" else values[name]
    else:
        for name in ("trigger_word", "steps", "learning_rate", "lora_rank"):
            if values.get(name):
                body[name] = values[name]
    if errors:
        return None, errors
    try:
        return _ADAPTER.validate_python(body), errors
    except pydantic.ValidationError as exc:
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            errors.add(".".join(loc[1:]) if len(loc) > 1 else "trainer", _message(error))
        return None, errors


def _message(error: Any) -> str:
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


class DraftSigner:
    """Signs a form's values into a hidden field and reads them back.

    Args:
        load_key: the server's secret key (loaded on first use).
        clock: seconds since the epoch.
    """

    def __init__(self, load_key: Callable[[], bytes], clock: Callable[[], float] = time.time) -> None:
        self._load_key = load_key
        self._key: bytes | None = None
        self._clock = clock

    def _tag(self, payload: str) -> str:
        if self._key is None:
            self._key = self._load_key()
        return hmac.new(self._key, f"web-draft\0{payload}".encode(), hashlib.sha256).hexdigest()

    def sign(self, values: Mapping[str, str]) -> str:
        raw = json.dumps({"v": dict(values), "t": int(self._clock())}, separators=(",", ":"))
        payload = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        return f"{payload}.{self._tag(payload)}"

    def read(self, draft: str) -> dict[str, str] | None:
        """The values of a draft this server signed within :data:`DRAFT_MAX_AGE_S`, else None."""
        payload, _, tag = draft.rpartition(".")
        if not payload or len(draft) > MAX_DRAFT_CHARS or not hmac.compare_digest(
                tag.encode("utf-8", "replace"), self._tag(payload).encode()):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("t"), int) or not isinstance(data.get("v"), dict):
            return None
        if not 0 <= self._clock() - data["t"] <= DRAFT_MAX_AGE_S:
            return None
        return form_values(data["v"])
