"""The fake Replicate, driven by the official ``replicate`` 1.0.7 client as hubferry will drive the real one."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import replicate
import standardwebhooks
from replicate.exceptions import ReplicateError
from replicate.webhook import WebhookSigningSecret

from fakes.replicate_schema import TRAINER_VERSION
from fakes.replicate_server import TRAINER, FakeReplicate, running_fake_replicate
from fakes.replicate_trainer import make_dataset_zip
from hubferry.tracking import ProgressTracker, parse_log

pytest_plugins = ["fakes.replicate_fixtures"]

TRAINER_REF = f"{TRAINER}:{TRAINER_VERSION}"
TRAINING_ROUTE = "/v1/trainings/{training_id}"


def start(client, fake: FakeReplicate, zip_path: Path, destination: str = "alice/lora", **params):
    """Create a training of the flux trainer with a dataset uploaded through the client."""
    owner, name = destination.split("/")
    fake.add_model(owner, name)
    inputs = {"input_images": open(zip_path, "rb"), "steps": 20, **params.pop("input", {})}
    try:
        return client.trainings.create(version=TRAINER_REF, input=inputs, destination=destination, **params)
    finally:
        inputs["input_images"].close()


# -- the trainings API round trip ------------------------------------------------------------


def test_create_get_cancel_list_round_trip(fake_replicate, replicate_client, dataset_zip):
    fake_replicate.knobs.hold_starting = True
    created = [start(replicate_client, fake_replicate, dataset_zip) for _ in range(3)]
    first = created[0]
    assert (first.status, first.model, first.version, first.destination) == ("starting", TRAINER, TRAINER_VERSION, None)
    assert first.input["input_images"].startswith(f"{fake_replicate.base_url}/v1/files/")
    assert first.urls["get"] == f"{fake_replicate.base_url}/v1/trainings/{first.id}"
    assert replicate_client.trainings.get(first.id).status == "starting"

    canceled = replicate_client.trainings.cancel(first.id)
    assert canceled.status == "canceled" and canceled.completed_at is not None and canceled.output is None
    assert replicate_client.trainings.cancel(first.id).status == "canceled"  # idempotent
    assert fake_replicate.training(first.id)["metrics"]["predict_time"] == 0

    fake_replicate.release(created[1].id)
    done = fake_replicate.wait_for(created[1].id)
    finished = replicate_client.trainings.get(created[1].id)
    assert finished.status == done["status"] == "succeeded"
    assert finished.destination == "alice/lora" and finished.output["version"].startswith("alice/lora:")
    assert set(done["metrics"]) == {"predict_time", "total_time"}
    version_id = finished.output["version"].split(":")[1]
    assert replicate_client.models.get("alice/lora").latest_version.id == version_id

    page = replicate_client.trainings.list()
    assert [t.id for t in page.results] == [t.id for t in reversed(created)]  # newest first
    assert page.next is None

    fake_replicate.page_size = 2
    page = replicate_client.trainings.list()
    assert len(page.results) == 2 and page.next.startswith(f"{fake_replicate.base_url}/v1/trainings?cursor=")
    ids = [t.id for p in replicate.paginate(replicate_client.trainings.list) for t in p]
    assert ids == [t.id for t in reversed(created)]


def test_errors_are_problem_json(fake_replicate, replicate_client, dataset_zip):
    bad = replicate.Client(api_token="r8_wrong", base_url=fake_replicate.base_url)
    with pytest.raises(ReplicateError) as info:
        bad.trainings.list()
    assert (info.value.status, info.value.title) == (401, "Unauthenticated")
    assert info.value.detail == "You did not pass a valid authentication token"

    with pytest.raises(ReplicateError) as info:
        replicate_client.trainings.get("zz4ibbonubfz7carwiefibzgga")
    assert (info.value.status, info.value.detail) == (404, "Not found.")

    with pytest.raises(ReplicateError) as info:
        replicate_client.trainings.create(version=TRAINER_REF, input={"steps": 10}, destination="alice/missing")
    assert (info.value.status, info.value.detail) == (404, "The specified training destination does not exist")

    fake_replicate.add_model("bob", "theirs")  # exists, but not alice's
    with pytest.raises(ReplicateError) as info:
        replicate_client.trainings.create(version=TRAINER_REF, input={"steps": 10}, destination="bob/theirs")
    assert info.value.status == 404

    fake_replicate.add_model("alice", "lora")
    with pytest.raises(ReplicateError) as info:
        replicate_client.trainings.create(version=TRAINER_REF, input={"steps": 7000, "lora_rank": 0},
                                          destination="alice/lora")
    assert info.value.status == 422 and "input.steps: Must be less than or equal to 6000" in info.value.detail
    assert "input.lora_rank: Must be greater than or equal to 1" in info.value.detail

    fake_replicate.add_token("r8_bob", "bob")
    mine = start(replicate_client, fake_replicate, dataset_zip)
    bob = replicate.Client(api_token="r8_bob", base_url=fake_replicate.base_url)
    with pytest.raises(ReplicateError) as info:
        bob.trainings.get(mine.id)  # someone else's training does not exist for you
    assert info.value.status == 404

    raw = httpx.get(f"{fake_replicate.base_url}/v1/trainings/nope", headers={"authorization": "Token r8_bob"})
    assert raw.status_code == 404 and raw.headers["content-type"] == "application/problem+json"
    assert raw.headers["ratelimit-remaining"] and raw.json() == {"detail": "Not found.", "status": 404}


def test_models_create_get_and_the_trainer_schema(fake_replicate, replicate_client):
    model = replicate_client.models.create(owner="alice", name="my-lora", visibility="private", hardware="gpu-t4")
    assert (model.owner, model.name, model.visibility, model.run_count) == ("alice", "my-lora", "private", 0)
    assert replicate_client.models.get("alice/my-lora").latest_version is None
    with pytest.raises(ReplicateError) as info:
        replicate_client.models.create(owner="alice", name="my-lora", visibility="private", hardware="gpu-t4")
    assert info.value.status == 409
    with pytest.raises(ReplicateError) as info:
        replicate_client.models.create(owner="bob", name="x", visibility="public", hardware="cpu")
    assert info.value.status == 403
    fake_replicate.add_model("bob", "secret")
    with pytest.raises(ReplicateError) as info:
        replicate_client.models.get("bob/secret")
    assert info.value.status == 404

    assert replicate_client.accounts.current().username == fake_replicate.username == "alice"
    trainer = replicate_client.models.get(TRAINER)
    assert trainer.visibility == "public" and trainer.latest_version.id == TRAINER_VERSION
    version = trainer.versions.get(TRAINER_VERSION)
    assert version.cog_version and version.openapi_schema == trainer.latest_version.openapi_schema
    props = version.openapi_schema["components"]["schemas"]["TrainingInput"]["properties"]
    assert props["steps"] == {**props["steps"], "type": "integer", "default": 1000, "minimum": 3, "maximum": 6000}
    assert (props["lora_rank"]["minimum"], props["lora_rank"]["maximum"], props["lora_rank"]["default"]) == (1, 128, 16)
    assert props["learning_rate"]["type"] == "number" and props["learning_rate"]["default"] == pytest.approx(4e-4)
    assert props["input_images"]["format"] == "uri" and "default" not in props["input_images"]
    assert props["trigger_word"]["default"] == "TOK" and props["autocaption"]["default"] is True
    assert (props["caption_dropout_rate"]["minimum"], props["caption_dropout_rate"]["maximum"]) == (0, 1)
    assert props["optimizer"]["default"] == "adamw8bit" and props["resolution"]["default"] == "512,768,1024"
    assert props["batch_size"] == {**props["batch_size"], "type": "integer", "default": 1}
    assert props["hf_token"]["format"] == "password"
    assert [p["x-order"] for p in props.values()] == list(range(len(props)))


# -- files -----------------------------------------------------------------------------------


def test_files_uploaded_by_the_client_feed_the_trainer(fake_replicate, replicate_client, dataset_zip):
    fake_replicate.set_speed(5)
    training = start(replicate_client, fake_replicate, dataset_zip)
    file_id = training.input["input_images"].rsplit("/", 1)[1]
    stored = replicate_client.files.get(file_id)
    data = dataset_zip.read_bytes()
    assert (stored.name, stored.content_type, stored.size) == ("data.zip", "application/zip", len(data))
    assert stored.etag and stored.checksums["sha256"] and stored.expires_at
    assert [f.id for f in replicate_client.files.list()] == [file_id]
    download = httpx.get(f"{fake_replicate.base_url}/v1/files/{file_id}/download",
                         headers={"authorization": f"Bearer {fake_replicate.token}"})
    assert download.content == data
    assert fake_replicate.wait_for(training.id)["status"] == "succeeded"
    assert "Extracted 4 files from zip to input_images" in replicate_client.trainings.get(training.id).logs

    assert replicate_client.files.delete(file_id) is True
    with pytest.raises(ReplicateError) as info:
        replicate_client.files.get(file_id)
    assert info.value.status == 404

    inline = start(replicate_client, fake_replicate, dataset_zip, file_encoding_strategy="base64")
    assert inline.input["input_images"].startswith("data:application/zip;base64,")
    assert fake_replicate.wait_for(inline.id)["status"] == "succeeded"


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[str]:
    """Serves ``tmp_path/www`` over HTTP (a dataset hosted anywhere)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_trainer_fetches_any_url_and_fails_like_the_real_one(fake_replicate, replicate_client, static_server,
                                                             tmp_path):
    fake_replicate.set_speed(5)
    make_dataset_zip(tmp_path / "www" / "faces.zip", images=12, captioned=12)
    (tmp_path / "www" / "faces.tar").write_bytes(b"not a zip at all")
    fake_replicate.add_model("alice", "lora")

    def train(**inputs):
        made = replicate_client.trainings.create(version=TRAINER_REF, input={"steps": 10, **inputs},
                                                 destination="alice/lora")
        return fake_replicate.wait_for(made.id)

    good = train(input_images=f"{static_server}/faces.zip")
    assert good["status"] == "succeeded"
    assert "100%|██████████| 12/12" in good["logs"] and "IMG_0001.jpg is already captioned" not in good["logs"]
    not_zip = train(input_images=f"{static_server}/faces.tar")
    assert (not_zip["status"], not_zip["error"]) == ("failed", "input_images must be a zip file")
    assert not_zip["logs"].endswith("ValueError: input_images must be a zip file\n")
    missing = train(input_images=f"{static_server}/nothing.zip")
    assert missing["status"] == "failed" and "404" in missing["error"]
    assert train()["error"] == "input_images must be provided"


