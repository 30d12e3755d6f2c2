"""Public test helpers: run the built-in registry in a thread or a subprocess, and damage it on purpose.

Typical use::

    with running_registry(tmp_path / "hub", tree_page_size=5) as hub:
        token = hub.create_token("alice")
        api = HfApi(endpoint=hub.endpoint, token=token)   # with HF_HUB_DISABLE_XET set

Everything here works on a registry's data dir, so it applies equally to an in-thread registry,
a ``hubferry hub serve`` process, or one started by another test helper.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update

from hubferry.registry import storage
from hubferry.registry.auth import create_token
from hubferry.registry.blobs import BlobStore
from hubferry.registry.faults import FaultPlan
from hubferry.registry.gitobjects import file_hashes, lfs_pointer_oid
from hubferry.registry.settings import RegistrySettings

__all__ = [
    "RunningRegistry",
    "corrupt_blob",
    "file_hashes",
    "free_port",
    "no_retry_sleep",
    "registry_process",
    "running_registry",
    "stored_lfs_objects",
    "tamper_file",
]

#: Seconds to wait for a registry to answer /health.
STARTUP_TIMEOUT_S = 20.0


@dataclass
class RunningRegistry:
    """A registry that is up: where it answers, where its data lives, and how to get tokens."""

    endpoint: str
    data_dir: Path
    settings: RegistrySettings
    #: The fault plan, for in-thread registries (``None`` for subprocesses).
    faults: FaultPlan | None = None
    _stop: Callable[[], None] = field(default=lambda: None, repr=False)
    #: The server's process id, for subprocess registries (``None`` in-thread).
    pid: int | None = None

    def create_token(self, user: str, read_only: bool = False) -> str:
        """A new token for ``user`` (created if needed); write role unless ``read_only``."""
        engine = storage.make_engine(self.data_dir)
        try:
            return create_token(engine, user, read_only=read_only)
        finally:
            engine.dispose()

    def faults_injected(self) -> int:
        """Faults injected so far (in-thread registries only; 0 otherwise)."""
        return len(self.faults.injected) if self.faults else 0

    def requests_seen(self) -> int:
        """Requests that were eligible for a fault so far (all but pages and /health)."""
        return self.faults.seen if self.faults else 0

    def stop(self) -> None:
        self._stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_registry(data_dir: str | os.PathLike[str], **settings: Any) -> Iterator[RunningRegistry]:
    """Run a registry with uvicorn in a background thread on a free 127.0.0.1 port.

    Args:
        data_dir: the registry's data dir (created if missing; reused if it holds data).
        **settings: any :class:`~hubferry.registry.RegistrySettings` field, e.g. ``tree_page_size=3``,
            ``multipart_threshold=1 << 20``, ``fault_rate=0.2``.
    """
    import uvicorn

    from hubferry.registry.app import create_app

    config = RegistrySettings(data_dir=Path(data_dir), host="127.0.0.1", **settings)
    app = create_app(config)
    # IPPROTO_TCP (not 0), so asyncio sets TCP_NODELAY on accepted connections: without it every
    # keep-alive request waits ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=30, access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"registry:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the registry did not start on port {port}")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    registry = RunningRegistry(f"http://127.0.0.1:{port}", Path(data_dir), config, app.registry.faults, stop)
    try:
        yield registry
    finally:
        stop()
        app.registry.engine.dispose()


def _env_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


@contextmanager
def registry_process(
    data_dir: str | os.PathLike[str], *, port: int | None = None, log_path: Path | None = None, **settings: Any
) -> Iterator[RunningRegistry]:
    """Run ``hubferry hub serve`` as a separate process (``python -m hubferry.registry serve``).

    Settings are passed as ``HUBFERRY_HUB_*`` environment variables; the server's output goes to
    ``log_path`` when given; the process is terminated on exit.
    """
    port = port or free_port()
    config = RegistrySettings(data_dir=Path(data_dir), port=port, **settings)
    env = dict(os.environ)
    env.update({f"HUBFERRY_HUB_{key.upper()}": _env_value(value) for key, value in settings.items()})
    command = [
        sys.executable, "-m", "hubferry.registry", "serve", "--data", str(data_dir),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    if log_path is None:
        process = subprocess.Popen(command, env=env)
    else:
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    try:
        _wait_healthy(endpoint, process)
        yield RunningRegistry(endpoint, Path(data_dir), config, None, stop, pid=process.pid)
    finally:
        stop()


def _wait_healthy(endpoint: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the registry process exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{endpoint}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise RuntimeError(f"the registry at {endpoint} did not become healthy")


def tamper_file(
    data_dir: str | os.PathLike[str],
    repo_id: str,
    path: str,
    *,
    repo_type: str = "model",
    revision: str = "main",
    drop_original: bool = True,
) -> dict[str, Any]:
    """Replace the server's copy of ``path`` at ``revision`` with altered bytes, in place.

    The stored content becomes the original with its first byte flipped and one byte appended,
    and the recorded sha256, size and git oid are updated to match it, so everything the registry
    reports (``get_paths_info``, ``list_repo_tree``, ``model_info(files_metadata=True)``) and
    serves (downloads) is self-consistent but differs from what was uploaded: the "tampered
    server copy" a post-upload verifier must catch. The registry reports stored metadata; it
    does not re-hash blobs on reads.

    Args:
        drop_original: also delete the original LFS object from the store (as if the server lost
            it), so a later push must upload it again. Other commits or repos sharing that exact
            content then lose it too; fine in tests.

    Returns:
        The new ``{"sha256", "size", "oid"}``.
    """
    namespace, _, name = repo_id.partition("/")
    engine = storage.make_engine(Path(data_dir))
    store = BlobStore(Path(data_dir) / "blobs")
    try:
        with storage.writing(engine) as conn:
            r = storage.repos.c
            repo_pk = conn.execute(
                select(r.id).where(r.type == repo_type, r.namespace == namespace, r.name == name)
            ).scalar()
            if repo_pk is None:
                raise KeyError(f"no {repo_type} repo {repo_id!r} in {data_dir}")
            ref = storage.refs.c
            commit = (
                conn.execute(select(ref.commit_oid).where(ref.repo_id == repo_pk, ref.name == revision)).scalar()
                or revision
            )
            e = storage.entries.c
            where = (e.repo_id == repo_pk, e.commit_oid == commit, e.path == path, e.kind == "file")
            row = conn.execute(select(storage.entries).where(*where)).first()
            if row is None:
                raise KeyError(f"no file {path!r} at {revision!r} of {repo_id!r}")
            sha256, sha1, size = _altered_copy(store, row.sha256)
            oid = lfs_pointer_oid(sha256, size) if row.lfs else sha1
            conn.execute(update(storage.entries).where(*where).values(sha256=sha256, size=size, oid=oid))
            if row.lfs and drop_original:
                conn.execute(delete(storage.lfs_objects).where(storage.lfs_objects.c.oid == row.sha256))
                store.path(row.sha256).unlink(missing_ok=True)
    finally:
        engine.dispose()
    return {"sha256": sha256, "size": size, "oid": oid}


def _altered_copy(store: BlobStore, sha256: str) -> tuple[str, str, int]:
    """Store the blob with its first byte flipped and a zero byte appended; returns its hashes."""
    source = store.path(sha256)
    size = source.stat().st_size + 1
    writer = store.writer()
    git = hashlib.sha1(b"blob %d\0" % size)
    with open(source, "rb") as f:
        first = True
        while chunk := f.read(4 * 1024 * 1024):
            if first:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                first = False
            writer.write(chunk)
            git.update(chunk)
    writer.write(b"\0")
    git.update(b"\0")
    return writer.commit(), git.hexdigest(), size


def stored_lfs_objects(data_dir: str | os.PathLike[str]) -> int:
    """How many objects the registry has received whole through LFS (basic or multipart)."""
    engine = storage.make_engine(Path(data_dir))
    try:
        with storage.reading(engine) as conn:
            return conn.execute(select(func.count()).select_from(storage.lfs_objects)).scalar_one()
    finally:
        engine.dispose()


def corrupt_blob(data_dir: str | os.PathLike[str], sha256: str) -> Path:
    """Flip the first byte of a stored blob on disk (metadata untouched); returns the blob's path.

    Downloads then return bytes whose sha256 differs from the recorded one.
    """
    blob = Path(data_dir) / "blobs" / sha256[:2] / sha256[2:4] / sha256
    with open(blob, "r+b") as f:
        first = f.read(1)
        if not first:
            raise ValueError(f"blob {sha256} is empty: nothing to corrupt")
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    return blob


class _NoSleepTime:
    """The ``time`` module, except that ``sleep`` returns at once."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(_seconds: float) -> None:
        return None


@contextmanager
def no_retry_sleep() -> Iterator[None]:
    """Make huggingface_hub's retry backoff instant (``huggingface_hub.utils._http.time.sleep``).

    Only huggingface_hub's HTTP module sees the change; the global ``time.sleep`` is untouched.
    """
    from huggingface_hub.utils import _http

    original = _http.time
    _http.time = _NoSleepTime()  # type: ignore[assignment]
    try:
        yield
    finally:
        _http.time = original
