"""Hub repository names: rules, slugs of config names, and suffixes for taken names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hubferry.domain.naming import (
    MAX_NAME_LENGTH,
    auto_repo_id,
    is_valid_repo_name,
    repo_name_problem,
    slugify,
    validate_repo_id,
    with_suffix,
)
from hubferry.errors import ValidationError


@pytest.mark.parametrize(
    "name",
    ["corgi-lora", "Corgi_LoRA.v2", "a", "_private", "x" * MAX_NAME_LENGTH, "flux.1-dev"],
)
def test_valid_names(name: str) -> None:
    assert is_valid_repo_name(name)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("x" * (MAX_NAME_LENGTH + 1), "longer than 96"),
        ("corgi lora", "may only contain"),
        ("corgi/lora", "may only contain"),
        ("corgi--lora", "'--'"),
        ("corgi..lora", "'..'"),
        ("-corgi", "start or end"),
        ("corgi.", "start or end"),
        ("corgi.git", ".git"),
        ("café", "may only contain"),
    ],
)
def test_invalid_names_say_why(name: str, problem: str) -> None:
    assert problem in (repo_name_problem(name) or "")


def test_validate_repo_id_names_the_field() -> None:
    assert validate_repo_id("alice/corgi") == "alice/corgi"
    for bad in ("corgi", "alice/corgi/x", "alice/", "/corgi", "al ice/corgi", "alice/corgi--x"):
        with pytest.raises(ValidationError) as info:
            validate_repo_id(bad, field="target_repo")
        assert info.value.field == "target_repo" and info.value.category == "validation"


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("Corgi LoRA", "corgi-lora"),
        ("  My  Model!! v2 ", "my-model-v2"),
        ("Café Crème", "cafe-creme"),
        ("a -- b .. c", "a-b-c"),
        ("v1..0", "v1.0"),
        ("...dots...", "dots"),
        ("sdxl/corgi_style", "sdxl-corgi_style"),
        ("repo.git", "repo"),
        ("🐶🐶", "model"),
        ("", "model"),
    ],
)
def test_slugify(text: str, slug: str) -> None:
    assert slugify(text) == slug


@given(st.text(max_size=300))
def test_every_slug_is_a_valid_name(text: str) -> None:
    slug = slugify(text)
    assert is_valid_repo_name(slug), (text, slug, repo_name_problem(slug))
    assert slug == slugify(slug)


def test_long_names_are_cut_to_fit_including_the_suffix() -> None:
    long = "word-" * 40
    assert len(slugify(long)) <= MAX_NAME_LENGTH
    suffixed = with_suffix(slugify(long), 123)
    assert suffixed.endswith("-123") and len(suffixed) <= MAX_NAME_LENGTH and is_valid_repo_name(suffixed)


def test_auto_repo_id_takes_the_first_free_suffix() -> None:
    assert auto_repo_id("alice", "Corgi LoRA") == "alice/corgi-lora"
    taken = {"alice/corgi-lora", "alice/corgi-lora-2"}
    assert auto_repo_id("alice", "Corgi LoRA", taken) == "alice/corgi-lora-3"
    assert auto_repo_id("alice", "Corgi LoRA", {"ALICE/Corgi-LoRA"}) == "alice/corgi-lora-2"


def test_auto_repo_id_accepts_a_predicate() -> None:
    asked: list[str] = []

    def exists(repo_id: str) -> bool:
        asked.append(repo_id)
        return len(asked) < 4

    assert auto_repo_id("bob", "style", exists) == "bob/style-4"
    assert asked == ["bob/style", "bob/style-2", "bob/style-3", "bob/style-4"]


def test_auto_repo_id_gives_up_and_rejects_bad_usernames() -> None:
    with pytest.raises(ValidationError, match="taken"):
        auto_repo_id("bob", "style", lambda _: True, max_suffix=5)
    with pytest.raises(ValidationError) as info:
        auto_repo_id("bad user", "style")
    assert info.value.field == "hf_username"