# -- the simulated trainer -------------------------------------------------------------------


def test_simulated_run_on_a_controlled_clock(fake_replicate, replicate_client, dataset_zip):
    fake_replicate.set_speed(0)
    training = start(replicate_client, fake_replicate, dataset_zip, input={"steps": 100, "resolution": "512"})
    fake_replicate.configure(training.id, steps_per_second=10, boot_s=1, setup_s=1)
    fake_replicate.advance(0.5)
    assert replicate_client.trainings.get(training.id).status == "starting"
    fake_replicate.advance(1.0)
    seen = replicate_client.trainings.get(training.id)
    assert seen.status == "processing" and seen.started_at and seen.logs and "flux_train_replicate:" not in seen.logs

    logs, tracker = seen.logs, ProgressTracker(total_steps=100)
    for line in logs.splitlines(keepends=True):
        tracker.feed(line)
    assert tracker.snapshot().stage == "starting"  # the preprocessing bars are not training
    for _ in range(6):  # to 1 s into training (10 steps/s), in 0.25 s moves
        fake_replicate.advance(0.25)
        now = replicate_client.trainings.get(training.id).logs
        assert now.startswith(logs) and now.endswith("\n")  # cumulative, whole lines
        for line in now[len(logs):].splitlines(keepends=True):
            tracker.feed(line)
        logs = now
    snap = tracker.snapshot()
    assert (snap.stage, snap.step, snap.total_steps) == ("training", 10, 100) and snap.loss is not None
    assert "flux_train_replicate:  10%|█         | 10/100 [00:01<00:09, 10.00it/s, lr: 4.0e-04 loss: " in logs

    fake_replicate.advance(30)
    done = replicate_client.trainings.get(training.id)
    assert done.status == "succeeded"
    final = parse_log(done.logs)
    assert (final.percent, final.step, final.total_steps) == (100.0, 100, 100)
    assert "Caching latents: 100%|██████████| 3/3" in done.logs and "lora.safetensors" in done.logs
    metrics = fake_replicate.training(training.id)["metrics"]
    assert metrics["predict_time"] == pytest.approx(1 + 10, abs=0.11)


