"""The environment a training command runs with: the submitting shell's, minus hubferry's secrets."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: Variables never handed to a training command unless the user names them with ``--pass-env``:
#: credentials by name, and every hubferry setting (the vault key among them).
_SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|ACCESS_KEY|PRIVATE_KEY|AUTH|SESSION|COOKIE)"
    r"|^HUBFERRY_|^HF_TOKEN|^AWS_|^REPLICATE_|^RUNPOD_|^WANDB_API",
    re.IGNORECASE,
)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def split_environment(env: Mapping[str, str], pass_env: Iterable[str] = ()) -> tuple[dict[str, str], dict[str, str]]:
    """Split the submitting shell's ``env`` into what a job may record and the secrets it was given.

    Returns:
        ``(recorded, secrets)``: ``recorded`` holds every variable whose name is not secret-like;
        ``secrets`` the secret-like variables named in ``pass_env`` (kept encrypted, not in the job).

    Raises:
        KeyError: a name in ``pass_env`` is not set (the caller reports it).
    """
    recorded = {k: v for k, v in env.items() if not is_secret_name(k)}
    secrets = {}
    for name in pass_env:
        value = env[name]
        if is_secret_name(name):
            secrets[name] = value
        else:
            recorded[name] = value
    return recorded, secrets
