"""hubferry: from training data to a published, verified model on the Hugging Face Hub.

The publishing API is imported on first use (``hubferry.publish``), so the command line and library
users that only need the errors do not pay for huggingface_hub at import time.
"""

from typing import TYPE_CHECKING, Any

from hubferry.errors import (
    ConfigError,
    HubferryError,
    PermanentError,
    TransientError,
    ValidationError,
    VerificationError,
)

if TYPE_CHECKING:
    from hubferry.hub.card import CardInfo
    from hubferry.hub.progress import PushProgress
    from hubferry.hub.publish import Publication, publish

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
_WHERE = {"CardInfo": "card", "PushProgress": "progress", "Publication": "publish", "publish": "publish"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"hubferry.hub.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'hubferry' has no attribute {name!r}")
