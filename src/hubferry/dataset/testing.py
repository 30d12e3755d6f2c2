"""Test helpers for datasets: generated photos, a fixed DNS resolver, and a local image server.

Typical use::

    folder = tmp_path / "photos"
    for i in range(12):
        photo(folder / f"p{i}.jpg", seed=i)
    with ImageServer() as server:
        server.add("/a.jpg", (folder / "p0.jpg").read_bytes())
        server.redirect("/go", "http://127.0.0.1:1/secret")
        fetcher = Fetcher(load_settings(fetch_allow_hosts=("127.0.0.1",)))

Nothing here touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from hubferry.dataset.addresses import Resolver

__all__ = ["ImageServer", "Route", "photo", "photos", "static_resolver"]


def photo(path: Path, *, size: tuple[int, int] = (512, 384), seed: int = 0,
          exif: Mapping[int, Any] | Image.Exif | None = None, mode: str = "RGB", **save: Any) -> Path:
    """Write a photo-like picture (a gradient with a few shapes, different for each ``seed``) to ``path``.

    The format follows the suffix; ``exif`` tags (e.g. ``{0x0112: 6}`` for a rotated phone photo, or a
    whole ``Image.Exif`` with a GPS IFD) are embedded; ``mode="RGBA"`` gives a transparent corner.
    Extra keywords go to ``Image.save``.
    """
    rng = random.Random(seed)
    width, height = size
    base = Image.linear_gradient("L").resize(size).convert("RGB")
    tint = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    image = Image.blend(base, tint, 0.5)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(width // 8, width // 2), y0 + rng.randrange(height // 8, height // 2)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    if mode == "RGBA":
        image = image.convert("RGBA")
        ImageDraw.Draw(image).rectangle((0, 0, width // 4, height // 4), fill=(0, 0, 0, 0))
    elif mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(exif, Image.Exif):
        save["exif"] = exif
    elif exif:
        tags = image.getexif()
        for tag, value in exif.items():
            tags[tag] = value
        save["exif"] = tags
    image.save(path, **save)
    return path


def photos(folder: Path, count: int, *, size: tuple[int, int] = (512, 384), suffix: str = ".jpg") -> list[Path]:
    """``count`` distinct photos ``photo_000.jpg`` ... in ``folder``."""
    return [photo(folder / f"photo_{i:03d}{suffix}", size=size, seed=i) for i in range(count)]


def static_resolver(table: Mapping[str, list[str]]) -> Resolver:
    """A resolver answering from ``table`` (host -> addresses), failing like DNS for other hosts.

    Also counts lookups per host in ``resolver.calls`` (a dict), to show a name is resolved once per hop.
    """
    calls: dict[str, int] = {}

    def resolve(host: str, port: int) -> list[str]:
        calls[host] = calls.get(host, 0) + 1
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(table[host])

    resolve.calls = calls  # type: ignore[attr-defined]  # a test's view of the lookups
    return resolve


@dataclass
class Route:
    """What the server answers on one path."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class ImageServer:
    """A local HTTP server (127.0.0.1, a free port, its own thread) with routes set by the test.

    ``requests`` records ``(path, Host header)`` of every request, so a test can see where a fetch went.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                server.requests.append((self.path, self.headers.get("Host", "")))
                route = server.routes.get(self.path, Route(404, b"not found", {"Content-Type": "text/plain"}))
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def add(self, path: str, body: bytes, content_type: str = "image/jpeg", status: int = 200,
            **headers: str) -> str:
        """Serve ``body`` on ``path``; returns the URL."""
        self.routes[path] = Route(status, body, {"Content-Type": content_type, **headers})
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """Answer ``path`` with a redirect to ``location``; returns the URL."""
        self.routes[path] = Route(status, b"", {"Location": location})
        return self.url(path)

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

