"""Tokens, visibility and repo lifecycle, driven through the real huggingface_hub client."""

from __future__ import annotations

import uuid

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils import get_session

from hubferry.testing import RunningRegistry


def _name(prefix: str = "repo") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_whoami_reports_user_and_role(api: HfApi) -> None:
    me = api.whoami()
    assert me["name"] == "alice"
    assert me["type"] == "user"
    assert me["auth"]["accessToken"]["role"] == "write"


def test_bad_token_is_401_with_error_code(registry: RunningRegistry, hf_env) -> None:
    with pytest.raises(HfHubHTTPError) as caught:
        HfApi(endpoint=registry.endpoint, token="hf_" + "x" * 34).whoami()
    assert caught.value.response.status_code == 401
    raw = get_session().get(f"{registry.endpoint}/api/whoami-v2", headers={"authorization": "Bearer hf_nope"})
    assert raw.status_code == 401
    assert raw.headers["X-Error-Code"]
    assert raw.json()["error"] == "Invalid user token"


def test_create_repo_public_private_exist_ok_and_dataset(api: HfApi, registry: RunningRegistry) -> None:
    public, private, dataset = f"alice/{_name()}", f"alice/{_name()}", f"alice/{_name('data')}"
    assert api.create_repo(public) == f"{registry.endpoint}/{public}"
    api.create_repo(private, private=True)
    url = api.create_repo(dataset, repo_type="dataset")
    assert url == f"{registry.endpoint}/datasets/{dataset}"
    assert url.repo_type == "dataset"

    assert api.create_repo(public, exist_ok=True) == f"{registry.endpoint}/{public}"
    with pytest.raises(HfHubHTTPError) as caught:
        api.create_repo(public)
    assert caught.value.response.status_code == 409
    assert caught.value.response.json()["url"] == f"{registry.endpoint}/{public}"

    assert api.model_info(public).private is False
    assert api.model_info(private).private is True
    info = api.dataset_info(dataset)
    assert info.id == dataset and len(info.sha) == 40
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]


def test_repo_name_is_validated_like_the_hub(api: HfApi, registry: RunningRegistry, alice_token: str) -> None:
    for bad in ("a--b", "x..y", "-lead", "name.git", "caf\u00e9"):
        response = get_session().post(
            f"{registry.endpoint}/api/repos/create",
            json={"name": bad},
            headers={"authorization": f"Bearer {alice_token}"},
        )
        assert response.status_code == 400, bad
        assert response.headers["X-Error-Code"] == "BadRequest"


def test_other_users_private_repo_looks_missing(api: HfApi, registry: RunningRegistry, bob_token: str) -> None:
    secret = f"alice/{_name('secret')}"
    api.create_repo(secret, private=True)
    bob = HfApi(endpoint=registry.endpoint, token=bob_token)
    anonymous = HfApi(endpoint=registry.endpoint, token=False)
    for client in (bob, anonymous):
        with pytest.raises(RepositoryNotFoundError):
            client.model_info(secret)
        with pytest.raises(RepositoryNotFoundError):
            client.list_repo_files(secret)
    with pytest.raises(RepositoryNotFoundError):
        bob.model_info(f"alice/{_name('never-created')}")


def test_public_repo_reads_anonymously_but_not_writes(api: HfApi, repo_id: str, registry: RunningRegistry) -> None:
    anonymous = HfApi(endpoint=registry.endpoint, token=False)
    assert anonymous.list_repo_files(repo_id) == [".gitattributes"]
    with pytest.raises(HfHubHTTPError) as caught:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert caught.value.response.status_code == 401


def test_create_in_other_namespace_is_403(registry: RunningRegistry, bob_token: str, hf_env) -> None:
    bob = HfApi(endpoint=registry.endpoint, token=bob_token)
    with pytest.raises(HfHubHTTPError) as caught:
        bob.create_repo(f"alice/{_name('intruder')}")
    assert caught.value.response.status_code == 403
    assert "namespace" in caught.value.response.json()["error"]


def test_writing_to_another_users_public_repo_is_403(repo_id: str, registry: RunningRegistry, bob_token: str) -> None:
    bob = HfApi(endpoint=registry.endpoint, token=bob_token)
    with pytest.raises(HfHubHTTPError) as caught:
        bob.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert caught.value.response.status_code == 403


def test_read_only_token_cannot_write(registry: RunningRegistry, repo_id: str, api: HfApi) -> None:
    reader = HfApi(endpoint=registry.endpoint, token=registry.create_token("alice", read_only=True))
    assert reader.whoami()["auth"]["accessToken"]["role"] == "read"
    assert reader.list_repo_files(repo_id) == [".gitattributes"]
    with pytest.raises(HfHubHTTPError) as caught:
        reader.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert caught.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as caught:
        reader.create_repo(f"alice/{_name()}")
    assert caught.value.response.status_code == 403
    assert api.list_repo_files(repo_id) == [".gitattributes"]


def test_delete_repo(api: HfApi, repo_id: str) -> None:
    api.delete_repo(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_id)
    api.delete_repo(repo_id, missing_ok=True)
    api.create_repo(repo_id)
    assert api.list_repo_files(repo_id) == [".gitattributes"]


def test_tokens_are_stored_hashed(registry: RunningRegistry) -> None:
    token = registry.create_token("carol")
    assert token.startswith("hf_") and len(token) == 37
    database = (registry.data_dir / "registry.sqlite3").read_bytes()
    wal = registry.data_dir / "registry.sqlite3-wal"
    assert token.encode() not in database + (wal.read_bytes() if wal.exists() else b"")


def test_xet_token_routes_are_404(registry: RunningRegistry, repo_id: str, alice_token: str) -> None:
    for route in ("xet-write-token", "xet-read-token"):
        response = get_session().get(
            f"{registry.endpoint}/api/models/{repo_id}/{route}/main", headers={"authorization": f"Bearer {alice_token}"}
        )
        assert response.status_code == 404
        assert response.headers["X-Error-Code"] == "XetNotSupported"
        assert "HF_HUB_DISABLE_XET" in response.json()["error"]


def test_unknown_route_errors_carry_error_code(registry: RunningRegistry) -> None:
    response = get_session().get(f"{registry.endpoint}/api/nothing/here/at/all/x")
    assert response.status_code == 404
    assert response.headers["X-Error-Code"]
    assert "error" in response.json()
