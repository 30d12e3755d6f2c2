"""Publishing to a Hugging Face Hub: naming, card, upload, verify.

The package imports nothing heavy itself (``hubferry.hub.progress`` and friends stay cheap for the
command line); :func:`hubferry.hub.publish.publish` is the entry point, re-exported as ``hubferry.publish``.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hubferry.hub.card import CardInfo
    from hubferry.hub.progress import PushProgress
    from hubferry.hub.publish import Publication

__all__ = ["CardInfo", "Publication", "PushProgress"]
_WHERE = {"CardInfo": "card", "PushProgress": "progress", "Publication": "publish"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"hubferry.hub.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'hubferry.hub' has no attribute {name!r}")
