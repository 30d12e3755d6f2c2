"""Upload a manifest in batches of commits: preupload LFS objects, then commit, exactly once.

Each batch is preuploaded in groups (the resume and progress unit), then committed with
``create_commit``, whose POST huggingface_hub never retries. We retry it ourselves, and before
re-sending we read the files back: if the commit landed and only its response was lost, we do
not commit twice. Objects the Hub already stores are skipped by the LFS batch API, so a re-run
after a crash sends only what is missing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from huggingface_hub import CommitOperationAdd, HfApi

from hubferry.config import Settings
from hubferry.errors import HubferryError, PermanentError, TransientError
from hubferry.hub import retry
from hubferry.hub.client import WireMeter, start_metering, stop_metering
from hubferry.hub.manifest import LocalFile
from hubferry.hub.progress import ProgressCallback, PushProgress
from hubferry.hub.verify import compare, fetch_remote
from hubferry.logs import get_logger

log = get_logger(__name__)
#: How often the byte counter is turned into a progress event while an upload runs.
PROGRESS_TICK_S = 0.25
#: Files uploaded at once within a preupload call (huggingface_hub's thread count).
PARALLEL_UPLOADS = 5


@dataclass
class UploadResult:
    commit_sha: str
    commits_created: int
    bytes_uploaded: int


def plan_batches(files: list[LocalFile], *, max_files: int, max_regular_bytes: int, regular_limit: int):
    """Split ``files`` into commits of at most ``max_files`` files and ``max_regular_bytes`` inline content."""
    batches: list[list[LocalFile]] = []
    current: list[LocalFile] = []
    regular = 0
    for f in files:
        inline = f.size if f.size <= regular_limit else 0
        if current and (len(current) >= max_files or regular + inline > max_regular_bytes):
            batches.append(current)
            current, regular = [], 0
        current.append(f)
        regular += inline
    if current:
        batches.append(current)
    return batches


def _groups(ops: list[tuple[LocalFile, CommitOperationAdd]], max_bytes: int, regular_limit: int) -> Iterator[list]:
    """Preupload groups: over ``max_bytes`` a group closes, but only once it holds enough LFS-sized
    files to keep :data:`PARALLEL_UPLOADS` transfers busy (one big file per group would upload serially)."""
    group: list = []
    size = 0
    large = 0
    for item in ops:
        if large >= PARALLEL_UPLOADS and size + item[0].size > max_bytes:
            yield group
            group, size, large = [], 0, 0
        group.append(item)
        size += item[0].size
        large += item[0].size > regular_limit
    if group:
        yield group


def _operation(f: LocalFile) -> CommitOperationAdd:
    op = CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=f.content or str(f.local_path))
    # The manifest already hashed the file: hand the digest over instead of reading it again.
    op.upload_info.sha256 = bytes.fromhex(f.sha256)
    return op


class Uploader:
    """Uploads batches of files to one repo revision, reporting progress."""

    def __init__(
        self, api: HfApi, *, repo_id: str, repo_type: str, revision: str, settings: Settings,
        policy: retry.RetryPolicy, progress: ProgressCallback, bytes_total: int, files_total: int, xet: bool,
    ) -> None:
        self.api, self.repo_id, self.repo_type, self.revision = api, repo_id, repo_type, revision
        self.xet = xet
        self.settings, self.policy, self.progress = settings, policy, progress
        self.bytes_total, self.files_total = bytes_total, files_total
        self.bytes_done = 0
        self.files_done = 0
        self.inline_bytes_sent = 0
        self.xet_bytes_sent = 0
        self.meter = WireMeter()

    def _call(self, fn, what: str, **kwargs):
        return retry.call(fn, what=what, endpoint=self.api.endpoint, policy=self.policy, repo_id=self.repo_id, **kwargs)

    def _emit(self, stage: str, bytes_done: int, message: str = "") -> None:
        self.bytes_done = max(self.bytes_done, min(bytes_done, self.bytes_total))
        event = PushProgress(stage, self.bytes_done, self.bytes_total, self.files_done, self.files_total, message)
        self.progress(event)

    def run(self, files: list[LocalFile], message: str) -> UploadResult:
        batches = plan_batches(
            files, max_files=self.settings.commit_max_files,
            max_regular_bytes=self.settings.commit_max_regular_bytes, regular_limit=self.settings.regular_file_limit,
        )
        start_metering(self.meter)
        try:
            created = 0
            sha = ""
            for number, batch in enumerate(batches, start=1):
                title = message if len(batches) == 1 else f"{message} (part {number}/{len(batches)})"
                sha, new = self._batch(batch, title)
                created += int(new)
        finally:
            stop_metering(self.meter)
        sent = self.meter.bytes_sent + self.inline_bytes_sent + self.xet_bytes_sent
        return UploadResult(commit_sha=sha, commits_created=created, bytes_uploaded=sent)

    def _batch(self, batch: list[LocalFile], title: str) -> tuple[str, bool]:
        # The head this batch is planned on: the commit names it as its parent, so a commit sent
        # after someone else's (a paused worker whose lease was taken over) is refused (412).
        parent = self._head()
        ops = [(f, _operation(f)) for f in batch]
        for group in _groups(ops, self.settings.preupload_group_bytes, self.settings.regular_file_limit):
            self._preupload(group)
        return self._commit(ops, title, parent)

    def _preupload(self, group: list[tuple[LocalFile, CommitOperationAdd]]) -> None:
        group_size = sum(f.size for f, _ in group)
        base_done = self.bytes_done
        self.meter.watch([f.sha256 for f, _ in group])
        wire_start = self.meter.bytes_sent
        stop = threading.Event()
        failures: list[Exception] = []

        def tick() -> None:
            while not stop.wait(PROGRESS_TICK_S):
                try:
                    self._emit("uploading", base_done + min(self.meter.bytes_sent - wire_start, group_size))
                except Exception as exc:  # noqa: BLE001 - the caller's callback asked to stop: re-raised below
                    failures.append(exc)
                    return

        ticker = threading.Thread(target=tick, daemon=True, name="hubferry-progress")
        ticker.start()
        try:
            self._call(
                lambda: self.api.preupload_lfs_files(
                    self.repo_id, additions=[op for _, op in group], repo_type=self.repo_type,
                    revision=self.revision, free_memory=False, num_threads=PARALLEL_UPLOADS,
                ),
                "upload LFS files",
            )
        finally:
            stop.set()
            ticker.join()
        if failures:
            raise failures[0]
        for f, op in group:
            # huggingface_hub records the server's decision on the operation itself.
            mode, remote_oid = op._upload_mode, op._remote_oid
            if mode == "regular" and f.size > self.settings.regular_file_limit:
                raise PermanentError(
                    f"the Hub wants {f.path_in_repo} ({f.size} bytes) as a regular file, over the "
                    f"{self.settings.regular_file_limit}-byte limit for those", category="service_error",
                    repo_id=self.repo_id, path=f.path_in_repo,
                    hint="add the file's extension to the repo's .gitattributes as an LFS pattern and push again",
                )
            if mode == "lfs" and remote_oid != f.sha256 and self.xet:
                self.xet_bytes_sent += f.size  # Xet moves bytes outside our HTTP client; count the file
            if mode == "regular" and remote_oid != f.git_sha1:
                self.inline_bytes_sent += f.size
        self._emit("uploading", base_done + group_size)

    def _head(self) -> str:
        info = self._call(
            lambda: self.api.repo_info(self.repo_id, repo_type=self.repo_type, revision=self.revision),
            "read repo head",
        )
        return info.sha

    def _commit(self, ops: list[tuple[LocalFile, CommitOperationAdd]], title: str, parent: str) -> tuple[str, bool]:
        """Commit the batch on ``parent`` unless the Hub already has every file; returns (commit sha, created)."""
        files = [f for f, _ in ops]
        self._emit("committing", self.bytes_done, title)
        if all(op._remote_oid == op._local_oid for _, op in ops):
            self.files_done += len(files)
            return self._head(), False

        def already_landed(_error: HubferryError) -> tuple[str, bool] | None:
            """Before a re-send: the files may be there (our lost response, or a takeover's commit)."""
            nonlocal parent
            try:
                remote = fetch_remote(self.api, self.repo_id, self.repo_type, self.revision, files, self.policy)
                head = self._head()
            except TransientError:
                return None
            if compare(files, remote):
                parent = head  # the branch moved without our files: re-send on the new head
                return None
            log.info("commit already landed; not re-sending", repo_id=self.repo_id, commit=head)
            return head, True

        def send() -> tuple[str, bool]:
            info = self.api.create_commit(
                self.repo_id, operations=[op for _, op in ops], commit_message=title,
                repo_type=self.repo_type, revision=self.revision, parent_commit=parent,
            )
            return info.oid, True

        result = self._call(send, "create commit", before_retry=already_landed)
        self.files_done += len(files)
        self._emit("committing", self.bytes_done, title)
        return result
