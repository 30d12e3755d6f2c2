"""HubClients: injectable transports, per-client timeouts and routing, nothing global flipped per call."""

from __future__ import annotations

import json
import logging
import threading

import httpx2
import pytest
from huggingface_hub import CommitOperationAdd, constants
from huggingface_hub.utils import are_progress_bars_disabled, set_client_factory
from huggingface_hub.utils._http import default_client_factory

from hubferry.config import load_settings
from hubferry.errors import TransientError
from hubferry.hub import client, retry
from hubferry.hub.client import HubClients

WHOAMI = {"type": "user", "name": "alice", "orgs": [], "auth": {"accessToken": {"role": "write"}}}


class Recorder:
    """A fake Hub: answers whoami, and remembers every request it saw."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[httpx2.Request] = []
        self.timeouts: list[dict] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        self.timeouts.append(dict(request.extensions.get("timeout") or {}))
        if request.url.path == "/api/whoami-v2":
            return httpx2.Response(200, json={**WHOAMI, "name": self.name})
        return httpx2.Response(404, json={"error": "nope"}, headers={"X-Error-Code": "RepoNotFound"})


def _settings(**overrides):
    return load_settings(**{"max_attempts": 3, "retry_base_delay": 0.0, **overrides})


def test_a_client_uses_the_injected_transport_and_its_settings_timeouts():
    hub = Recorder("alice")
    clients = HubClients(_settings(connect_timeout=3.0, read_timeout=7.0), transport=httpx2.MockTransport(hub))
    api = clients.api("http://hub.test", "hf_" + "t" * 34)
    assert api.whoami()["name"] == "alice"
    assert [r.url.path for r in hub.requests] == ["/api/whoami-v2"]
    assert hub.timeouts[0] == {"connect": 3.0, "read": 7.0, "write": 7.0, "pool": 7.0}
    assert client.ROUTE_HEADER.lower() not in {k.lower() for k in hub.requests[0].headers}  # never sent


def test_two_clients_in_two_threads_reach_their_own_transports_with_their_own_timeouts():
    one, two = Recorder("one"), Recorder("two")
    first = HubClients(_settings(read_timeout=11.0), transport=httpx2.MockTransport(one))
    second = HubClients(_settings(read_timeout=22.0), transport=httpx2.MockTransport(two))
    apis = [first.api("http://one.test", "hf_" + "1" * 34), second.api("http://two.test", "hf_" + "2" * 34)]
    names: list[str] = []

    def work(api) -> None:
        for _ in range(20):
            names.append(api.whoami()["name"])

    threads = [threading.Thread(target=work, args=(api,)) for api in apis]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(names)) == ["one", "two"] and len(names) == 40
    assert {r.url.host for r in one.requests} == {"one.test"} and len(one.requests) == 20
    assert {r.url.host for r in two.requests} == {"two.test"} and len(two.requests) == 20
    assert {t["read"] for t in one.timeouts} == {11.0} and {t["read"] for t in two.timeouts} == {22.0}


def test_requests_without_a_route_header_follow_their_origin():
    """Presigned LFS URLs are sent bare (no headers): they go where their origin's client goes."""
    hub = Recorder("alice")
    api = HubClients(_settings(), transport=httpx2.MockTransport(hub)).api("http://cdn.test", "hf_" + "c" * 34)
    from huggingface_hub.utils import get_session

    response = get_session().put("http://cdn.test/lfs-storage/abc?sig=1", content=b"x")
    assert response.status_code == 404 and hub.requests[-1].method == "PUT"
    assert api.endpoint == "http://cdn.test"


def test_making_and_using_clients_flips_no_global_setting():
    before = (constants.HF_HUB_DISABLE_XET, are_progress_bars_disabled(), logging.getLogger().level,
              logging.getLogger("huggingface_hub").level)
    hub = Recorder("alice")
    for verbose in (False, True):
        HubClients(_settings(), transport=httpx2.MockTransport(hub)).api(
            "http://hub.test", "hf_" + "g" * 34, verbose=verbose).whoami()
    after = (constants.HF_HUB_DISABLE_XET, are_progress_bars_disabled(), logging.getLogger().level,
             logging.getLogger("huggingface_hub").level)
    assert after == before


def test_a_replaced_client_factory_is_reinstalled_once_for_the_next_client():
    set_client_factory(default_client_factory)  # what a user's script might do after importing hubferry
    hub = Recorder("alice")
    api = HubClients(_settings(), transport=httpx2.MockTransport(hub)).api("http://hub.test", "hf_" + "r" * 34)
    assert api.whoami()["name"] == "alice" and len(hub.requests) == 1


def test_xet_is_chosen_per_endpoint_without_touching_huggingface_hub(monkeypatch):
    settings = _settings(xet="auto")
    clients = HubClients(settings)
    monkeypatch.setattr(client, "xet_installed", lambda: True)
    assert clients.use_xet("https://huggingface.co") and not clients.use_xet("http://127.0.0.1:8080")
    assert not HubClients(_settings(xet="off")).use_xet("https://huggingface.co")


def _commit_a_card_twice(hub) -> tuple[TransientError, list[float]]:
    """Commit a README (so validate-yaml is called) through ``hub`` with two attempts; the error and sleeps."""
    api = HubClients(_settings(), transport=httpx2.MockTransport(hub)).api("http://hub.test", "hf_" + "y" * 34)
    slept: list[float] = []
    policy = retry.RetryPolicy(max_attempts=2, base_delay=0.0, sleep=slept.append)
    op = CommitOperationAdd("README.md", b"---\nlicense: mit\n---\n# hi\n")
    with pytest.raises(TransientError) as info:
        retry.call(lambda: api.create_commit("alice/x", [op], commit_message="m"), what="create commit",
                   endpoint=api.endpoint, policy=policy)
    return info.value, slept


def test_text_and_html_proxy_answers_on_validate_yaml_are_transient_and_retried():
    """A proxy's text 429 on validate-yaml made huggingface_hub call .json() on 'Too Many Requests'."""
    answers = iter([
        httpx2.Response(429, text="429 Too Many Requests\n", headers={"Content-Type": "text/plain"}),
        httpx2.Response(503, text="<html><head><title>503 Service Temporarily Unavailable</title></head></html>",
                        headers={"Content-Type": "text/html"}),
    ])
    seen: list[str] = []

    def hub(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.url.path)
        return next(answers)

    error, slept = _commit_a_card_twice(hub)
    # First attempt: the text 429 was a transient failure (retried), not a bug to report; second: the HTML 503.
    assert len(slept) == 1 and seen == ["/api/validate-yaml", "/api/validate-yaml"]
    assert error.category == "service_error" and error.status == 503 and error.attempt == 2
    assert "text/html" in error.message and error.url == "http://hub.test/api/validate-yaml"
    assert "re-run to resume" in error.hint


def test_a_proxy_429_without_json_names_status_url_and_waits_for_retry_after():
    def hub(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(429, text="slow down", headers={"Content-Type": "text/plain", "Retry-After": "3"})

    error, slept = _commit_a_card_twice(hub)
    assert slept == [3.0]
    assert error.category == "rate_limit" and error.status == 429
    assert error.url == "http://hub.test/api/validate-yaml" and "text/plain" in error.message
    assert json.loads(json.dumps(error.to_dict()))["retryable"] is True
