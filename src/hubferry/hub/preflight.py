"""Checks made before any byte is sent: token, repo id, namespace rights, file limits."""

from __future__ import annotations

import os
from typing import Any

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from hubferry.errors import PermanentError, ValidationError
from hubferry.hub import retry

#: Org roles that may create and write repos.
_WRITE_ROLES = {"admin", "write", "contributor"}


def resolve_token(explicit: str | None) -> str:
    """The token: explicit, then HF_TOKEN, then huggingface_hub's token file."""
    token = explicit or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise ValidationError(
            "no Hugging Face token", category="authentication",
            hint="pass --token, set HF_TOKEN, or run `hf auth login`; for `hubferry hub serve` create one with "
            "`hubferry hub token create USER --data DIR`",
        )
    return token


def check_repo_id(repo_id: str) -> tuple[str, str]:
    """Validate ``owner/name`` as the Hub does; returns ``(namespace, name)``."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ValidationError(
            f"invalid repo id {repo_id!r}: {exc}", hint="use OWNER/NAME with letters, digits, - _ ."
        ) from None
    if repo_id.count("/") != 1:
        raise ValidationError(f"invalid repo id {repo_id!r}: expected OWNER/NAME", hint="for example alice/my-lora")
    namespace, name = repo_id.split("/")
    return namespace, name


def whoami(api: HfApi, policy: retry.RetryPolicy) -> dict[str, Any]:
    """Who the token belongs to (whoami, retried on transient failures)."""
    return retry.call(api.whoami, what="check token (whoami)", endpoint=api.endpoint, policy=policy)


def check_write_access(api: HfApi, namespace: str, policy: retry.RetryPolicy) -> dict[str, Any]:
    """Call whoami once: the token must be valid, may write, and may write to ``namespace``."""
    me = whoami(api, policy)
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise PermanentError(
            f"the token of {me.get('name')} is read-only", category="authentication", url=api.endpoint,
            hint=f"create a token with the write role at {api.endpoint}/settings/tokens",
        )
    if namespace != me.get("name"):
        orgs = {o.get("name"): o.get("roleInOrg") for o in me.get("orgs") or []}
        if namespace not in orgs or (orgs[namespace] is not None and orgs[namespace] not in _WRITE_ROLES):
            raise PermanentError(
                f"user {me.get('name')} cannot write to namespace {namespace!r}", category="authentication",
                url=api.endpoint,
                hint=f"push to {me.get('name')}/..., or use a token of a member of {namespace!r} with write rights",
            )
    return me


def check_sizes(sizes: dict[str, int], max_file_size: int) -> None:
    """Refuse files over the per-file limit before uploading anything."""
    too_big = {path: size for path, size in sizes.items() if size > max_file_size}
    if too_big:
        listed = ", ".join(f"{p} ({s / 1e9:.1f} GB)" for p, s in sorted(too_big.items())[:10])
        raise ValidationError(
            f"{len(too_big)} file(s) exceed the {max_file_size / 1e9:.1f} GB per-file limit: {listed}",
            category="file_error", path=next(iter(sorted(too_big))),
            hint="shard the weights (e.g. save_pretrained(max_shard_size='5GB')) or exclude the files with --exclude",
        )
    if not sizes:
        raise ValidationError("nothing to publish: no files selected", hint="check the folder and --include/--exclude")
