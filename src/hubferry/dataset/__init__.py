"""Dataset packaging: a folder, zip or URL list of training images in, a checked, normalised,
deterministic zip with a manifest out (``check`` and ``pack``)."""

from hubferry.dataset.fetch import Fetcher
from hubferry.dataset.package import PackResult, check, pack
from hubferry.dataset.report import DatasetReport, ImageRecord, NearDuplicate, PackOptions, Rejection

__all__ = [
    "DatasetReport",
    "Fetcher",
    "ImageRecord",
    "NearDuplicate",
    "PackOptions",
    "PackResult",
    "Rejection",
    "check",
    "pack",
]
