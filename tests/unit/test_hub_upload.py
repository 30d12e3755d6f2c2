"""The uploader's pipeline: a file uploads while the next one is still being hashed; nothing is
committed before every file is hashed and scanned."""

from __future__ import annotations

import hashlib
import threading
import time
from types import SimpleNamespace

import pytest

from hubferry.config import load_settings
from hubferry.hub import manifest, retry, upload
from hubferry.hub.upload import Ready, Uploader


def _file(name: str, data: bytes) -> manifest.LocalFile:
    return manifest.from_bytes(name, data)


class FakeHub:
    """The few HfApi methods the uploader calls, recording their order."""

    endpoint = "http://fake.test"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.uploaded = {name: threading.Event() for name in ("a.bin", "b.bin", "c.bin")}

    def repo_info(self, repo_id, repo_type, revision):
        return SimpleNamespace(sha="0" * 40)

    def preupload_lfs_files(self, repo_id, additions, **_kwargs):
        for op in additions:
            op._upload_mode, op._remote_oid = "lfs", None
            self.calls.append(f"upload {op.path_in_repo}")
            self.uploaded[op.path_in_repo].set()

    def create_commit(self, repo_id, operations, commit_message, **_kwargs):
        self.calls.append("commit")
        return SimpleNamespace(oid="1" * 40)


class Hashing:
    """A file whose hash is ready only once ``gate`` is set (or after a timeout, recorded)."""

    def __init__(self, file: manifest.LocalFile, gate: threading.Event, log: list[str]) -> None:
        self.file, self.gate, self.log = file, gate, log
        self.path_in_repo, self.size = file.path_in_repo, file.size

    def result(self) -> manifest.LocalFile:
        if not self.gate.wait(5):
            self.log.append(f"{self.path_in_repo} waited in vain")
        self.log.append(f"hashed {self.path_in_repo}")
        return self.file


def _uploader(hub: FakeHub, **kwargs) -> Uploader:
    settings = load_settings(regular_file_limit=10, commit_max_files=100)
    return Uploader(
        hub, repo_id="alice/m", repo_type="model", revision="main", settings=settings,  # type: ignore[arg-type]
        policy=retry.RetryPolicy(max_attempts=1), progress=lambda e: None, bytes_total=300, files_total=3,
        xet=False, **kwargs,
    )


def test_a_file_uploads_while_the_next_one_is_still_being_hashed():
    hub = FakeHub()
    log: list[str] = []
    a, b, c = (_file(f"{n}.bin", bytes([i]) * 100) for i, n in enumerate("abc"))
    # b's hash becomes ready only once a is uploading, c's once b is: a serial hash-then-upload waits in vain.
    entries = [Ready(a), Hashing(b, hub.uploaded["a.bin"], log), Hashing(c, hub.uploaded["b.bin"], log)]
    result = _uploader(hub).run(entries, "msg")
    assert not [line for line in log if "in vain" in line], log
    assert hub.calls == ["upload a.bin", "upload b.bin", "upload c.bin", "commit"]
    assert result.commits_created == 1 and result.commit_sha == "1" * 40


def test_nothing_is_committed_before_every_file_is_hashed_and_scanned_clean():
    hub = FakeHub()
    a = _file("a.bin", b"a" * 100)
    found = manifest.SecretsFound([])

    def not_clean() -> None:
        raise found

    with pytest.raises(manifest.SecretsFound):
        _uploader(hub, before_commit=not_clean).run([Ready(a)], "msg")
    assert hub.calls == ["upload a.bin"]


def test_hash_ahead_hashes_in_order_on_one_thread_and_reports_secrets(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\0" * 2000)
    (tmp_path / "b.bin").write_bytes(b"\0" * 1000 + b"hf_" + b"x" * 34)
    items = manifest.select_paths(tmp_path)
    with manifest.HashAhead(items, git_sha1_limit=0, scan=["hf_" + "x" * 34]) as ahead:
        first = ahead.pending[0].result()
        assert first.sha256 == hashlib.sha256(b"\0" * 2000).hexdigest() and first.sample == b"\0" * 512
        with pytest.raises(manifest.SecretsFound) as info:
            ahead.finished()
    assert [f.location for f in info.value.findings] == ["b.bin (byte 1000)"]


def test_hashing_ahead_stops_when_the_push_ends_first(tmp_path):
    (tmp_path / "big.bin").write_bytes(b"\0" * (3 * 1024 * 1024))
    item = manifest.select_paths(tmp_path)[0]
    stop = threading.Event()
    stop.set()
    with pytest.raises(manifest.HashingStopped):
        manifest.hash_file(item, git_sha1_limit=0, stop=stop)
    ahead = manifest.HashAhead([item] * 50, git_sha1_limit=0, scan=None)
    ahead.close()  # a failed pre-flight: nothing left running, the rest never hashed
    assert sum(h.future.cancelled() for h in ahead.pending) >= 40


class SendingHub(FakeHub):
    """Reads each LFS file object as a PUT would, then answers only once later files have started
    sending (a server storing an object: hash, fsync), recording how many files send at once."""

    def __init__(self, files: int) -> None:
        super().__init__()
        self.files = files
        self.lock = threading.Lock()
        self.sending = 0
        self.most_sending = 0
        self.started = 0
        self.progress = threading.Condition(self.lock)
        self.log: list[str] = []

    def preupload_lfs_files(self, repo_id, additions, **_kwargs):
        for op in additions:
            with self.lock:
                self.sending += 1
                self.most_sending = max(self.most_sending, self.sending)
                self.started += 1
                mine = self.started
                self.progress.notify_all()
            left = op.upload_info.size
            while left:
                time.sleep(0.005)  # a network: other files could start meanwhile, if allowed to
                if left <= 1000:  # counted out before the read of the last byte, which ends the sending
                    with self.lock:
                        self.sending -= 1
                left -= len(op.path_or_fileobj.read(min(1000, left)))
            with self.lock:
                # The answer comes once the files after this one could start sending: with the
                # limit held until answers, they never would (and this waits in vain).
                wanted = min(self.files, mine + upload.SENDING_AT_ONCE)
                if not self.progress.wait_for(lambda wanted=wanted: self.started >= wanted, timeout=3):
                    self.log.append(f"{op.path_in_repo} answered only after waiting in vain")
            op._upload_mode, op._remote_oid = "lfs", None
            self.calls.append(f"upload {op.path_in_repo}")


def test_few_files_send_at_once_and_the_next_starts_while_the_server_stores_the_last(tmp_path):
    names = [f"model-{n}.bin" for n in range(6)]
    for n, name in enumerate(names):
        (tmp_path / name).write_bytes(bytes([n]) * 5000)
    files = manifest.build(manifest.select_paths(tmp_path), git_sha1_limit=0)
    hub = SendingHub(len(files))
    uploader = _uploader(hub)
    uploader.files_total, uploader.bytes_total = len(files), sum(f.size for f in files)
    result = uploader.run([Ready(f) for f in files], "msg")
    assert hub.log == []
    assert 1 <= hub.most_sending <= upload.SENDING_AT_ONCE < upload.PARALLEL_UPLOADS
    assert sorted(hub.calls[:-1]) == [f"upload {name}" for name in names] and hub.calls[-1] == "commit"
    assert result.bytes_uploaded == 6 * 5000  # every byte counted once, slots or not
