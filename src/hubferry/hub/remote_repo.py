"""Reading repos on the Hub without downloading them: a model repo's newest commit and its files, and the
first rows of a dataset (for column checks before a training is launched)."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any

from huggingface_hub import HfApi, HfFileSystem
from huggingface_hub.hf_api import RepoFile

from hubferry.errors import ValidationError
from hubferry.hub import retry
from hubferry.hub.manifest import LocalFile

#: Dataset files whose first rows can be read, best first.
ROW_FILE_SUFFIXES = (".jsonl", ".parquet")
#: The most bytes read from the start of a JSONL file to find its first rows.
MAX_HEAD_BYTES = 4 * 1024 * 1024


def newest_commit(api: HfApi, repo_id: str, policy: retry.RetryPolicy) -> tuple[str, datetime] | None:
    """The id and time of the newest commit on ``main``, or None when the repo has none (or does not exist)."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    def read() -> tuple[str, datetime] | None:
        try:
            commits = api.list_repo_commits(repo_id)
        except (RepositoryNotFoundError, RevisionNotFoundError):
            return None
        return (commits[0].commit_id, commits[0].created_at) if commits else None

    return retry.call(read, what="list commits", endpoint=api.endpoint, policy=policy, repo_id=repo_id)


def remote_manifest(api: HfApi, repo_id: str, commit_sha: str, policy: retry.RetryPolicy) -> list[LocalFile]:
    """The files of ``repo_id`` at ``commit_sha`` as the Hub records them (size, LFS sha256, git oid)."""
    entries = retry.call(lambda: list(api.list_repo_tree(repo_id, recursive=True, revision=commit_sha)),
                         what="list files", endpoint=api.endpoint, policy=policy, repo_id=repo_id)
    return [LocalFile(path_in_repo=e.path, size=e.size, sha256=e.lfs.sha256 if e.lfs else "", git_sha1=e.blob_id)
            for e in entries if isinstance(e, RepoFile)]


def dataset_rows(api: HfApi, token: str | None, repo_id: str, max_rows: int,
                 policy: retry.RetryPolicy) -> tuple[str, list[Any]]:
    """The first rows of a Hub dataset's first JSONL or Parquet file (train split first), and that file's path.

    Raises:
        ValidationError: the dataset has no file whose rows hubferry can read.
    """
    files = retry.call(functools.partial(api.list_repo_files, repo_id, repo_type="dataset"), what="list dataset files",
                       endpoint=api.endpoint, policy=policy, repo_id=repo_id)
    readable = sorted((f for f in files if f.lower().endswith(ROW_FILE_SUFFIXES)),
                      key=lambda f: ("train" not in f.lower(), not f.lower().endswith(".jsonl"), f))
    if not readable:
        raise ValidationError(f"dataset {repo_id} has no .jsonl or .parquet file to train on", field="dataset",
                              hint="convert it to JSONL or Parquet, or give a local file")
    path = readable[0]
    fs = HfFileSystem(endpoint=api.endpoint, token=token)
    remote = f"datasets/{repo_id}/{path}"
    if path.lower().endswith(".jsonl"):
        head = retry.call(lambda: _head(fs, remote), what="read dataset rows", endpoint=api.endpoint, policy=policy,
                          repo_id=repo_id)
        lines = head.split(b"\n")
        if len(head) == MAX_HEAD_BYTES:
            lines = lines[:-1]  # the last line may be cut
        rows = []
        for number, line in enumerate((li for li in lines if li.strip()), 1):
            if number > max_rows:
                break
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise ValidationError(f"line {number} of {repo_id}/{path} is not JSON", field="dataset") from None
        return path, rows
    import pyarrow.parquet as pq

    def parquet_rows() -> list[Any]:
        with fs.open(remote, "rb") as fh:
            table = pq.ParquetFile(fh).read_row_group(0)
        return list(table.slice(0, max_rows).to_pylist())

    return path, retry.call(parquet_rows, what="read dataset rows", endpoint=api.endpoint, policy=policy,
                            repo_id=repo_id)


def _head(fs: HfFileSystem, remote: str) -> bytes:
    with fs.open(remote, "rb", block_size=MAX_HEAD_BYTES) as fh:
        return bytes(fh.read(MAX_HEAD_BYTES))
