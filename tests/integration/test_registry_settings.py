"""``update_repo_settings`` against the registry: the owner changes visibility; nobody else can."""

from __future__ import annotations

import uuid

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError


def test_the_owner_makes_a_private_repo_public_and_back(registry, alice_token, bob_token, hf_env):
    alice, bob = HfApi(endpoint=registry.endpoint, token=alice_token), HfApi(endpoint=registry.endpoint,
                                                                              token=bob_token)
    repo = f"alice/vis-{uuid.uuid4().hex[:8]}"
    alice.create_repo(repo, private=True)
    with pytest.raises(HfHubHTTPError):
        bob.repo_info(repo)
    alice.update_repo_settings(repo, private=False)
    assert bob.repo_info(repo).private is False
    alice.update_repo_settings(repo, visibility="private")
    with pytest.raises(HfHubHTTPError):
        bob.repo_info(repo)


def test_nobody_else_changes_visibility_and_an_empty_change_is_refused(registry, alice_token, bob_token, hf_env):
    repo = f"alice/vis-{uuid.uuid4().hex[:8]}"
    HfApi(endpoint=registry.endpoint, token=alice_token).create_repo(repo, private=False)
    with pytest.raises(HfHubHTTPError) as refused:
        HfApi(endpoint=registry.endpoint, token=bob_token).update_repo_settings(repo, private=True)
    assert refused.value.response.status_code in (403, 404)
    assert HfApi(endpoint=registry.endpoint, token=alice_token).repo_info(repo).private is False
    import httpx

    answer = httpx.put(f"{registry.endpoint}/api/models/{repo}/settings", json={"gated": "auto"},
                       headers={"Authorization": f"Bearer {alice_token}"})
    assert answer.status_code == 400 and "nothing to change" in answer.text