def test_failure_at_a_step_and_holding_in_starting(fake_replicate, replicate_client, dataset_zip):
    fake_replicate.knobs.fail_at_step = 7
    fake_replicate.knobs.fail_error = "CUDA out of memory"
    failed = start(replicate_client, fake_replicate, dataset_zip)
    state = fake_replicate.wait_for(failed.id)
    assert (state["status"], state["error"], state["output"]) == ("failed", "CUDA out of memory", None)
    assert "| 7/20 [" in state["logs"] and "| 8/20 [" not in state["logs"]
    assert state["logs"].endswith("RuntimeError: CUDA out of memory\n")
    assert parse_log(state["logs"]).step == 7

    fake_replicate.knobs.fail_at_step = None
    fake_replicate.set_speed(0)
    held = start(replicate_client, fake_replicate, dataset_zip)
    fake_replicate.hold(held.id)
    fake_replicate.advance(60)
    assert replicate_client.trainings.get(held.id).status == "starting"
    fake_replicate.release(held.id)
    fake_replicate.set_speed(1)
    assert fake_replicate.wait_for(held.id)["status"] == "succeeded"


# -- the trained weights ---------------------------------------------------------------------


def test_weights_tar_is_real_and_supports_ranges(fake_replicate, replicate_client, dataset_zip):
    training = start(replicate_client, fake_replicate, dataset_zip, input={"lora_rank": 4})
    url = fake_replicate.wait_for(training.id)["output"]["weights"]
    assert url.startswith(f"{fake_replicate.base_url}/delivery/") and url.endswith("/trained_model.tar")

    head = httpx.head(url)
    size = int(head.headers["content-length"])
    assert head.status_code == 200 and head.headers["accept-ranges"] == "bytes" and not head.content
    whole = httpx.get(url).content
    assert len(whole) == size
    with tarfile.open(fileobj=io.BytesIO(whole)) as archive:
        names = archive.getnames()
        lora = archive.extractfile("output/flux_train_replicate/lora.safetensors").read()
        config = archive.extractfile("output/flux_train_replicate/config.yaml").read().decode()
    assert "output/flux_train_replicate/captions/IMG_0001.txt" in names
    assert "linear: 4" in config
    header_len = int.from_bytes(lora[:8], "little")
    header = json.loads(lora[8 : 8 + header_len])
    assert header["__metadata__"]["name"] == "flux_train_replicate"
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    tensors = safetensors_numpy.load(lora)
    assert {t.shape for t in tensors.values()} == {(4, 64), (64, 4)}

    part = httpx.get(url, headers={"range": "bytes=100-199"})
    assert part.status_code == 206 and part.headers["content-range"] == f"bytes 100-199/{size}"
    assert part.content == whole[100:200]
    assert httpx.get(url, headers={"range": "bytes=-10"}).content == whole[-10:]
    assert httpx.get(url, headers={"range": f"bytes={size}-"}).status_code == 416

    fake_replicate.cut_next_download(after_bytes=1000)
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("GET", url) as response:
        for chunk in response.iter_bytes():
            received += chunk
    assert 0 < len(received) < size
    rest = httpx.get(url, headers={"range": f"bytes={len(received)}-", "if-range": head.headers["etag"]})
    assert rest.status_code == 206 and bytes(received) + rest.content == whole


