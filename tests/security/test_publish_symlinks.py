"""Attacks on what a push publishes through symbolic links, special files and swaps after selection.

A training command can leave links in its output (``ln -s /etc/shadow shadow.bin``, ``ln -s
$HUBFERRY_HOME/keys/vault.key vault.bin``). Links out of the folder or into hubferry's home are
refused and never read; links inside the folder are followed only on request; a file swapped for a
link after it was selected is not followed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

import hubferry
from hubferry.config import load_settings
from hubferry.errors import PermanentError, ValidationError
from hubferry.hub import manifest
from hubferry.hub.upload import SourceFile

SECRET = b"root:$6$not-for-the-hub$:19000:0:99999:7:::\n"


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """HUBFERRY_HOME with a vault key, as a worker machine has it."""
    home = tmp_path / "hubferry-home"
    (home / "keys").mkdir(parents=True)
    (home / "keys" / "vault.key").write_bytes(b"vault-key-" + b"k" * 34)
    monkeypatch.setenv("HUBFERRY_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_TOKEN", "HUBFERRY_TOKEN", "HF_ENDPOINT", "HUBFERRY_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture()
def outside(tmp_path) -> Path:
    """A secret file outside the published folder (stands in for /etc/shadow)."""
    path = tmp_path / "etc" / "shadow"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


@pytest.fixture()
def folder(tmp_path) -> Path:
    folder = tmp_path / "output"
    (folder / "checkpoint-3").mkdir(parents=True)
    (folder / "checkpoint-3" / "model.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}      weights")
    (folder / "config.json").write_bytes(b'{"r": 8}')
    return folder


def _repo() -> str:
    return f"alice/links-{uuid.uuid4().hex[:8]}"


def _publish(folder: Path, repo: str, registry, token: str, **kwargs):
    settings = load_settings(retry_base_delay=0.01)
    return hubferry.publish(folder, repo, endpoint=registry.endpoint, token=token, settings=settings, **kwargs)


def _exists(registry, token: str, repo: str) -> bool:
    return HfApi(endpoint=registry.endpoint, token=token).repo_exists(repo)


@pytest.mark.parametrize("follow", [False, True])
def test_a_link_to_a_file_outside_the_folder_is_refused_never_followed(
    registry, alice_token, home, outside, folder, follow,
):
    (folder / "shadow.bin").symlink_to(outside)
    repo = _repo()
    with pytest.raises(ValidationError) as info:
        _publish(folder, repo, registry, alice_token, follow_symlinks=follow)
    assert "shadow.bin" in info.value.message and str(outside) in info.value.message
    assert "outside" in info.value.message and info.value.path == "shadow.bin"
    assert not _exists(registry, alice_token, repo)


@pytest.mark.parametrize("follow", [False, True])
def test_a_link_into_hubferry_home_is_refused_even_when_following_links(
    registry, alice_token, home, folder, follow,
):
    (folder / "vault.bin").symlink_to(home / "keys" / "vault.key")
    repo = _repo()
    with pytest.raises(ValidationError) as info:
        _publish(folder, repo, registry, alice_token, follow_symlinks=follow)
    assert "vault.bin" in info.value.message and "home" in info.value.message
    assert not _exists(registry, alice_token, repo)


def test_hubferry_push_refuses_links_out_of_the_folder_with_exit_2(registry, alice_token, home, outside, folder):
    (folder / "shadow.bin").symlink_to(outside)
    repo = _repo()
    env = {**os.environ, "HF_ENDPOINT": registry.endpoint}
    result = subprocess.run(
        [sys.executable, "-m", "hubferry", "push", str(folder), "--repo", repo, "--token", alice_token,
         "--follow-symlinks"], env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "shadow.bin" in result.stderr and "etc/shadow" in result.stderr
    assert SECRET.decode()[:10] not in result.stderr + result.stdout
    assert not _exists(registry, alice_token, repo)


def test_a_link_inside_the_folder_is_an_error_unless_asked_then_published_as_its_target(
    registry, alice_token, home, folder, tmp_path,
):
    (folder / "latest.safetensors").symlink_to(Path("checkpoint-3") / "model.safetensors")
    repo = _repo()
    with pytest.raises(ValidationError) as info:
        _publish(folder, repo, registry, alice_token)
    assert "latest.safetensors" in info.value.message and "--follow-symlinks" in info.value.message
    assert not _exists(registry, alice_token, repo)
    pub = _publish(folder, repo, registry, alice_token, follow_symlinks=True)
    assert pub.verified and "latest.safetensors" in {f.path_in_repo for f in pub.files}
    got = hf_hub_download(repo, "latest.safetensors", endpoint=registry.endpoint, token=alice_token,
                          cache_dir=tmp_path / "cache")
    assert Path(got).read_bytes() == (folder / "checkpoint-3" / "model.safetensors").read_bytes()


def test_folder_links_are_followed_inside_only_and_loops_are_refused(home, folder, outside):
    (folder / "best").symlink_to("checkpoint-3", target_is_directory=True)
    selected = manifest.select_paths(folder, follow_symlinks=True, forbidden_roots=[home])
    by_path = {s.path_in_repo: s.source for s in selected}
    assert by_path["best/model.safetensors"] == "checkpoint-3/model.safetensors"
    (folder / "checkpoint-3" / "again").symlink_to("..", target_is_directory=True)
    with pytest.raises(ValidationError, match="loop"):
        manifest.select_paths(folder, follow_symlinks=True, forbidden_roots=[home])
    (folder / "checkpoint-3" / "again").unlink()
    (folder / "etc").symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(ValidationError, match="outside"):
        manifest.select_paths(folder, follow_symlinks=True, forbidden_roots=[home])


def test_an_excluded_link_is_not_an_error(home, folder, outside):
    (folder / "shadow.bin").symlink_to(outside)
    selected = manifest.select_paths(folder, exclude=["*.bin"], forbidden_roots=[home])
    assert "shadow.bin" not in {s.path_in_repo for s in selected}


def test_a_folder_inside_or_containing_the_home_keys_is_refused(home, tmp_path):
    (home / "keys" / "sub").mkdir()
    for folder in (home, home / "keys", home / "keys" / "sub", home.parent):
        with pytest.raises(ValidationError, match="keys"):
            manifest.select_paths(folder, forbidden_roots=[home])
    allowed = home / "outputs" / "model"
    allowed.mkdir(parents=True)
    (allowed / "w.bin").write_bytes(b"x")
    assert [s.path_in_repo for s in manifest.select_paths(allowed, forbidden_roots=[home])] == ["w.bin"]


def test_a_fifo_is_refused_instead_of_hanging_the_push(home, folder):
    os.mkfifo(folder / "pipe.bin")
    with pytest.raises(ValidationError, match="pipe.bin"):
        manifest.select_paths(folder, forbidden_roots=[home])


def test_a_file_swapped_for_a_link_after_selection_is_not_followed(
    registry, alice_token, home, folder, outside, tmp_path,
):
    repo = _repo()

    def swap(event) -> None:
        if event.stage == "hashing" and not (folder / "config.json").is_symlink():
            (folder / "config.json").unlink()
            (folder / "config.json").symlink_to(outside)

    with pytest.raises(PermanentError) as info:
        _publish(folder, repo, registry, alice_token, progress=swap)
    assert info.value.category == "file_error" and "config.json" in info.value.message
    if _exists(registry, alice_token, repo):
        assert "config.json" not in HfApi(endpoint=registry.endpoint, token=alice_token).list_repo_files(repo)


def test_a_folder_swapped_for_a_link_after_selection_is_not_followed(home, folder, outside):
    selected = {s.path_in_repo: s for s in manifest.select_paths(folder, forbidden_roots=[home])}
    (outside.parent / "model.safetensors").write_bytes(SECRET)
    (folder / "checkpoint-3").rename(folder / "moved")
    (folder / "checkpoint-3").symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(PermanentError, match="without following links"):
        manifest.hash_file(selected["checkpoint-3/model.safetensors"], git_sha1_limit=1 << 20)


def test_the_upload_reader_refuses_a_file_replaced_after_hashing(home, folder, outside):
    item = next(s for s in manifest.select_paths(folder, forbidden_roots=[home]) if s.path_in_repo == "config.json")
    hashed, _ = manifest.hash_file(item, git_sha1_limit=1 << 20)
    reader = SourceFile(hashed, threading.Event())
    assert reader.read(4) == b'{"r"'  # the file hashed
    reader.seek(0)
    reader.close()
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(outside)
    with pytest.raises(PermanentError):
        SourceFile(hashed, threading.Event()).read()
    (folder / "config.json").unlink()
    (folder / "config.json").write_bytes(b'{"r": 9}')  # same size, another file
    with pytest.raises(PermanentError, match="replaced|changed"):
        SourceFile(hashed, threading.Event()).read()


def test_the_generated_card_never_reads_a_linked_training_file(tmp_path, outside):
    from hubferry.hub import card

    folder = tmp_path / "m"
    folder.mkdir()
    outside.write_text('{"base_model": "leaked/from-outside"}')
    (folder / "training_args.json").symlink_to(outside)
    info = card.complete_from_folder(card.CardInfo(), folder)
    assert info.base_model is None and "leaked" not in card.render(info, "alice/m")
