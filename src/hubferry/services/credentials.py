"""Where a job's Hub endpoint and token come from: flags, then HF_* variables, then the vault."""

from __future__ import annotations

import os
from dataclasses import dataclass

from huggingface_hub import get_token

from hubferry.config import Settings
from hubferry.logs import register_secret
from hubferry.secrets.vault import HF_TOKEN, HF_USERNAME, Vault


@dataclass(frozen=True)
class HubTarget:
    endpoint: str
    token: str | None

    def __repr__(self) -> str:  # never show the token
        return f"HubTarget(endpoint={self.endpoint!r}, token={'set' if self.token else 'none'})"


def resolve(
    settings: Settings, vault: Vault, owner: str, *, endpoint: str | None = None, token: str | None = None
) -> HubTarget:
    """The Hub to publish to: explicit values, then HF_ENDPOINT/HF_TOKEN, then the owner's stored secret."""
    endpoint = (endpoint or settings.resolved_endpoint()).rstrip("/")
    token = (
        token
        or (settings.token.get_secret_value() if settings.token else None)
        or os.environ.get("HF_TOKEN")
        or vault.get(owner, HF_TOKEN)
        or get_token()
    )
    register_secret(token)
    return HubTarget(endpoint, token)


def stored_username(vault: Vault, owner: str) -> str | None:
    return vault.get(owner, HF_USERNAME)
