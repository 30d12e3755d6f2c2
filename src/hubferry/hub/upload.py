"""Upload files in batches of commits, hashing the next file while the current one uploads.

Each batch is committed with ``create_commit``, whose POST huggingface_hub never retries. We retry
it ourselves, and before re-sending we read the files back: if the commit landed and only its
response was lost, we do not commit twice. Within a batch, each large file gets its own preupload
call (LFS upload) as soon as it is hashed, up to :data:`PARALLEL_UPLOADS` at once, of which at most
:data:`SENDING_AT_ONCE` are still sending bytes (the others wait for the server to store what they
sent); small files go in groups. Objects the Hub already stores are skipped by the LFS batch API, so
a re-run after a crash sends only what is missing.

Xet vs plain LFS is chosen per operation, never through huggingface_hub's global switch: a file
object (:class:`SourceFile`) makes huggingface_hub use plain LFS; a path lets it use Xet.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import BinaryIO, Protocol, cast

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.lfs import UploadInfo

from hubferry.config import Settings
from hubferry.errors import HubferryError, PermanentError, TransientError
from hubferry.hub import retry
from hubferry.hub.manifest import LocalFile
from hubferry.hub.progress import ProgressCallback, PushProgress, format_size
from hubferry.hub.selection import open_source, still_selected
from hubferry.hub.verify import compare, fetch_remote
from hubferry.logs import get_logger

log = get_logger(__name__)
#: How often the byte counter is turned into a progress event while uploads run.
PROGRESS_TICK_S = 0.25
#: Preupload calls running at once (each: preupload, LFS batch, the transfer, the server's answer).
PARALLEL_UPLOADS = 5
#: Of those, calls whose LFS bytes are still being sent. A call whose bytes are all sent waits for
#: the server to store them (hash, fsync) without holding one of these, so the next file starts
#: sending meanwhile; fewer streams at once let a loaded server read larger pieces of each.
SENDING_AT_ONCE = 2
#: Small files per preupload call (the Hub takes 256 per preupload request).
SMALL_FILES_PER_CALL = 256


@dataclass
class UploadResult:
    commit_sha: str
    commits_created: int
    bytes_uploaded: int


class Pending(Protocol):
    """A file to upload whose hash may still be being computed."""

    @property
    def path_in_repo(self) -> str: ...

    @property
    def size(self) -> int: ...

    def result(self) -> LocalFile: ...


@dataclass(frozen=True)
class Ready:
    """A file already hashed."""

    file: LocalFile

    @property
    def path_in_repo(self) -> str:
        return self.file.path_in_repo

    @property
    def size(self) -> int:
        return self.file.size

    def result(self) -> LocalFile:
        return self.file


class Stopped(PermanentError):
    """Another part of the push failed: in-flight reads stop at once."""


class SourceFile(io.BufferedIOBase):
    """A folder file as huggingface_hub reads it: opened without following links, checked to be
    the file that was hashed, counted as it is read, and open only while being read."""

    def __init__(self, file: LocalFile, stop: threading.Event) -> None:
        super().__init__()
        assert file.source is not None
        self._file, self._stop = file, stop
        self._fd: int | None = None
        self._pos = 0
        #: Called with the size of every read while set (the upload counts its wire bytes).
        self.counter: Callable[[int], None] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _changed(self) -> PermanentError:
        path = self._file.local_path
        return PermanentError(
            f"{path} changed after it was hashed", category="file_error", path=str(path),
            hint="wait until nothing writes to the folder, then push again",
        )

    def _open(self) -> int:
        if self._fd is None:
            assert self._file.source is not None
            fd = open_source(self._file.source)
            st = os.fstat(fd)
            if st.st_size != self._file.size or st.st_mtime_ns != self._file.source.identity[3]:
                os.close(fd)
                raise self._changed()
            self._fd = fd
        return self._fd

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self, size: int | None = -1) -> bytes:
        if self._stop.is_set():
            raise Stopped("push stopped", hint="see the error that stopped it")
        left = self._file.size - self._pos
        if left <= 0:
            self._release()  # re-opened (and re-checked) if huggingface_hub seeks back to retry
            return b""
        n = left if size is None or size < 0 else min(size, left)
        data = os.pread(self._open(), n, self._pos)
        if len(data) < n and not data:
            raise self._changed()
        self._pos += len(data)
        if self.counter is not None:
            self.counter(len(data))
        return data

    read1 = read

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._file.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._release()
        super().close()


def plan_batches(files: Sequence[Pending | LocalFile], *, max_files: int, max_regular_bytes: int, regular_limit: int):
    """Split ``files`` into commits of at most ``max_files`` files and ``max_regular_bytes`` inline content."""
    batches: list[list] = []
    current: list = []
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


def upload_groups(files: Sequence[Pending], *, regular_limit: int, small_bytes: int) -> Iterator[list[Pending]]:
    """Preupload calls for a batch, in order: each large file alone (so it starts the moment it is
    hashed, in parallel with others); small files together, up to :data:`SMALL_FILES_PER_CALL`
    files or ``small_bytes`` bytes."""
    small: list[Pending] = []
    size = 0
    for f in files:
        if f.size > regular_limit:
            yield [f]
            continue
        if small and (len(small) >= SMALL_FILES_PER_CALL or size + f.size > small_bytes):
            yield small
            small, size = [], 0
        small.append(f)
        size += f.size
    if small:
        yield small


def _rounds(items: list[tuple[LocalFile, CommitOperationAdd]]) -> list[list[CommitOperationAdd]]:
    """Preupload calls for one group, each with distinct contents.

    huggingface_hub uploads an LFS object once per call, through the operation it saw last for that
    sha256, from several threads: two paths with the same bytes in one call would share one file
    object. A later round finds the object stored and sends nothing.
    """
    rounds: list[tuple[set[str], list[CommitOperationAdd]]] = []
    for f, op in items:
        free = next((r for r in rounds if f.sha256 not in r[0]), None)
        if free is None:
            free = (set(), [])
            rounds.append(free)
        free[0].add(f.sha256)
        free[1].append(op)
    return [ops for _, ops in rounds]


class _SendSlot:
    """One of :data:`SENDING_AT_ONCE`, held by a preupload call from before its first request until
    it has read every LFS byte it sends once, or until it ends (objects the Hub had: nothing sent)."""

    def __init__(self, slots: threading.Semaphore, stop: threading.Event, to_send: int) -> None:
        while not slots.acquire(timeout=PROGRESS_TICK_S):
            if stop.is_set():
                raise Stopped("push stopped", hint="see the error that stopped it")
        self._slots, self._left = slots, to_send
        self._held = True
        self._lock = threading.Lock()

    def sent(self, n: int) -> None:
        """``n`` more bytes read for the transfer (bytes re-read by a retry count again: a retry
        after the first full pass sends without a slot, which only loosens the shaping)."""
        with self._lock:
            self._left -= n
            done = self._left <= 0 and self._held
            self._held = self._held and not done
        if done:
            self._slots.release()

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._slots.release()


class _Ticker:
    """Turns the byte counters into progress events every :data:`PROGRESS_TICK_S` while uploads run.

    An exception from the caller's callback (a publish lease lost) is kept, stops the uploads
    (``halt``) and is re-raised by :meth:`check`.
    """

    def __init__(self, emit: Callable[[], None], halt: threading.Event) -> None:
        self._emit, self._halt = emit, halt
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="hubferry-progress")
        self.failure: Exception | None = None

    def _run(self) -> None:
        while not self._done.wait(PROGRESS_TICK_S):
            try:
                self._emit()
            except Exception as exc:  # noqa: BLE001 - re-raised in the pushing thread by check()
                self.failure = exc
                self._halt.set()
                return

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def __enter__(self) -> _Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


class Uploader:
    """Uploads batches of files to one repo revision, reporting progress."""

    def __init__(
        self, api: HfApi, *, repo_id: str, repo_type: str, revision: str, settings: Settings,
        policy: retry.RetryPolicy, progress: ProgressCallback, bytes_total: int, files_total: int, xet: bool,
        before_commit: Callable[[], object] = lambda: None,
    ) -> None:
        """``before_commit`` runs before every commit; the publisher waits there until every file
        is hashed and scanned, so a secret found late never follows a committed batch."""
        self.api, self.repo_id, self.repo_type, self.revision = api, repo_id, repo_type, revision
        self.xet = xet
        self.settings, self.policy, self.progress = settings, policy, progress
        self.bytes_total, self.files_total = bytes_total, files_total
        self.before_commit = before_commit
        self.bytes_done = 0
        self.files_done = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._sending = threading.Semaphore(SENDING_AT_ONCE)
        self._wire = 0  # bytes read for LFS transfers (re-sent bytes included: they went on the wire again)
        self._in_flight: dict[str, list[int]] = {}  # path -> [bytes read, size]
        self._finished = 0  # bytes of files whose upload call completed
        self._inline = 0
        self._xet = 0

    def _call(self, fn, what: str, **kwargs):
        return retry.call(fn, what=what, endpoint=self.api.endpoint, policy=self.policy, repo_id=self.repo_id, **kwargs)

    def _emit(self, stage: str, message: str = "") -> None:
        with self._lock:
            moving = sum(min(read, size) for read, size in self._in_flight.values())
            done = self._finished + moving
        self.bytes_done = max(self.bytes_done, min(done, self.bytes_total))
        event = PushProgress(stage, self.bytes_done, self.bytes_total, self.files_done, self.files_total, message)
        self.progress(event)

    def run(self, files: Sequence[Pending], message: str) -> UploadResult:
        batches = plan_batches(
            files, max_files=self.settings.commit_max_files,
            max_regular_bytes=self.settings.commit_max_regular_bytes, regular_limit=self.settings.regular_file_limit,
        )
        created = 0
        sha = ""
        with ThreadPoolExecutor(PARALLEL_UPLOADS, thread_name_prefix="hubferry-upload") as pool:
            for number, batch in enumerate(batches, start=1):
                title = message if len(batches) == 1 else f"{message} (part {number}/{len(batches)})"
                sha, new = self._batch(pool, batch, title)
                created += int(new)
        sent = self._wire + self._inline + self._xet
        return UploadResult(commit_sha=sha, commits_created=created, bytes_uploaded=sent)

    def _batch(self, pool: ThreadPoolExecutor, batch: list[Pending], title: str) -> tuple[str, bool]:
        # The head this batch is planned on: the commit names it as its parent, so a commit sent
        # after someone else's (a paused worker whose lease was taken over) is refused (412).
        parent = self._head()
        ops: list[tuple[LocalFile, CommitOperationAdd]] = []
        calls: list[Future[None]] = []
        groups = upload_groups(
            batch, regular_limit=self.settings.regular_file_limit, small_bytes=self.settings.preupload_group_bytes,
        )
        with _Ticker(lambda: self._emit("uploading"), self.stop) as ticker:
            try:
                for group in groups:
                    if ticker.failure or any(c.done() and c.exception() for c in calls):
                        break
                    # result() waits for the hasher: this upload starts while the next file is hashed.
                    items = [(f, self._operation(f)) for f in (p.result() for p in group)]
                    ops += items
                    calls.append(pool.submit(self._preupload, items))
                wait(calls, return_when=FIRST_EXCEPTION)
                ticker.check()
                for call in calls:
                    if call.done() and (error := call.exception()) is not None:
                        raise error
            except BaseException:
                self.stop.set()  # in-flight reads fail at once instead of sending whole files
                wait(calls)
                self._close(ops)
                ticker.check()  # the caller's own error (a lost lease) explains the stop best
                raise
        try:
            self.before_commit()
            return self._commit(ops, title, parent)
        finally:
            self._close(ops)

    @staticmethod
    def _close(ops: list[tuple[LocalFile, CommitOperationAdd]]) -> None:
        for _, op in ops:
            if isinstance(op.path_or_fileobj, SourceFile):
                op.path_or_fileobj.close()

    def _operation(self, f: LocalFile) -> CommitOperationAdd:
        """The operation for ``f``, with the manifest's hashes (no file is read again to hash it)."""
        op = CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=f.content or b"")
        if f.content is None and self.xet:
            assert f.source is not None
            still_selected(f.source)  # hf_xet opens the path itself
            op.path_or_fileobj = str(f.local_path)  # a path lets huggingface_hub use Xet ...
        elif f.content is None:
            op.path_or_fileobj = cast(BinaryIO, SourceFile(f, self.stop))  # ... a file object: plain LFS
        op.upload_info = UploadInfo(size=f.size, sample=f.sample, sha256=bytes.fromhex(f.sha256))
        return op

    def _preupload(self, items: list[tuple[LocalFile, CommitOperationAdd]]) -> None:
        """Upload one group's LFS objects (huggingface_hub skips those the Hub has)."""
        sources = [(f, op.path_or_fileobj) for f, op in items if isinstance(op.path_or_fileobj, SourceFile)]
        slot = _SendSlot(self._sending, self.stop, sum(f.size for f, _ in sources)) if sources else None
        for f, source in sources:
            counted = self._in_flight.setdefault(f.path_in_repo, [0, f.size])

            def count(n: int, counted: list[int] = counted, slot: _SendSlot | None = slot) -> None:
                with self._lock:
                    counted[0] += n
                    self._wire += n
                if slot is not None:
                    slot.sent(n)

            source.counter = count
        try:
            for round_ in _rounds(items):
                self._call(
                    lambda round_=round_: self.api.preupload_lfs_files(
                        self.repo_id, additions=round_, repo_type=self.repo_type,
                        revision=self.revision, free_memory=False, num_threads=PARALLEL_UPLOADS,
                    ),
                    "upload LFS files",
                )
        finally:
            if slot is not None:
                slot.release()
            for _, source in sources:
                source.counter = None  # later reads (the commit's) are not LFS transfers
        for f, op in items:
            # huggingface_hub records the server's decision on the operation itself.
            mode, remote_oid = op._upload_mode, op._remote_oid
            if mode == "regular" and f.size > self.settings.regular_file_limit:
                raise PermanentError(
                    f"the Hub wants {f.path_in_repo} ({format_size(f.size)}) as a regular file, over the "
                    f"{format_size(self.settings.regular_file_limit)} limit for those", category="service_error",
                    repo_id=self.repo_id, path=f.path_in_repo,
                    hint="add the file's extension to the repo's .gitattributes as an LFS pattern and push again",
                )
            with self._lock:
                if mode == "lfs" and remote_oid != f.sha256 and self.xet and f.content is None:
                    self._xet += f.size  # Xet moves bytes outside our HTTP client; count the file
                if mode == "regular" and remote_oid != f.git_sha1:
                    self._inline += f.size
                self._in_flight.pop(f.path_in_repo, None)
                self._finished += f.size
            if mode == "regular" and isinstance(op.path_or_fileobj, str):
                op.path_or_fileobj = cast(BinaryIO, SourceFile(f, self.stop))  # the commit reads it: no links

    def _head(self) -> str:
        info = self._call(
            lambda: self.api.repo_info(self.repo_id, repo_type=self.repo_type, revision=self.revision),
            "read repo head",
        )
        return info.sha

    @staticmethod
    def _unchanged(f: LocalFile, op: CommitOperationAdd) -> bool:
        local = f.sha256 if op._upload_mode == "lfs" else f.git_sha1
        return op._remote_oid is not None and op._remote_oid == local

    def _commit(self, ops: list[tuple[LocalFile, CommitOperationAdd]], title: str, parent: str) -> tuple[str, bool]:
        """Commit the batch on ``parent`` unless the Hub already has every file; returns (commit sha, created)."""
        files = [f for f, _ in ops]
        self._emit("committing", title)
        if all(self._unchanged(f, op) for f, op in ops):
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
        self._emit("committing", title)
        return result