# -- webhooks --------------------------------------------------------------------------------


def validate_both_ways(secret: str, received) -> None:
    """The signature passes replicate's own validator and the standardwebhooks package."""
    replicate.webhooks.validate(headers=received.headers, body=received.body,
                                secret=WebhookSigningSecret(key=secret), tolerance=300)
    standardwebhooks.Webhook(secret).verify(received.body, received.headers)


def test_webhooks_are_signed_filtered_and_the_terminal_one_retried(fake_replicate, replicate_client, dataset_zip,
                                                                     webhook_receiver):
    secret = replicate_client.webhooks.default.secret().key
    assert secret.startswith("whsec_") and "_" not in secret[6:] and base64.b64decode(secret[6:])
    webhook_receiver.script = [200, 500, 503]  # start ok; the completed message fails twice
    training = start(replicate_client, fake_replicate, dataset_zip, webhook=webhook_receiver.url,
                     webhook_events_filter=["start", "completed"])
    got = webhook_receiver.wait_until(lambda r: len(r) >= 4)
    assert fake_replicate.webhooks.wait_idle()
    assert [json.loads(r.body)["status"] for r in got] == ["processing", "succeeded", "succeeded", "succeeded"]
    assert [r.status for r in got] == [200, 500, 503, 200] and len(webhook_receiver.received) == 4
    assert all(r.path == "/hooks/replicate?customId=123" for r in got)
    assert got[1].headers["webhook-id"] == got[2].headers["webhook-id"] == got[3].headers["webhook-id"]
    assert got[0].headers["webhook-id"] != got[1].headers["webhook-id"]
    for received in got:
        validate_both_ways(secret, received)
    final = json.loads(got[-1].body)
    assert final == fake_replicate.training(training.id)  # the body is the training, as GET shows it
    assert replicate_client.trainings.get(training.id).logs == final["logs"]
    attempts = [a for a in fake_replicate.webhook_attempts if a.event == "completed"]
    assert [(a.attempt, a.status) for a in attempts] == [(1, 500), (2, 503), (3, 200)]


