"""Hub credentials in the vault: one token (and the username it belongs to) per owner and Hub endpoint.

A user may publish to huggingface.co and to an on-prem registry with different tokens, so the key
is ``(owner, endpoint)``. Each credential is one vault entry named ``hub-<hash of the endpoint>``
holding ``{"endpoint", "token", "username"}``; job-scoped tokens (given with ``--token`` or
``HF_TOKEN`` for one job) live under the owner ``job:<id>`` so they never replace the user's own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from hubferry.logs import register_secret
from hubferry.secrets.vault import Vault

_PREFIX = "hub-"


def normalise_endpoint(endpoint: str) -> str:
    """One spelling per endpoint: no trailing slash, lower-case scheme and host."""
    endpoint = endpoint.strip().rstrip("/")
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        return endpoint
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}"


def _entry_name(endpoint: str) -> str:
    return _PREFIX + hashlib.sha256(normalise_endpoint(endpoint).encode()).hexdigest()[:20]


def job_owner(job_id: str) -> str:
    """The vault owner that holds one job's own secrets."""
    return f"job:{job_id}"


@dataclass(frozen=True)
class HubCredential:
    endpoint: str
    token: str
    username: str | None
    updated_at: str = ""

    def __repr__(self) -> str:  # never show the token
        return f"HubCredential(endpoint={self.endpoint!r}, username={self.username!r}, token=…{self.token[-4:]})"


class HubCredentials:
    """``(owner, endpoint) -> token, username`` stored encrypted in a :class:`Vault`."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def set(self, owner: str, endpoint: str, token: str, username: str | None = None) -> None:
        register_secret(token)
        value = {"endpoint": normalise_endpoint(endpoint), "token": token, "username": username}
        self.vault.set(owner, _entry_name(endpoint), json.dumps(value))

    def get(self, owner: str, endpoint: str) -> HubCredential | None:
        raw = self.vault.get(owner, _entry_name(endpoint))
        if raw is None:
            return None
        data = json.loads(raw)
        register_secret(data["token"])
        return HubCredential(data["endpoint"], data["token"], data.get("username"))

    def set_username(self, owner: str, endpoint: str, username: str) -> None:
        """Remember whose token it is (learnt from whoami), keeping the token."""
        current = self.get(owner, endpoint)
        if current is not None and current.username != username:
            self.set(owner, endpoint, current.token, username)

    def delete(self, owner: str, endpoint: str) -> bool:
        return self.vault.delete(owner, _entry_name(endpoint))

    def delete_all(self, owner: str) -> None:
        """Forget every credential of ``owner`` (a job's own tokens once it has ended)."""
        for name in self.vault.names(owner):
            if name.startswith(_PREFIX):
                self.vault.delete(owner, name)

    def list(self, owner: str) -> list[HubCredential]:
        """The owner's credentials (tokens included: callers show only their last four characters)."""
        found = []
        for info in self.vault.entries(owner):
            if info.name.startswith(_PREFIX) and (raw := self.vault.get(owner, info.name)) is not None:
                data = json.loads(raw)
                found.append(HubCredential(data["endpoint"], data["token"], data.get("username"), info.updated_at))
        return sorted(found, key=lambda c: c.endpoint)


def is_credential_entry(name: str) -> bool:
    return name.startswith(_PREFIX)
