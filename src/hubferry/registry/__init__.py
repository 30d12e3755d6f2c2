"""The built-in Hugging Face Hub-compatible registry: models stay on-prem, and tests run offline.

Speaks the subset of the Hub's HTTP protocol that ``huggingface_hub`` uses with Xet disabled:
repos, trees, preupload, LFS (basic and multipart), NDJSON commits, branches and downloads.
"""

from .app import create_app
from .cli import hub_app
from .settings import RegistrySettings

__all__ = ["RegistrySettings", "create_app", "hub_app"]
