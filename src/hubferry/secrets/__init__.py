"""Per-user secrets (Hub token and username, later trainer API keys), encrypted at rest."""

from hubferry.secrets.vault import (
    HF_TOKEN,
    HF_USERNAME,
    KEY_ENV,
    OLD_KEYS_ENV,
    WELL_KNOWN_NAMES,
    SecretInfo,
    Vault,
    generate_key,
)

__all__ = [
    "HF_TOKEN",
    "HF_USERNAME",
    "KEY_ENV",
    "OLD_KEYS_ENV",
    "WELL_KNOWN_NAMES",
    "SecretInfo",
    "Vault",
    "generate_key",
]
