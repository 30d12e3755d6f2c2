"""The fake Replicate's records: its clock, the requests it answered, and its files, models and trainings."""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fakes.replicate_trainer import SimulatedRun, TrainerKnobs


class SimClock:
    """Simulated seconds: real time × ``speed`` plus whatever ``advance`` added."""

    def __init__(self, speed: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._sim, self._real, self._speed = 0.0, time.monotonic(), speed

    def now(self) -> float:
        with self._lock:
            return self._sim + (time.monotonic() - self._real) * self._speed

    def set_speed(self, speed: float) -> None:
        with self._lock:
            now = time.monotonic()
            self._sim += (now - self._real) * self._speed
            self._real, self._speed = now, speed

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._sim += seconds


@dataclass(frozen=True)
class Call:
    """One HTTP request the fake answered."""

    method: str
    path: str
    #: The route template (``/v1/trainings/{training_id}``), ``""`` when no route matched.
    route: str
    training_id: str | None
    status: int
    #: Answered by ``fail_gets`` instead of the route.
    injected: bool
    at: float


@dataclass
class StoredFile:
    id: str
    owner: str
    name: str
    content_type: str
    data: bytes
    metadata: dict[str, Any]
    created_at: float


@dataclass
class Model:
    owner: str
    name: str
    visibility: str = "private"
    hardware: str = "cpu"
    description: str | None = None
    #: Version id → (created at, openapi schema); insertion order is creation order.
    versions: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Training:
    id: str
    seq: int
    owner: str
    model: str
    version: str
    destination: str
    input: dict[str, Any]
    webhook: str | None
    events: frozenset[str]
    knobs: TrainerKnobs
    created: float
    status: str = "starting"
    started: float | None = None
    completed: float | None = None
    logs: str = ""
    output: dict[str, Any] | None = None
    error: str | None = None
    released_at: float | None = None
    fetching: bool = False
    run: SimulatedRun | None = None


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def new_id() -> str:
    """26 lowercase base32 characters, like ``zz4ibbonubfz7carwiefibzgga``."""
    return base64.b32encode(os.urandom(20)).decode().lower()[:26]


def decode_cursor(cursor: str) -> int | None:
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (ValueError, binascii.Error):
        return None
