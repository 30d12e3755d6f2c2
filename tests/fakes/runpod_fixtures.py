"""Pytest fixtures for the fake RunPod; load with ``pytest_plugins = ["fakes.runpod_fixtures"]``.

- ``runpod_fake``: a fresh :class:`~fakes.runpod_server.FakeRunPod` served on 127.0.0.1 for one test,
  mapping any image whose name contains ``hubferry`` to ``python -m hubferry agent``, its pods'
  ``HUBFERRY_HOME`` in the test's temp dir and their ``RUNPOD_API_BASE_URL`` the fake (so an agent
  may stop its own pod with ``RUNPOD_API_KEY``). It sets no variable of the test process: point the client at it
  with ``monkeypatch.setenv("RUNPOD_API_BASE_URL", runpod_fake.url)`` (and ``HUBFERRY_RUNPOD_BASE_URL``).
  Every process a pod still runs is killed when the test ends.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.runpod_server import FakeRunPod, running_fake_runpod

#: The glob the fixture maps to the pod agent.
HUBFERRY_IMAGES = "*hubferry*"


@pytest.fixture
def runpod_fake(tmp_path: Path) -> Iterator[FakeRunPod]:
    with running_fake_runpod(tmp_path / "runpod") as fake:
        fake.images[HUBFERRY_IMAGES] = [sys.executable, "-m", "hubferry", "agent"]
        fake.base_env["HUBFERRY_HOME"] = str(tmp_path / "runpod" / "pod-hubferry-home")
        # Inside a real pod the client's default URL is the real API; here the pod's is the fake.
        fake.base_env["RUNPOD_API_BASE_URL"] = fake.url
        yield fake
