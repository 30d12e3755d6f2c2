"""The built-in Hugging Face Hub-compatible registry: models stay on-prem, and tests run offline.

Speaks the subset of the Hub's HTTP protocol that ``huggingface_hub`` uses with Xet disabled:
repos, trees, preupload, LFS (basic and multipart), NDJSON commits, branches and downloads.
The app lives in :mod:`hubferry.registry.app` (``create_app``); it is not imported here so the
CLI starts fast for commands that do not serve.
"""

from .settings import RegistrySettings

__all__ = ["RegistrySettings"]