def test_logs_webhooks_are_throttled_and_never_retried(fake_replicate, replicate_client, dataset_zip,
                                                       webhook_receiver):
    fake_replicate.knobs.steps_per_second = 20  # 30 steps: about 1.5 s of training
    webhook_receiver.script = [500]  # the first logs message fails: it is not sent again
    training = start(replicate_client, fake_replicate, dataset_zip, input={"steps": 30},
                     webhook=webhook_receiver.url, webhook_events_filter=["logs", "completed"])
    fake_replicate.wait_for(training.id)
    assert fake_replicate.webhooks.wait_idle()
    got = list(webhook_receiver.received)
    bodies = [json.loads(r.body) for r in got]
    assert bodies[-1]["status"] == "succeeded" and all(b["status"] == "processing" for b in bodies[:-1])
    sent = [a.at for a in fake_replicate.webhook_attempts if a.event == "logs"]
    assert len(sent) == len(got) - 1 >= 2
    assert all(b - a >= 0.45 for a, b in zip(sent, sent[1:], strict=False))
    assert len({r.headers["webhook-id"] for r in got}) == len(got)  # no retries: every message once
    assert all(bodies[-1]["logs"].startswith(b["logs"]) for b in bodies)


def test_default_filter_redirects_duplicates_and_dead_receivers(fake_replicate, replicate_client, dataset_zip,
                                                                webhook_receiver):
    fake_replicate.set_speed(5)
    fake_replicate.webhooks.duplicate_completed = True
    plain = start(replicate_client, fake_replicate, dataset_zip, webhook=webhook_receiver.url)
    got = webhook_receiver.wait_until(lambda r: len(r) >= 2)
    assert fake_replicate.webhooks.wait_idle()
    assert len(webhook_receiver.received) == 2  # no filter: completed only (a training has no partial output)
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
    assert {json.loads(r.body)["id"] for r in got} == {plain.id}
    fake_replicate.webhooks.duplicate_completed = False

    webhook_receiver.redirect_to = "http://127.0.0.1:9/elsewhere"
    redirected = start(replicate_client, fake_replicate, dataset_zip, webhook=webhook_receiver.url)
    fake_replicate.wait_for(redirected.id)
    assert fake_replicate.webhooks.wait_idle()
    tries = [a for a in fake_replicate.webhook_attempts if a.training_id == redirected.id]
    assert [a.status for a in tries] == [307] * (1 + len(fake_replicate.webhooks.retry_delays))

    dead = start(replicate_client, fake_replicate, dataset_zip, webhook="http://127.0.0.1:9/nobody-listens")
    fake_replicate.wait_for(dead.id)
    assert fake_replicate.webhooks.wait_idle()
    tries = [a for a in fake_replicate.webhook_attempts if a.training_id == dead.id]
    assert len(tries) == 5 and all(a.status is None and "ConnectError" in a.error for a in tries)


# -- faults and call accounting --------------------------------------------------------------


def test_client_retries_injected_429_and_503_on_gets_only(fake_replicate, replicate_client, dataset_zip):
    training = start(replicate_client, fake_replicate, dataset_zip)
    fake_replicate.fail_gets(2, status=429)
    fake_replicate.fail_gets(1, status=503)
    started = time.monotonic()
    assert replicate_client.trainings.get(training.id).id == training.id  # RetryTransport, Retry-After: 0
    assert time.monotonic() - started < 2
    assert fake_replicate.calls(route=TRAINING_ROUTE, training_id=training.id) == 1
    assert fake_replicate.calls(method="GET", training_id=training.id) == 4
    injected = [c for c in fake_replicate.requests if c.injected]
    assert [c.status for c in injected] == [429, 429, 503]

    fake_replicate.fail_gets(11, status=503)  # more than the client's 10 attempts
    with pytest.raises(ReplicateError) as info:
        replicate_client.trainings.get(training.id)
    assert info.value.status == 503
    fake_replicate.fail_gets(1, status=429, path_prefix="/v1/trainings")
    replicate_client.trainings.cancel(training.id)  # a POST: never failed, never retried by the client
    assert fake_replicate.calls(method="POST", training_id=training.id) == 2  # create and cancel
    per_training = fake_replicate.calls_per_training()
    assert per_training[training.id] == fake_replicate.calls(training_id=training.id) == 4 + 10 + 2


def test_two_fakes_are_independent():
    with running_fake_replicate(steps_per_second=1000) as one, running_fake_replicate() as two:
        assert one.base_url != two.base_url and one.webhook_secret != two.webhook_secret
        assert one.knobs.steps_per_second == 1000 and two.knobs.steps_per_second != 1000
