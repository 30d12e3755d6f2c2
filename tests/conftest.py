"""Shared fixtures: one registry per test session, and a huggingface_hub client environment per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub.utils import logging as _hub_logging

from hubferry.testing import RunningRegistry, no_retry_sleep, running_registry

# huggingface_hub's library handler binds sys.stderr when first made: make it now, on the real stderr,
# not inside a CliRunner test whose captured stream is closed afterwards.
_hub_logging.get_logger("huggingface_hub")

#: Fixtures of the fake providers: Replicate (fake_replicate, replicate_client, ...) and RunPod (runpod_fake).
pytest_plugins = ["fakes.replicate_fixtures", "fakes.runpod_fixtures"]

#: Small limits so tests exercise LFS multipart and pagination with few, small files.
TEST_REGISTRY_SETTINGS = {
    "multipart_threshold": 1024 * 1024,
    "chunk_size": 256 * 1024,
    "tree_page_size": 4,
    "tree_expand_page_size": 2,
    "commits_page_size": 3,
}


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """The session's registry (in a background thread), with small multipart and page sizes."""
    with running_registry(tmp_path_factory.mktemp("hub"), **TEST_REGISTRY_SETTINGS) as hub:
        yield hub


@pytest.fixture(scope="session")
def alice_token(registry: RunningRegistry) -> str:
    return registry.create_token("alice")


@pytest.fixture(scope="session")
def bob_token(registry: RunningRegistry) -> str:
    return registry.create_token("bob")


@pytest.fixture
def hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """huggingface_hub with Xet disabled and its cache, token and home in a temp dir.

    Returns:
        The temp ``HF_HOME``.
    """
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
    return home


@pytest.fixture
def fast_retries() -> Iterator[None]:
    """huggingface_hub retries without sleeping (its ``_http.time.sleep`` only)."""
    with no_retry_sleep():
        yield


@pytest.fixture
def api(registry: RunningRegistry, alice_token: str, hf_env: Path):  # type: ignore[no-untyped-def]
    """An ``HfApi`` for alice against the session registry."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=registry.endpoint, token=alice_token)


@pytest.fixture
def repo_id(api) -> str:  # type: ignore[no-untyped-def]
    """A fresh public model repo owned by alice."""
    name = f"alice/repo-{uuid.uuid4().hex[:10]}"
    api.create_repo(name)
    return name
