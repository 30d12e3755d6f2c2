"""Publishing to a Hugging Face Hub: naming, card, upload, verify."""

from hubferry.hub.card import CardInfo
from hubferry.hub.progress import PushProgress
from hubferry.hub.publish import Publication, publish

__all__ = ["CardInfo", "Publication", "PushProgress", "publish"]
