"""Checks made before any byte is sent: token, repo id, who the token is, namespace rights, file limits."""

from __future__ import annotations

from typing import Any, cast

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.hf_api import DatasetInfo, ModelInfo, SpaceInfo
from huggingface_hub.utils import validate_repo_id

from hubferry.config import Settings
from hubferry.errors import PermanentError, ValidationError
from hubferry.hub import retry
from hubferry.hub.progress import format_size
from hubferry.services.ports import HubIdentity

#: Org roles that may create and write repos.
_WRITE_ROLES = {"admin", "write", "contributor"}


def resolve_token(explicit: str | None, settings: Settings) -> str:
    """The token of a push from a script or ``hubferry push``: explicit, then HUBFERRY_TOKEN/HF_TOKEN
    (through settings), then huggingface_hub's saved login."""
    token = explicit or settings.shell_token() or get_token()
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


def identity_of(me: dict[str, Any]) -> HubIdentity:
    """The parts of a whoami answer that decide where the token may write."""
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    orgs = [o for o in me.get("orgs") or [] if isinstance(o, dict) and o.get("name")]
    writable = tuple(o["name"] for o in orgs if o.get("roleInOrg") is None or o.get("roleInOrg") in _WRITE_ROLES)
    return HubIdentity(name=str(me.get("name") or ""), role=role, writable_orgs=writable)


def identify(api: HfApi, policy: retry.RetryPolicy) -> HubIdentity:
    """whoami, retried and classified, as a :class:`HubIdentity`."""
    return identity_of(whoami(api, policy))


def require_write(identity: HubIdentity, namespace: str, endpoint: str) -> None:
    """The token must not be read-only and must be allowed to write to ``namespace``."""
    if identity.role == "read":
        raise PermanentError(
            f"the token of {identity.name} is read-only", category="authentication", url=endpoint,
            hint=f"create a token with the write role at {endpoint}/settings/tokens",
        )
    if not identity.can_write(namespace):
        raise PermanentError(
            f"user {identity.name} cannot write to namespace {namespace!r}", category="authentication",
            url=endpoint,
            hint=f"push to {identity.name}/..., or use a token of a member of {namespace!r} with write rights",
        )


def check_write_access(api: HfApi, namespace: str, policy: retry.RetryPolicy) -> HubIdentity:
    """Call whoami once: the token must be valid, may write, and may write to ``namespace``."""
    identity = identify(api, policy)
    require_write(identity, namespace, api.endpoint)
    return identity


def existing_repo(
    api: HfApi, repo_id: str, repo_type: str, policy: retry.RetryPolicy,
) -> ModelInfo | DatasetInfo | SpaceInfo | None:
    """The repo as the Hub describes it, or None when it does not exist (or is invisible to the token)."""

    def read() -> ModelInfo | DatasetInfo | SpaceInfo | None:
        try:
            return cast(ModelInfo | DatasetInfo | SpaceInfo, api.repo_info(repo_id, repo_type=repo_type))
        except Exception as exc:
            response = getattr(exc, "response", None)
            if getattr(response, "status_code", None) == 404:
                return None
            raise

    return retry.call(read, what="read repo", endpoint=api.endpoint, policy=policy, repo_id=repo_id)


def check_sizes(sizes: dict[str, int], max_file_size: int) -> None:
    """Refuse files over the per-file limit before uploading anything."""
    too_big = {path: size for path, size in sizes.items() if size > max_file_size}
    if too_big:
        listed = ", ".join(f"{p} ({format_size(s)})" for p, s in sorted(too_big.items())[:10])
        raise ValidationError(
            f"{len(too_big)} file(s) exceed the {format_size(max_file_size)} per-file limit: {listed}",
            category="file_error", path=next(iter(sorted(too_big))),
            hint="shard the weights (e.g. save_pretrained(max_shard_size='5GB')) or exclude the files with --exclude",
        )
    if not sizes:
        raise ValidationError("nothing to publish: no files selected", hint="check the folder and --include/--exclude")
