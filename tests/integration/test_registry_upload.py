"""Uploads and commits through huggingface_hub: regular, LFS basic and multipart, folders, refs."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RevisionNotFoundError

from hubferry.testing import RunningRegistry, file_hashes

MiB = 1024 * 1024


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_upload_file_regular_basic_lfs_and_multipart(api: HfApi, repo_id: str) -> None:
    small_lfs = os.urandom(300 * 1024)  # binary: LFS, below the 1 MiB multipart threshold
    big_lfs = os.urandom(MiB + 3 * 256 * 1024 + 17)  # 8 parts of 256 KiB (last one short)
    api.upload_file(path_or_fileobj=b'{"hidden": 8}\n', path_in_repo="config.json", repo_id=repo_id)
    api.upload_file(path_or_fileobj=small_lfs, path_in_repo="weights/small.bin", repo_id=repo_id)
    info = api.upload_file(path_or_fileobj=big_lfs, path_in_repo="weights/model.safetensors", repo_id=repo_id)

    assert len(info.oid) == 40
    assert info.commit_url.endswith(f"/{repo_id}/commit/{info.oid}")
    files = {f.path: f for f in api.get_paths_info(repo_id, ["config.json", "weights/small.bin",
                                                             "weights/model.safetensors"])}  # fmt: skip
    assert files["config.json"].lfs is None
    assert files["config.json"].blob_id == hashlib.sha1(b"blob 14\0" + b'{"hidden": 8}\n').hexdigest()
    assert files["weights/small.bin"].lfs.sha256 == hashlib.sha256(small_lfs).hexdigest()
    assert files["weights/model.safetensors"].lfs.sha256 == hashlib.sha256(big_lfs).hexdigest()
    assert files["weights/model.safetensors"].size == len(big_lfs)
    assert api.model_info(repo_id).sha == info.oid


def test_upload_folder_nested_unicode_empty_and_10_mib(api: HfApi, repo_id: str, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    _write(folder / "README.md", b"---\nlicense: mit\ntags: [test]\n---\n# Model\n")
    _write(folder / "config.json", b'{"layers": 2}')
    _write(folder / "empty.txt", b"")
    _write(folder / "a" / "b" / "c" / "deep.txt", b"deep\n")
    _write(folder / "donn\u00e9es" / "\u6a21\u578b \u00e9t\u00e9.txt", "unicode \u2713\n".encode())
    _write(folder / "ten.txt", b"0123456789abcdef" * (10 * MiB // 16))  # exactly 10 MiB of text: regular
    _write(folder / "weights.safetensors", os.urandom(4096))
    _write(folder / "big.bin", os.urandom(2 * MiB))  # multipart

    info = api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message="Add the model")

    local = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    remote = {f.path: f for f in api.list_repo_tree(repo_id, recursive=True) if hasattr(f, "blob_id")}
    assert set(remote) == set(local) | {".gitattributes"}
    for path, local_path in local.items():
        sha256, sha1, size = file_hashes(str(local_path))
        entry = remote[path]
        assert entry.size == size, path
        if entry.lfs is not None:
            assert entry.lfs.sha256 == sha256, path
        else:
            assert entry.blob_id == sha1, path
    assert remote["ten.txt"].lfs is None and remote["ten.txt"].size == 10 * MiB
    assert remote["empty.txt"].lfs is None and remote["empty.txt"].size == 0
    assert remote["big.bin"].lfs is not None
    commits = api.list_repo_commits(repo_id)
    assert commits[0].commit_id == info.oid and commits[0].title == "Add the model"


def test_reupload_of_identical_content_makes_no_commit(api: HfApi, repo_id: str, tmp_path: Path) -> None:
    folder = tmp_path / "same"
    _write(folder / "config.json", b"{}")
    _write(folder / "w.safetensors", os.urandom(2048))
    first = api.upload_folder(folder_path=folder, repo_id=repo_id)
    second = api.upload_folder(folder_path=folder, repo_id=repo_id)
    assert second.oid == first.oid
    assert len(api.list_repo_commits(repo_id)) == 2  # initial commit + one upload


def test_tree_is_paginated_and_recursive(api: HfApi, repo_id: str, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    for i in range(7):
        _write(folder / "dir" / f"f{i}.txt", f"file {i}\n".encode())
    _write(folder / "top.txt", b"top\n")
    api.upload_folder(folder_path=folder, repo_id=repo_id)

    everything = list(api.list_repo_tree(repo_id, recursive=True))  # page size is 4: three pages
    paths = [e.path for e in everything]
    assert len(paths) == len(set(paths)) == 10  # .gitattributes, top.txt, dir, 7 files
    assert "dir" in paths and "dir/f6.txt" in paths
    assert sorted(e.path for e in api.list_repo_tree(repo_id, path_in_repo="dir")) == [
        f"dir/f{i}.txt" for i in range(7)
    ]
    top = {e.path for e in api.list_repo_tree(repo_id)}
    assert top == {".gitattributes", "top.txt", "dir"}
    expanded = list(api.list_repo_tree(repo_id, path_in_repo="dir", expand=True))  # page size 2 with expand
    assert len(expanded) == 7 and all(e.last_commit is not None for e in expanded)
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree(repo_id, path_in_repo="missing"))


def test_paths_info_reports_folders_and_omits_missing(api: HfApi, repo_id: str) -> None:
    api.upload_file(path_or_fileobj=b"x\n", path_in_repo="sub/x.txt", repo_id=repo_id)
    found = api.get_paths_info(repo_id, ["sub", "sub/x.txt", "nope.txt"])
    assert sorted((type(f).__name__, f.path) for f in found) == [("RepoFile", "sub/x.txt"), ("RepoFolder", "sub")]


def test_deletions(api: HfApi, repo_id: str, tmp_path: Path) -> None:
    folder = tmp_path / "del"
    _write(folder / "keep.txt", b"keep")
    _write(folder / "old.txt", b"old")
    _write(folder / "logs" / "a.txt", b"a")
    _write(folder / "logs" / "deeper" / "b.txt", b"b")
    api.upload_folder(folder_path=folder, repo_id=repo_id)

    api.delete_file("old.txt", repo_id=repo_id)
    api.delete_folder("logs", repo_id=repo_id)
    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes", "keep.txt"]
    with pytest.raises(RemoteEntryNotFoundError):
        api.delete_file("old.txt", repo_id=repo_id)


def test_parent_commit_mismatch_is_412(api: HfApi, repo_id: str) -> None:
    stale = api.model_info(repo_id).sha
    api.upload_file(path_or_fileobj=b"1", path_in_repo="one.txt", repo_id=repo_id)
    with pytest.raises(HfHubHTTPError) as caught:
        api.create_commit(
            repo_id,
            [CommitOperationAdd("two.txt", b"2")],
            commit_message="late",
            parent_commit=stale,
        )
    assert caught.value.response.status_code == 412
    assert "A commit has happened since" in caught.value.response.json()["error"]
    head = api.model_info(repo_id).sha
    api.create_commit(repo_id, [CommitOperationAdd("two.txt", b"2")], commit_message="ok", parent_commit=head)


def test_branches_refs_and_revisions(api: HfApi, repo_id: str) -> None:
    api.upload_file(path_or_fileobj=b"main\n", path_in_repo="file.txt", repo_id=repo_id)
    api.create_branch(repo_id, branch="dev/feature")
    api.create_branch(repo_id, branch="dev/feature", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as caught:
        api.create_branch(repo_id, branch="dev/feature")
    assert caught.value.response.status_code == 409

    dev = api.upload_file(path_or_fileobj=b"dev\n", path_in_repo="file.txt", repo_id=repo_id, revision="dev/feature")
    refs = api.list_repo_refs(repo_id)
    branches = {b.name: b.target_commit for b in refs.branches}
    assert branches["dev/feature"] == dev.oid
    assert branches["main"] != dev.oid
    assert api.model_info(repo_id, revision="dev/feature").sha == dev.oid
    assert api.model_info(repo_id, revision=dev.oid[:7]).sha == dev.oid
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="no-such-branch")

    api.create_tag(repo_id, tag="v1", revision="dev/feature")
    assert [t.target_commit for t in api.list_repo_refs(repo_id).tags] == [dev.oid]
    api.delete_branch(repo_id, branch="dev/feature")
    assert [b.name for b in api.list_repo_refs(repo_id).branches] == ["main"]


def test_create_pr_commits_to_a_pr_ref(api: HfApi, repo_id: str) -> None:
    info = api.upload_file(path_or_fileobj=b"pr\n", path_in_repo="pr.txt", repo_id=repo_id, create_pr=True)
    assert info.pr_num == 1
    assert api.file_exists(repo_id, "pr.txt", revision="refs/pr/1")
    assert not api.file_exists(repo_id, "pr.txt")
    assert [p.ref for p in api.list_repo_refs(repo_id, include_pull_requests=True).pull_requests] == ["refs/pr/1"]


def test_commit_history_is_paginated(api: HfApi, repo_id: str) -> None:
    oids = [api.upload_file(path_or_fileobj=f"{i}".encode(), path_in_repo="n.txt", repo_id=repo_id).oid
            for i in range(5)]  # fmt: skip
    history = api.list_repo_commits(repo_id)  # page size is 3
    assert [c.commit_id for c in history[:5]] == oids[::-1]
    assert history[-1].title == "initial commit"
    assert len(history) == 6


def test_concurrent_commits_on_one_branch_lose_nothing(
    api: HfApi, repo_id: str, registry: RunningRegistry, alice_token: str
) -> None:
    errors: list[BaseException] = []

    def commit(worker: int) -> None:
        client = HfApi(endpoint=registry.endpoint, token=alice_token)
        try:
            for i in range(3):
                client.create_commit(
                    repo_id, [CommitOperationAdd(f"w{worker}/f{i}.txt", f"{worker}-{i}".encode())], commit_message="c"
                )
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=commit, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    files = set(api.list_repo_files(repo_id))
    assert {f"w{w}/f{i}.txt" for w in range(4) for i in range(3)} <= files
    assert len(api.list_repo_commits(repo_id)) == 13


def test_empty_commit_is_recorded(api: HfApi, repo_id: str, registry: RunningRegistry, alice_token: str) -> None:
    from huggingface_hub.utils import get_session

    before = api.model_info(repo_id).sha
    response = get_session().post(
        f"{registry.endpoint}/api/models/{repo_id}/commit/main",
        content=b'{"key":"header","value":{"summary":"nothing"}}\n',
        headers={"authorization": f"Bearer {alice_token}", "content-type": "application/x-ndjson"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["commitOid"] != before
    assert api.list_repo_commits(repo_id)[0].title == "nothing"


def test_delete_operation_on_missing_file_is_entry_not_found(api: HfApi, repo_id: str) -> None:
    with pytest.raises(RemoteEntryNotFoundError):
        api.create_commit(repo_id, [CommitOperationDelete("ghost.txt")], commit_message="x")


def test_dataset_repo_upload_and_list(api: HfApi) -> None:
    import uuid

    dataset = f"alice/data-{uuid.uuid4().hex[:8]}"
    api.create_repo(dataset, repo_type="dataset", private=True)
    api.upload_file(path_or_fileobj=os.urandom(5000), path_in_repo="train.parquet", repo_id=dataset,
                    repo_type="dataset")  # fmt: skip
    assert sorted(api.list_repo_files(dataset, repo_type="dataset")) == [".gitattributes", "train.parquet"]
