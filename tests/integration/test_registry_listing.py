"""``HfApi.list_models`` / ``list_datasets`` against the registry: filters, sorting, paging, privacy."""

from __future__ import annotations

from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi

from hubferry.testing import RunningRegistry, running_registry


@pytest.fixture(scope="module")
def lister(registry: RunningRegistry) -> HfApi:
    """User ``lister`` with public ``alpha`` and ``beta``, private ``gamma`` and dataset ``delta``."""
    api = HfApi(endpoint=registry.endpoint, token=registry.create_token("lister"))
    api.create_repo("lister/alpha")
    api.create_repo("lister/beta")
    api.create_repo("lister/gamma", private=True)
    api.create_repo("lister/delta", repo_type="dataset")
    return api


def _ids(models: object) -> list[str]:
    return [m.id for m in models]  # type: ignore[attr-defined]


def test_list_models_by_author_shows_private_repos_to_their_owner_only(
    lister: HfApi, registry: RunningRegistry, bob_token: str, hf_env: Path
) -> None:
    assert sorted(_ids(lister.list_models(author="lister"))) == ["lister/alpha", "lister/beta", "lister/gamma"]
    for other in (HfApi(endpoint=registry.endpoint, token=bob_token), HfApi(endpoint=registry.endpoint, token=False)):
        assert sorted(_ids(other.list_models(author="lister"))) == ["lister/alpha", "lister/beta"]
    (gamma,) = [m for m in lister.list_models(author="lister") if m.id == "lister/gamma"]
    assert gamma.private is True and gamma.author == "lister" and len(gamma.sha) == 40


def test_search_sort_limit_and_datasets(lister: HfApi, registry: RunningRegistry) -> None:
    assert _ids(lister.list_models(author="lister", search="ALP")) == ["lister/alpha"]
    assert _ids(lister.list_models(author="lister", sort="created_at")) == ["lister/gamma", "lister/beta",
                                                                            "lister/alpha"]  # fmt: skip
    assert len(list(lister.list_models(author="lister", limit=1))) == 1
    assert _ids(lister.list_datasets(author="lister")) == ["lister/delta"]
    assert _ids(lister.list_models(author="lister", filter="text-classification")) == []
    ascending = httpx2.get(f"{registry.endpoint}/api/models",
                           params={"author": "lister", "sort": "id", "direction": 1}).json()  # fmt: skip
    assert [m["id"] for m in ascending] == ["lister/alpha", "lister/beta"]


def test_listing_pages_through_link_headers(tmp_path: Path, hf_env: Path) -> None:
    with running_registry(tmp_path, repos_page_size=2) as hub:
        api = HfApi(endpoint=hub.endpoint, token=hub.create_token("pager"))
        names = [f"pager/m{i}" for i in range(5)]
        for name in names:
            api.create_repo(name)
        first = httpx2.get(f"{hub.endpoint}/api/models", params={"author": "pager"})
        assert len(first.json()) == 2 and 'rel="next"' in first.headers["link"]
        assert sorted(_ids(api.list_models(author="pager"))) == names
        assert len(list(api.list_models(author="pager", limit=3))) == 3
