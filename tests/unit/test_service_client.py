"""The CLI's service client: settings, the API's errors as hubferry errors, and the event stream's resume."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hubferry.cli.remote import ServiceClient, job_events
from hubferry.cli.remote_backend import RemoteJobs
from hubferry.config import Settings
from hubferry.errors import ConfigError, PermanentError, TransientError, ValidationError

ROOT = Path(__file__).parents[2]
TOKEN = "hfy_" + "s3cr3t" * 6
URL = "http://service.test:8470"


def client(handler) -> ServiceClient:  # type: ignore[no-untyped-def]
    return ServiceClient(URL, TOKEN, transport=httpx.MockTransport(handler))


def settings(**values: str) -> Settings:
    return Settings(home="/nonexistent", **values)  # type: ignore[arg-type]


def test_the_service_is_used_only_with_both_url_and_token_and_the_token_is_never_shown():
    assert settings().service() is None
    both = settings(url=URL + "/", api_token=TOKEN)
    assert both.service() == (URL, TOKEN)
    assert TOKEN not in repr(both) and TOKEN not in str(both.model_dump())
    with pytest.raises(ConfigError, match="HUBFERRY_API_TOKEN is not") as only_url:
        settings(url=URL).service()
    assert "hubferry users token NAME" in only_url.value.hint
    with pytest.raises(ConfigError, match="HUBFERRY_URL is not") as only_token:
        settings(api_token=TOKEN).service()
    assert TOKEN not in str(only_token.value)
    with pytest.raises(ConfigError, match="must be an http"):
        settings(url="ftp://service.test", api_token=TOKEN).service()


def test_the_environment_names_are_hubferry_url_and_hubferry_api_token(monkeypatch):
    monkeypatch.setenv("HUBFERRY_URL", URL)
    monkeypatch.setenv("HUBFERRY_API_TOKEN", TOKEN)
    assert Settings(home="/nonexistent").service() == (URL, TOKEN)  # type: ignore[arg-type]


def _error(status: int, body: dict | str) -> httpx.Response:
    if isinstance(body, str):
        return httpx.Response(status, text=body)
    return httpx.Response(status, json=body)


def api_error(category: str, message: str, hint: str = "", **extra: str) -> dict:
    return {"error": {"category": category, "message": message, "hint": hint, **extra}}


@pytest.mark.parametrize(("status", "body", "kind", "category", "message"), [
    (404, api_error("validation", "job job_x not found"), ValidationError, "validation", "job job_x not found"),
    (409, api_error("validation", "job j is published", "retry it"), ValidationError, "validation",
     "job j is published"),
    (422, api_error("validation", "repo_id: bad", field="repo_id"), ValidationError, "validation", "repo_id: bad"),
    (403, api_error("authentication", "only administrators may run a command"), PermanentError, "authentication",
     "only administrators may run a command"),
    (503, api_error("network", "the Hub is down", "try later"), TransientError, "network", "the Hub is down"),
    (500, api_error("internal", "boom"), PermanentError, "internal", "boom"),
    (502, "<html>bad gateway</html>", TransientError, "service_error", "answered 502"),
    (404, "<html>nope</html>", ValidationError, "validation", "without an error description"),
])
def test_api_errors_become_hubferry_errors(status, body, kind, category, message):
    service = client(lambda request: _error(status, body))
    with pytest.raises(kind) as raised:
        service.json("GET", "/api/v1/jobs/job_x")
    error = raised.value
    assert type(error) is kind and error.category == category and message in error.message
    if isinstance(body, dict):
        assert error.hint == body["error"]["hint"]
        assert error.context.get("field") == body["error"].get("field")


def test_a_refused_token_says_it_is_wrong_or_revoked_and_how_to_make_one():
    service = client(lambda request: _error(401, api_error("authentication", "sign in")))
    with pytest.raises(PermanentError) as raised:
        service.json("GET", "/api/v1/jobs")
    error = raised.value
    assert error.category == "authentication" and "wrong or was revoked" in error.message
    assert URL in error.message and "hubferry users token NAME" in error.hint
    assert TOKEN not in str(error) and TOKEN not in repr(service)


def test_the_token_is_sent_only_as_the_authorization_header():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"jobs": [], "next_cursor": None})

    client(handler).json("GET", "/api/v1/jobs", params={"limit": 5})
    assert seen[0].headers["authorization"] == f"Bearer {TOKEN}" and TOKEN not in str(seen[0].url)


@pytest.mark.parametrize(("exc", "category"), [(httpx.ConnectError("refused"), "network"),
                                               (httpx.ReadTimeout("slow"), "timeout")])
def test_an_unreachable_service_names_the_url_and_what_to_check(exc, category):
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(TransientError) as raised:
        client(handler).json("GET", "/api/v1/jobs")
    error = raised.value
    assert error.category == category and URL in error.message
    assert "check HUBFERRY_URL, and that `hubferry serve` runs there" == error.hint


def _sse(*events: tuple[str, str, dict], retry_ms: int | None = None, then_break: bool = False) -> Iterator[bytes]:
    yield b": job j\n" + (f"retry: {retry_ms}\n".encode() if retry_ms else b"") + b"\n"
    for event, event_id, data in events:
        yield f"event: {event}\nid: {event_id}\ndata: {json.dumps(data)}\n\n".encode()
    if then_break:
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def test_the_event_stream_resumes_after_the_last_event_received():
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            body = _sse(("timeline", "1", {"seq": 1}), ("progress", "1.1", {"state": "training"}), retry_ms=250,
                        then_break=True)
        elif len(requests) == 2:
            body = _sse(("timeline", "2", {"seq": 2}), ("end", "", {"state": "published"}))
        else:
            raise AssertionError("no third connection expected")
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    sleeps: list[float] = []
    events = list(job_events(client(handler), "job_j", sleep=sleeps.append))
    assert [(e.event, e.id) for e in events] == [("timeline", "1"), ("progress", "1.1"), ("timeline", "2")]
    assert "last-event-id" not in requests[0].headers
    assert requests[1].headers["last-event-id"] == "1.1"
    assert sleeps == [0.25]  # the stream's own retry: field


def test_a_stream_of_an_ended_job_stops_on_204_and_one_that_stays_down_is_reported():
    answers = iter([httpx.Response(200, content=_sse(("timeline", "4", {"seq": 4}), then_break=True)),
                    httpx.Response(204)])
    events = list(job_events(client(lambda request: next(answers)), "job_j", sleep=lambda s: None))
    assert [e.id for e in events] == ["4"]

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(TransientError, match="cannot reach the hubferry service"):
        list(job_events(client(down), "job_j", sleep=lambda s: None))


def test_followed_log_lines_are_whole_lines_across_reads():
    log = b"first line\nsecond li" + b"ne\rbar 1\rbar 2\nlast"
    reads: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        offset, length = int(request.url.params["offset"]), int(request.url.params["length"])
        reads.append({"offset": offset})
        size = cut[0]
        data = log[offset:min(size, offset + length)]
        return httpx.Response(200, json={"text": data.decode(), "offset": offset, "next_offset": offset + len(data),
                                         "size": size})

    jobs = RemoteJobs(client(handler), settings())
    cut = [20]  # the log as written so far: a line and a half
    lines, cursor = jobs.log_after("job_j", "0", final=False)
    assert lines == ["first line"]
    cut[0] = len(log)
    lines, cursor = jobs.log_after("job_j", cursor, final=False)
    assert lines == ["second line", "bar 1", "bar 2"]
    lines, cursor = jobs.log_after("job_j", cursor, final=True)
    assert lines == ["last"] and int(cursor) == len(log)


def _recording(answers: dict[tuple[str, str], dict]) -> tuple[ServiceClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201 if request.method == "POST" else 200,
                              json=answers[(request.method, request.url.path)])

    return client(handler), seen


JOB = {"id": "job_r", "name": "sft", "owner": "ann", "state": "queued", "trainer": "runpod", "repo_id": "ann/sft",
       "private": True, "repo_url": None, "commit_sha": None, "error": None, "output_dir": None, "log_path": None,
       "progress": {"stage": None, "percent": None, "step": None, "total_steps": None, "loss": None,
                    "eta_seconds": None}, "attempts": 1, "created_at": "2026-12-07T00:00:00+00:00",
       "updated_at": "2026-12-07T00:00:00+00:00", "timeline": []}


def test_a_runpod_job_sends_its_training_config_as_a_table_and_uploads_a_local_dataset(tmp_path, capsys):
    import tomllib

    config = tmp_path / "job.toml"
    (tmp_path / "rows.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}, '
                                         '{"role": "assistant", "content": "hello"}]}\n')
    source = (ROOT / "examples" / "runpod_sft.toml").read_text()
    config.write_text(source.replace('dataset = "trl-lib/Capybara"', 'dataset = "rows.jsonl"'))
    service, seen = _recording({("POST", "/api/v1/datasets"): {"id": "ds_0123456789abcdef"},
                                ("POST", "/api/v1/jobs"): JOB, ("GET", "/api/v1/jobs/job_r"): JOB})
    jobs = RemoteJobs(service, settings(runpod_api_key="rpa_" + "k" * 30))
    options = {"name": None, "repo": None, "private": True, "endpoint": None, "token": None, "skip_preflight": False,
               "gpu": "NVIDIA A40", "cloud_type": "COMMUNITY", "image": None, "runpod_key": None,
               "token_in_env": False}
    assert jobs.train("runpod", options, [], wait=False, json_output=False, config_file=config) == 0
    upload, create = seen[0], seen[1]
    assert upload.url.path == "/api/v1/datasets" and b'filename="rows.jsonl"' in upload.content
    body = json.loads(create.content)
    assert body["trainer"] == "runpod" and body["config"] == tomllib.loads(config.read_text())
    assert body["dataset"] == {"upload_id": "ds_0123456789abcdef"}
    assert (body["gpu"], body["cloud_type"], body["runpod_key"]) == ("NVIDIA A40", "COMMUNITY", "rpa_" + "k" * 30)
    assert "image" not in body and "token" not in body
    assert "job job_r: " in capsys.readouterr().err


def test_a_runpod_job_without_its_config_or_with_a_bad_one_is_refused_before_any_request(tmp_path):
    service, seen = _recording({})
    jobs = RemoteJobs(service, settings())
    with pytest.raises(ValidationError, match="needs its training config"):
        jobs.train("runpod", {}, [], wait=False, json_output=False, config_file=None)
    bad = tmp_path / "bad.toml"
    bad.write_text('method = "sft"\ndataset = "a/b"\n[model]\nbase = "m/n"\n[training]\nnum_epochz = 1\n')
    with pytest.raises(ValidationError, match="num_epochz"):
        jobs.train("runpod", {}, [], wait=False, json_output=False, config_file=bad)
    assert seen == []
