"""A fake Replicate API (trainings, models, files, webhooks) for the official ``replicate`` client, in a thread.

Typical use (or the ``fake_replicate`` / ``replicate_client`` fixtures of ``fakes.replicate_fixtures``)::

    with running_fake_replicate() as fake:
        client = replicate.Client(api_token=fake.token, base_url=fake.base_url)
        fake.add_model("alice", "my-lora")
        training = client.trainings.create(version=f"{TRAINER}:{TRAINER_VERSION}", destination="alice/my-lora",
                                           input={"input_images": open("data.zip", "rb"), "steps": 20})
        fake.wait_for(training.id, "succeeded")

Trainings run on a simulated clock (``set_speed``, ``advance``) through ``starting → processing →
succeeded|failed|canceled``; a background ticker moves them and queues their webhooks. The HTTP side
is in :mod:`fakes.replicate_routes`; the trainer's log and output in :mod:`fakes.replicate_trainer`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx

from fakes.replicate_records import Call, Model, SimClock, StoredFile, Training, decode_cursor, dumps, new_id
from fakes.replicate_schema import (
    TRAINER_NAME,
    TRAINER_OWNER,
    TRAINER_VERSION,
    predictor_openapi_schema,
    trainer_openapi_schema,
    training_defaults,
)
from fakes.replicate_trainer import SimulatedRun, TrainerKnobs, read_dataset, traceback_lines, trained_model_tar
from fakes.replicate_webhooks import DEFAULT_EVENTS, WebhookAttempt, WebhookSender, new_secret
from fakes.serving import bound_socket, serve_in_thread

TRAINER = f"{TRAINER_OWNER}/{TRAINER_NAME}"
#: The token every fake accepts from the start, for the user ``alice``.
DEFAULT_TOKEN = "r8_fake0alice0token0000000000000000000"
DEFAULT_USER = "alice"
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
#: How often the ticker moves trainings along (real seconds).
TICK_S = 0.01
_OWN_FILE_RE = re.compile(r"/v1/files/([a-z0-9]+)(?:/download)?$")



class FakeReplicate:
    """The fake's state and its test knobs; every method is safe to call from any thread."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token, self.username = DEFAULT_TOKEN, DEFAULT_USER
        #: Defaults for trainings created from now on (``configure`` changes one training).
        self.knobs = TrainerKnobs()
        #: Page size of ``GET /v1/trainings`` (Replicate's is 100).
        self.page_size = 100
        #: Events sent when a training names no ``webhook_events_filter``.
        self.default_events: tuple[str, ...] = DEFAULT_EVENTS
        #: Largest file ``POST /v1/files`` accepts (Replicate's limit is 100 MiB).
        self.max_file_bytes = 100 * 1024 * 1024
        self.clock = SimClock()
        self.webhook_secret = new_secret()
        self.webhooks = WebhookSender(self.webhook_secret, self._latest_body)
        self.requests: list[Call] = []
        self._lock = threading.RLock()
        self._epoch = time.time()
        self._tokens = {DEFAULT_TOKEN: DEFAULT_USER}
        self._models: dict[tuple[str, str], Model] = {}
        self._trainings: dict[str, Training] = {}
        self._files: dict[str, StoredFile] = {}
        self._deliveries: dict[str, bytes] = {}
        self._faults: list[tuple[int, str, str]] = []  # (status, retry_after, path prefix), one per GET
        self._cuts: list[int] = []
        self._seq = 0
        trainer = self.add_model(TRAINER_OWNER, TRAINER_NAME, visibility="public", hardware="gpu-h100")
        trainer.versions[TRAINER_VERSION] = (0.0, trainer_openapi_schema())
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_forever, name="fake-replicate-ticker", daemon=True)
        self._ticker.start()

    # -- knobs ---------------------------------------------------------------------------------

    def add_token(self, token: str, username: str) -> None:
        with self._lock:
            self._tokens[token] = username

    def add_model(self, owner: str, name: str, visibility: str = "private", hardware: str = "cpu") -> Model:
        """Create (or return) a model, e.g. a training's destination."""
        with self._lock:
            return self._models.setdefault((owner, name), Model(owner, name, visibility, hardware))

    def set_speed(self, sim_seconds_per_second: float) -> None:
        """How fast simulated time runs; 0 freezes it (then only ``advance`` moves trainings)."""
        self.clock.set_speed(sim_seconds_per_second)

    def advance(self, seconds: float) -> None:
        """Move simulated time forward and bring every training up to date at once."""
        self.clock.advance(seconds)
        self._tick()

    def configure(self, training_id: str, **changes: Any) -> None:
        """Change one training's :class:`TrainerKnobs` (e.g. ``fail_at_step=5``, ``steps_per_second=2``)."""
        with self._lock:
            training = self._get(training_id)
            training.knobs = dataclasses.replace(training.knobs, **changes)
            if training.run is not None:
                training.run.knobs = training.knobs

    def hold(self, training_id: str) -> None:
        """Keep a training in ``starting`` until :meth:`release`."""
        self.configure(training_id, hold_starting=True)

    def release(self, training_id: str) -> None:
        with self._lock:
            self._get(training_id).released_at = self.clock.now()
        self.configure(training_id, hold_starting=False)

    def fail_gets(self, count: int, status: int = 503, retry_after: str = "0", path_prefix: str = "/v1/") -> None:
        """Answer the next ``count`` GETs under ``path_prefix`` with ``status`` and ``Retry-After``."""
        with self._lock:
            self._faults += [(status, retry_after, path_prefix)] * count

    def cut_next_download(self, after_bytes: int = 1024) -> None:
        """The next GET of a ``trained_model.tar`` stops after ``after_bytes`` of its body (connection dropped)."""
        with self._lock:
            self._cuts.append(after_bytes)

    # -- hooks for assertions ------------------------------------------------------------------

    def calls(self, *, method: str | None = None, route: str | None = None, training_id: str | None = None) -> int:
        """How many requests matched every given filter."""
        with self._lock:
            return sum(1 for c in self.requests if (method is None or c.method == method)
                       and (route is None or c.route == route)
                       and (training_id is None or c.training_id == training_id))

    def calls_per_training(self) -> dict[str, int]:
        with self._lock:
            counts: dict[str, int] = {}
            for call in self.requests:
                if call.training_id is not None:
                    counts[call.training_id] = counts.get(call.training_id, 0) + 1
            return counts

    @property
    def webhook_attempts(self) -> list[WebhookAttempt]:
        return list(self.webhooks.attempts)

    def trainings(self) -> list[dict[str, Any]]:
        """Every training as ``GET /v1/trainings/{id}`` shows it, newest first."""
        self._tick()
        with self._lock:
            ordered = sorted(self._trainings.values(), key=lambda t: -t.seq)
            return [self.training_json(t) for t in ordered]

    def training(self, training_id: str) -> dict[str, Any]:
        self._tick()
        with self._lock:
            return self.training_json(self._get(training_id))

    def wait_for(self, training_id: str, *statuses: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the training's status is one of ``statuses`` (default: any terminal one)."""
        wanted = set(statuses) or TERMINAL
        deadline = time.monotonic() + timeout
        while True:
            state = self.training(training_id)
            if state["status"] in wanted:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"training {training_id} is {state['status']}, not {sorted(wanted)}")
            time.sleep(0.01)

    def file_bytes(self, file_id: str) -> bytes:
        with self._lock:
            return self._files[file_id].data

    def close(self) -> None:
        self._stop.set()
        self._ticker.join(timeout=10)
        self.webhooks.close()

    # -- state used by the routes --------------------------------------------------------------

    def user_for(self, authorization: str | None) -> str | None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        with self._lock:
            return self._tokens.get(token.strip())

    def take_fault(self, method: str, path: str) -> tuple[int, str] | None:
        with self._lock:
            for index, (status, retry_after, prefix) in enumerate(self._faults):
                if method == "GET" and path.startswith(prefix):
                    del self._faults[index]
                    return status, retry_after
        return None

    def take_cut(self) -> int | None:
        with self._lock:
            return self._cuts.pop(0) if self._cuts else None

    def record(self, call: Call) -> None:
        with self._lock:
            self.requests.append(call)

    def model(self, owner: str, name: str, user: str) -> Model | None:
        """The model if ``user`` may see it (public, or theirs)."""
        with self._lock:
            model = self._models.get((owner, name))
            return model if model is not None and (model.visibility == "public" or model.owner == user) else None

    def create_training(self, user: str, model: Model, version: str, body: dict[str, Any]) -> dict[str, Any]:
        """Store a validated create request; returns the 201 body (the short create-response shape)."""
        with self._lock:
            self._seq += 1
            events = body.get("webhook_events_filter") or self.default_events
            training = Training(
                id=new_id(), seq=self._seq, owner=user, model=f"{model.owner}/{model.name}", version=version,
                destination=body["destination"], input=dict(body.get("input") or {}), webhook=body.get("webhook"),
                events=frozenset(events), knobs=copy.copy(self.knobs), created=self.clock.now(),
            )  # fmt: skip
            self._trainings[training.id] = training
            state = self.training_json(training)
        keys = ("id", "model", "version", "input", "logs", "error", "status", "created_at", "urls")
        return {key: state[key] for key in keys}

    def visible_training(self, training_id: str, user: str) -> dict[str, Any] | None:
        self._tick()
        with self._lock:
            training = self._trainings.get(training_id)
            return self.training_json(training) if training is not None and training.owner == user else None

    def cancel(self, training_id: str, user: str) -> dict[str, Any] | None:
        """Cancel a training (a no-op on a finished one); ``None`` if the user has no such training."""
        self._tick()
        with self._lock:
            training = self._trainings.get(training_id)
            if training is None or training.owner != user:
                return None
            if training.status not in TERMINAL:
                self._finish(training, "canceled", self.clock.now())
            return self.training_json(training)

    def list_trainings(self, user: str, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page, newest first, and the cursor of the next one."""
        self._tick()
        before = decode_cursor(cursor) if cursor else None
        with self._lock:
            mine = [t for t in self._trainings.values() if t.owner == user and (before is None or t.seq < before)]
            mine.sort(key=lambda t: -t.seq)
            page = mine[: self.page_size]
            more = len(mine) > len(page)
            next_cursor = base64.urlsafe_b64encode(str(page[-1].seq).encode()).decode() if more else None
            return [self.training_json(t) for t in page], next_cursor

    def add_file(self, owner: str, name: str, content_type: str, data: bytes, metadata: dict[str, Any]) -> StoredFile:
        with self._lock:
            stored = StoredFile(new_id(), owner, name, content_type, data, metadata, self.clock.now())
            self._files[stored.id] = stored
            return stored

    def visible_file(self, file_id: str, user: str) -> StoredFile | None:
        with self._lock:
            stored = self._files.get(file_id)
            return stored if stored is not None and stored.owner == user else None

    def list_files(self, user: str) -> list[StoredFile]:
        with self._lock:
            return sorted((f for f in self._files.values() if f.owner == user), key=lambda f: -f.created_at)

    def delete_file(self, file_id: str) -> None:
        with self._lock:
            self._files.pop(file_id, None)

    def delivery(self, opaque: str) -> bytes | None:
        with self._lock:
            return self._deliveries.get(opaque)

    def timestamp(self, sim: float | None) -> str | None:
        """A simulated time as Replicate writes timestamps (``2023-09-08T16:32:57.018467Z``)."""
        if sim is None:
            return None
        return datetime.fromtimestamp(self._epoch + sim, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def training_json(self, training: Training) -> dict[str, Any]:
        metrics: dict[str, float] = {}
        if training.completed is not None:
            start = training.started if training.started is not None else training.completed
            metrics = {"predict_time": round(training.completed - start, 6),
                       "total_time": round(training.completed - training.created, 6)}
        url = f"{self.base_url}/v1/trainings/{training.id}"
        return {
            "id": training.id, "model": training.model, "version": training.version, "input": training.input,
            "source": "api", "status": training.status, "logs": training.logs, "output": training.output,
            "error": training.error, "metrics": metrics, "created_at": self.timestamp(training.created),
            "started_at": self.timestamp(training.started), "completed_at": self.timestamp(training.completed),
            "urls": {"web": f"https://replicate.com/p/{training.id}", "get": url, "cancel": f"{url}/cancel"},
        }  # fmt: skip

    # -- the simulation ------------------------------------------------------------------------

    def _get(self, training_id: str) -> Training:
        try:
            return self._trainings[training_id]
        except KeyError:
            raise KeyError(f"no training {training_id!r} in the fake") from None

    def _tick_forever(self) -> None:
        while not self._stop.wait(TICK_S):
            self._tick()

    def _tick(self) -> None:
        with self._lock:
            now = self.clock.now()
            for training in list(self._trainings.values()):
                if training.status not in TERMINAL:
                    self._step(training, now)

    def _step(self, training: Training, now: float) -> None:
        if training.status == "starting":
            if training.knobs.hold_starting:
                return
            begin = max(training.created + training.knobs.boot_s, training.released_at or 0.0)
            if now < begin:
                return
            training.status, training.started = "processing", begin
            self._event(training, "start")
            self._load_input(training, begin)
        if training.status != "processing" or training.fetching or training.run is None:
            return
        lines = training.run.advance(now)
        if lines:
            training.logs += "".join(lines)
            self._event(training, "logs")
        run = training.run
        if run.outcome == "succeeded" and run.ended_at is not None:
            self._succeed(training, run.ended_at)
        elif run.outcome == "failed" and run.ended_at is not None:
            self._finish(training, "failed", run.ended_at, run.error)

    def _load_input(self, training: Training, at: float) -> None:
        url = training.input.get("input_images")
        if not url:
            return self._fail_input(training, at, "input_images must be provided")
        if url.startswith("data:"):
            try:
                data = base64.b64decode(url.partition(",")[2], validate=True)
            except (binascii.Error, ValueError):
                return self._fail_input(training, at, "input_images is not a valid data URI")
            return self._begin_run(training, data, at)
        own = _OWN_FILE_RE.search(url) if url.startswith(self.base_url + "/v1/files/") else None
        if own is not None:  # Replicate reads its own file URLs directly
            stored = self._files.get(own.group(1))
            if stored is None:
                return self._fail_input(training, at, f"Failed to download input_images from {url}: 404 Not Found")
            return self._begin_run(training, stored.data, at)
        training.fetching = True
        threading.Thread(target=self._fetch, args=(training, url), name="fake-replicate-fetch", daemon=True).start()

    def _fetch(self, training: Training, url: str) -> None:
        data: bytes | None = None
        try:
            response = httpx.get(url, follow_redirects=True, timeout=10.0)
            problem = None if response.is_success else f"{response.status_code} {response.reason_phrase}"
            data = response.content
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        with self._lock:
            training.fetching = False
            if training.status != "processing":
                return  # canceled while downloading
            at = max(self.clock.now(), training.started or 0.0)
            if problem is not None or data is None:
                self._fail_input(training, at, f"Failed to download input_images from {url}: {problem}")
            else:
                self._begin_run(training, data, at)

    def _begin_run(self, training: Training, data: bytes, at: float) -> None:
        dataset = read_dataset(data)
        if dataset is None:
            return self._fail_input(training, at, "input_images must be a zip file")
        inputs = training_defaults()
        inputs.update({k: v for k, v in training.input.items() if v is not None})
        training.run = SimulatedRun(inputs, dataset, training.knobs, at)

    def _fail_input(self, training: Training, at: float, message: str) -> None:
        training.logs += "".join(line + "\n" for line in traceback_lines("ValueError", message))
        self._finish(training, "failed", at, message)

    def _succeed(self, training: Training, at: float) -> None:
        assert training.run is not None
        opaque = new_id()
        self._deliveries[opaque] = trained_model_tar(training.run.inputs, training.run.dataset, self._epoch + at)
        version = hashlib.sha256(f"{training.id}:{training.destination}".encode()).hexdigest()
        owner, _, name = training.destination.partition("/")
        destination = self._models.get((owner, name))
        if destination is not None:
            destination.versions[version] = (at, predictor_openapi_schema())
        training.output = {"version": f"{training.destination}:{version}",
                           "weights": f"{self.base_url}/delivery/{opaque}/trained_model.tar"}
        self._finish(training, "succeeded", at)

    def _finish(self, training: Training, status: str, at: float, error: str | None = None) -> None:
        training.status, training.completed, training.error = status, at, error
        training.fetching = False
        self._event(training, "completed")

    def _event(self, training: Training, event: str) -> None:
        if not training.webhook or event not in training.events:
            return
        body = None if event in ("logs", "output") else dumps(self.training_json(training))
        self.webhooks.notify(training.id, training.webhook, event, body)

    def _latest_body(self, training_id: str) -> str | None:
        with self._lock:
            training = self._trainings.get(training_id)
            if training is None or training.status in TERMINAL:
                return None
            return dumps(self.training_json(training))


@contextmanager
def running_fake_replicate(**knobs: Any) -> Iterator[FakeReplicate]:
    """Serve a fresh :class:`FakeReplicate` with uvicorn on a free 127.0.0.1 port until the block ends.

    Args:
        **knobs: :class:`~fakes.replicate_trainer.TrainerKnobs` defaults for new trainings.
    """
    from fakes.replicate_routes import create_app

    sock, url = bound_socket()
    fake = FakeReplicate(url)
    fake.knobs = dataclasses.replace(fake.knobs, **knobs)
    try:
        with serve_in_thread(create_app(fake), sock, name=f"fake-replicate:{url}", lifespan="off"):
            yield fake
    finally:
        fake.close()
