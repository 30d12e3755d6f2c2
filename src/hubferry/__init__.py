"""hubferry: from training data to a published, verified model on the Hugging Face Hub."""

from hubferry.errors import (
    ConfigError,
    HubferryError,
    PermanentError,
    TransientError,
    ValidationError,
    VerificationError,
)
from hubferry.hub import CardInfo, Publication, PushProgress, publish

__all__ = [
    "CardInfo",
    "ConfigError",
    "HubferryError",
    "PermanentError",
    "Publication",
    "PushProgress",
    "TransientError",
    "ValidationError",
    "VerificationError",
    "publish",
]
