"""Serving an ASGI app with uvicorn in a thread on a free 127.0.0.1 port: the fakes and the API tests use this."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def bound_socket() -> tuple[socket.socket, str]:
    """A socket bound to a free 127.0.0.1 port, and the base URL it will answer on (known before the app is
    built, for fakes that put their own URL in their answers)."""
    # IPPROTO_TCP (not 0), so asyncio sets TCP_NODELAY on accepted connections: without it every
    # keep-alive request waits ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def serve_in_thread(app: Any, sock: socket.socket, *, name: str, **config: Any) -> Iterator[None]:
    """Run ``app`` on ``sock`` until the block ends (the socket is closed then); ``config`` goes to uvicorn.

    Raises:
        RuntimeError: the server did not start within 20 s.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start on {sock.getsockname()}")
            time.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
