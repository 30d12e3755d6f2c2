"""Read a pushed revision back from the Hub and compare it with the local manifest."""

from __future__ import annotations

import functools

from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoFile

from hubferry.errors import VerificationError
from hubferry.hub import retry
from hubferry.hub.manifest import LocalFile
from hubferry.hub.progress import format_size

#: The Hub refuses more than 1000 paths per paths-info call; huggingface_hub itself sends 500.
PATHS_PER_CALL = 500


def fetch_remote(
    api: HfApi, repo_id: str, repo_type: str, revision: str, files: list[LocalFile], policy: retry.RetryPolicy,
) -> dict[str, RepoFile]:
    """The Hub's record (size, git oid, LFS sha256) of each of ``files`` at ``revision``."""
    remote: dict[str, RepoFile] = {}
    paths = [f.path_in_repo for f in files]
    for start in range(0, len(paths), PATHS_PER_CALL):
        chunk = paths[start : start + PATHS_PER_CALL]
        entries = retry.call(
            functools.partial(api.get_paths_info, repo_id, chunk, repo_type=repo_type, revision=revision),
            what="read back file hashes", endpoint=api.endpoint, policy=policy, repo_id=repo_id,
        )
        remote.update({e.path: e for e in entries if isinstance(e, RepoFile)})
    return remote


def compare(files: list[LocalFile], remote: dict[str, RepoFile]) -> list[str]:
    """Every difference between the manifest and the Hub's record, as sentences (empty when equal)."""
    problems = []
    for f in files:
        entry = remote.get(f.path_in_repo)
        if entry is None:
            problems.append(f"{f.path_in_repo}: missing on the Hub")
        elif entry.size != f.size:
            problems.append(
                f"{f.path_in_repo}: {format_size(entry.size)} ({entry.size} bytes) on the Hub, "
                f"{format_size(f.size)} ({f.size} bytes) locally"
            )
        elif entry.lfs is not None:
            if entry.lfs.sha256 != f.sha256:
                problems.append(f"{f.path_in_repo}: sha256 {entry.lfs.sha256} on the Hub, {f.sha256} locally")
        elif f.git_sha1 is None or entry.blob_id != f.git_sha1:
            problems.append(f"{f.path_in_repo}: git oid {entry.blob_id} on the Hub, {f.git_sha1} locally")
    return problems


def verify(
    api: HfApi, repo_id: str, repo_type: str, commit_sha: str, files: list[LocalFile], policy: retry.RetryPolicy,
) -> None:
    """Raise :class:`VerificationError` unless the Hub holds exactly ``files`` at ``commit_sha``."""
    problems = compare(files, fetch_remote(api, repo_id, repo_type, commit_sha, files, policy))
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise VerificationError(
            f"verification failed: {len(problems)} of {len(files)} file(s) differ on the Hub: {shown}",
            repo_id=repo_id, commit_sha=commit_sha, url=f"{api.endpoint}/{repo_id}",
            hint="push again (a re-run re-sends what differs); if it persists, the Hub storage is corrupt: report it",
        )
