"""Which Hub token a job publishes with: one resolver, one precedence, used by submit, pre-flight,
publish, retry and verify.

Precedence, highest first: ``--token`` > ``HF_TOKEN`` (or ``HUBFERRY_TOKEN``) of the shell running
``train``/``retry`` > the owner's stored token for the job's endpoint > huggingface_hub's saved login
(huggingface.co only). A token from the first two or the last is kept, encrypted, as the job's own
credential (never copied over the user's stored one); a stored token is referenced, and read when
the publish runs, so storing a fixed token while the job trains is enough.
"""

from __future__ import annotations

from huggingface_hub import get_token

from hubferry.config import DEFAULT_ENDPOINT, Settings
from hubferry.domain.jobs import Job
from hubferry.logs import register_secret
from hubferry.secrets.hub_credentials import HubCredentials, job_owner, normalise_endpoint
from hubferry.services.ports import HubTarget

#: Where a token came from, as recorded on the job (``params.credential.source``).
FLAG, SHELL, STORED, HF_LOGIN, NONE = "flag", "shell", "stored", "hf_login", "none"


def _saved_login(endpoint: str) -> str | None:
    """huggingface_hub's saved login, which is a huggingface.co token."""
    return get_token() if normalise_endpoint(endpoint) == DEFAULT_ENDPOINT else None


def resolve_for_command(
    settings: Settings, credentials: HubCredentials, owner: str, *, endpoint: str | None, token: str | None,
) -> tuple[HubTarget, str]:
    """The target a ``train``/``retry`` command means, and where its token comes from."""
    endpoint = normalise_endpoint(endpoint or settings.resolved_endpoint())
    for source, value in ((FLAG, token), (SHELL, settings.shell_token())):
        if value:
            register_secret(value)
            return HubTarget(endpoint, value), source
    stored = credentials.get(owner, endpoint)
    if stored is not None:
        return HubTarget(endpoint, stored.token), STORED
    login = _saved_login(endpoint)
    if login:
        register_secret(login)
        return HubTarget(endpoint, login), HF_LOGIN
    return HubTarget(endpoint, None), NONE


def bind_to_job(credentials: HubCredentials, job_id: str, target: HubTarget, source: str) -> dict[str, str]:
    """Keep a token the command was given as the job's own credential; returns what the job records."""
    credentials.delete_all(job_owner(job_id))
    if target.token and source in (FLAG, SHELL, HF_LOGIN):
        credentials.set(job_owner(job_id), target.endpoint, target.token)
    return {"source": source, "endpoint": target.endpoint}


def for_job(credentials: HubCredentials, job: Job) -> HubTarget:
    """The target of ``job``'s publish, read now: its own token, else the owner's stored token."""
    endpoint = normalise_endpoint(str(job.params.get("hub_endpoint") or DEFAULT_ENDPOINT))
    own = credentials.get(job_owner(job.id), endpoint)
    if own is not None:
        return HubTarget(endpoint, own.token)
    stored = credentials.get(job.owner, endpoint)
    return HubTarget(endpoint, stored.token if stored else None)


def forget_job(credentials: HubCredentials, job_id: str) -> None:
    """Drop every secret of a job (its tokens, the variables passed to it) once it has ended for good."""
    vault = credentials.vault
    for name in vault.names(job_owner(job_id)):
        vault.delete(job_owner(job_id), name)


#: The vault names of a user's stored provider keys (and of a job's own, under owner ``job:<id>``).
PROVIDER_KEYS = {"replicate": "replicate_token", "runpod": "runpod_api_key"}
REPLICATE_TOKEN = PROVIDER_KEYS["replicate"]
RUNPOD_KEY = PROVIDER_KEYS["runpod"]


def _given(settings: Settings, provider: str, key: str | None) -> tuple[str | None, str]:
    """A key given to the command: its flag, else the shell's variable (REPLICATE_API_TOKEN, RUNPOD_API_KEY)."""
    shell_secret = {"replicate": settings.replicate_token, "runpod": settings.runpod_api_key}[provider]
    shell = shell_secret.get_secret_value() if shell_secret else None
    for source, value in ((FLAG, key), (SHELL, shell)):
        if value:
            register_secret(value)
            return value, source
    return None, NONE


def resolve_provider_for_command(
    settings: Settings, credentials: HubCredentials, owner: str, provider: str, *, key: str | None,
) -> tuple[str | None, str]:
    """The provider key a command means: its flag > the shell's variable > the owner's stored key."""
    value, source = _given(settings, provider, key)
    if value:
        return value, source
    stored = credentials.vault.get(owner, PROVIDER_KEYS[provider])
    return stored, STORED if stored else NONE


def bind_provider_to_job(credentials: HubCredentials, provider: str, job_id: str, key: str | None,
                         source: str) -> None:
    """Keep a key given to a command as the job's own (a stored one is read when needed)."""
    if key and source in (FLAG, SHELL):
        credentials.vault.set(job_owner(job_id), PROVIDER_KEYS[provider], key)


def provider_key(credentials: HubCredentials, provider: str, owner: str, job_id: str) -> str | None:
    """A job's key for ``provider``, read now: its own, else its owner's stored one."""
    name = PROVIDER_KEYS[provider]
    return credentials.vault.get(job_owner(job_id), name) or credentials.vault.get(owner, name)
