"""Pytest fixtures for the fake Replicate; load with ``pytest_plugins = ["fakes.replicate_fixtures"]``.

- ``fake_replicate``: a fresh :class:`~fakes.replicate_server.FakeReplicate` served on 127.0.0.1 for one test.
- ``replicate_client``: the official ``replicate.Client`` pointed at it with its valid token.
- ``webhook_receiver``: a recording webhook endpoint (:class:`~fakes.webhook_receiver.WebhookReceiver`).
- ``dataset_zip``: a small training zip (3 images, one with a caption) as a path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.replicate_server import FakeReplicate, running_fake_replicate
from fakes.replicate_trainer import make_dataset_zip
from fakes.webhook_receiver import WebhookReceiver, running_webhook_receiver


@pytest.fixture
def fake_replicate() -> Iterator[FakeReplicate]:
    with running_fake_replicate() as fake:
        yield fake


@pytest.fixture
def replicate_client(fake_replicate: FakeReplicate) -> Any:
    import replicate

    return replicate.Client(api_token=fake_replicate.token, base_url=fake_replicate.base_url)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    with running_webhook_receiver() as receiver:
        yield receiver


@pytest.fixture
def dataset_zip(tmp_path: Path) -> Path:
    return make_dataset_zip(tmp_path / "data.zip")
