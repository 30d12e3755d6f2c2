"""HubPublisher, the Publisher port services use, against the built-in registry."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from hubferry import testing
from hubferry.config import load_settings
from hubferry.errors import PermanentError, TransientError, ValidationError, VerificationError
from hubferry.hub.card import CardInfo
from hubferry.hub.client import HubClients
from hubferry.hub.publisher import HubPublisher
from hubferry.services.ports import HubTarget

MiB = 1024 * 1024


@pytest.fixture()
def publisher(tmp_path, monkeypatch) -> HubPublisher:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_TOKEN", "HUBFERRY_TOKEN", "HF_ENDPOINT", "HUBFERRY_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(home=tmp_path / "home", retry_base_delay=0.01, retry_max_delay=0.05, max_attempts=8)
    return HubPublisher(settings, HubClients(settings))


@pytest.fixture()
def target(registry, alice_token) -> HubTarget:
    return HubTarget(registry.endpoint, alice_token)


def _name() -> str:
    return f"alice/pub-{uuid.uuid4().hex[:8]}"


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "adapter.safetensors").write_bytes(os.urandom(2 * MiB))
    (folder / "config.json").write_bytes(b'{"r": 4}')
    return folder


def test_identify_names_the_user_and_role(publisher, target):
    identity = publisher.identify(target)
    assert identity.name == "alice" and identity.role == "write" and identity.can_write("alice")


def test_a_bad_token_is_a_permanent_authentication_error(publisher, registry):
    with pytest.raises(PermanentError) as info:
        publisher.identify(HubTarget(registry.endpoint, "hf_" + "n" * 34))
    assert info.value.category == "authentication" and info.value.status == 401 and info.value.attempt == 1


def test_an_unreachable_endpoint_is_transient_never_a_raw_exception(publisher, alice_token):
    dead = HubTarget(f"http://127.0.0.1:{testing.free_port()}", alice_token)
    for call in (lambda: publisher.identify(dead), lambda: publisher.repo_exists(dead, "alice/x"),
                 lambda: publisher.check_target(dead, "alice/x")):
        with pytest.raises(TransientError) as info:
            call()
        assert info.value.category == "network" and info.value.attempt == 3  # a person waits: a few quick tries


def test_check_target_accepts_a_free_repo_and_the_users_own_existing_repo(publisher, target, api):
    name = _name()
    assert publisher.check_target(target, name).name == "alice"
    api.create_repo(name)
    assert publisher.check_target(target, name).name == "alice"


def test_check_target_refuses_read_only_tokens_other_namespaces_and_others_repos(
    publisher, registry, target, bob_token,
):
    read_only = HubTarget(registry.endpoint, registry.create_token("alice", read_only=True))
    with pytest.raises(PermanentError, match="read-only"):
        publisher.check_target(read_only, _name())
    with pytest.raises(PermanentError, match="cannot write to namespace 'bob'"):
        publisher.check_target(target, "bob/free-name")
    theirs = f"bob/theirs-{uuid.uuid4().hex[:6]}"
    HfApi(endpoint=registry.endpoint, token=bob_token).create_repo(theirs, private=False)
    with pytest.raises(PermanentError) as info:
        publisher.check_target(target, theirs)
    assert theirs in info.value.message and "belongs to 'bob'" in info.value.message
    with pytest.raises(ValidationError):
        publisher.check_target(target, "not a repo id")


def test_repo_exists_is_retried_through_faults_and_never_raises_a_raw_exception(tmp_path, publisher):
    with testing.running_registry(tmp_path / "flaky", fault_rate=0.3, fault_seed=11,
                                  fault_kinds="503,html502,text429", fault_paths="/api/models/") as hub:
        token = hub.create_token("alice")
        HfApi(endpoint=hub.endpoint, token=token).create_repo("alice/there")
        flaky = HubTarget(hub.endpoint, token)
        answers: list[object] = []
        for repo, expected in [("alice/there", True)] * 8 + [("alice/absent", False)] * 8:
            try:
                answers.append(publisher.repo_exists(flaky, repo) is expected)
            except TransientError as exc:  # three faults in a row: classified, retryable, with context
                assert exc.attempt == 3 and exc.status in (429, 502, 503)
                answers.append("gave up")
        assert hub.faults_injected() >= 4 and answers.count(True) >= 14, answers


def test_publish_then_verify_and_a_tampered_copy_is_caught(publisher, registry, target, tmp_path):
    name = _name()
    folder = _folder(tmp_path)
    events = []
    publication = publisher.publish(folder, name, target, private=True, message="first", card=CardInfo(),
                                    progress=events.append)
    assert not publication.verified and len(publication.commit_sha) == 40
    assert {f.path_in_repo for f in publication.files} == {"adapter.safetensors", "config.json", "README.md"}
    assert events and events[-1].stage == "committing"
    files = publisher.verify(folder, name, target, publication.commit_sha, CardInfo())
    assert {f.sha256 for f in files} == {f.sha256 for f in publication.files}  # hashed again, card included
    testing.tamper_file(registry.data_dir, name, "adapter.safetensors")
    with pytest.raises(VerificationError, match="adapter.safetensors"):
        publisher.verify(folder, name, target, publication.commit_sha, CardInfo(), files=publication.files)


def test_publish_never_publishes_from_the_home(publisher, target, tmp_path):
    home = publisher.settings.home
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "vault.key").write_bytes(b"k" * 44)
    folder = _folder(tmp_path)
    (folder / "vault.bin").symlink_to(home / "keys" / "vault.key")
    with pytest.raises(ValidationError, match="vault.bin"):
        publisher.publish(folder, _name(), target, private=True, message="m", card=CardInfo(), progress=print)
    with pytest.raises(ValidationError, match="keys"):
        publisher.publish(home, _name(), target, private=True, message="m", card=CardInfo(), progress=print)
