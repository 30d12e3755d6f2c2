"""The one factory for Hub clients: endpoint, token, timeouts, transport and request logging.

huggingface_hub sends every request through one process-wide ``httpx2.Client``. Rather than
reconfiguring that client for each push, hubferry installs, once and idempotently, a client whose
transport is a router: each :class:`HfApi` made by :meth:`HubClients.api` carries a route id in a
request header, and the router hands its requests to that route's transport with that route's
timeouts and logging. Requests without the header (presigned LFS uploads, which huggingface_hub
sends bare) are routed by origin to the latest route for that origin, else sent directly. Two
pushes to two endpoints in one process therefore never share timeouts, transports or verbosity,
and nothing global is flipped per call.

What hubferry changes in a process, and only when a client is first made (never on import):

- huggingface_hub's client factory (``set_client_factory``) is set to the routed client;
- a filter redacting tokens and signed-URL query strings is added to huggingface_hub's loggers
  and handlers, so its own request and retry lines never print a secret.

It never sets ``HF_HUB_DISABLE_XET``, progress-bar state or log levels: Xet vs plain LFS is chosen
per file operation (see :mod:`hubferry.hub.upload`). Tests pass ``transport=httpx2.MockTransport(...)``.
"""

from __future__ import annotations

import importlib.util
import secrets
import threading
import time
import urllib.request
import weakref
from dataclasses import dataclass, field

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.utils import get_session, set_client_factory
from huggingface_hub.utils._http import hf_request_event_hook

from hubferry.config import Settings
from hubferry.logs import get_logger, redact, register_secret

log = get_logger("hubferry.http")
#: Request header naming the route (the :class:`HubClients` call) a request belongs to; never sent.
ROUTE_HEADER = "X-Hubferry-Route"
_XET_HOSTS = ("huggingface.co", "hf.co")
#: Timeouts (seconds) for requests no route claims, when no route is alive to lend its own.
DEFAULT_CONNECT_S = 10.0
DEFAULT_READ_S = 120.0


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (the unit of routing)."""
    parsed = httpx2.URL(url)
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme, 0)
    return f"{parsed.scheme}://{parsed.host}:{port}"


@dataclass(eq=False)
class Route:
    """Where the requests of one :class:`HfApi` go, and how patiently."""

    transport: httpx2.BaseTransport
    connect_s: float
    read_s: float
    verbose: bool
    id: str = field(default_factory=lambda: secrets.token_hex(8))

    def timeouts(self) -> dict[str, float]:
        return {"connect": self.connect_s, "read": self.read_s, "write": self.read_s, "pool": self.read_s}


@dataclass(frozen=True)
class Answer:
    """The last HTTP answer seen on a thread: lets a parse failure say what the server really sent."""

    status: int
    url: str
    content_type: str
    headers: dict[str, str]


class _EnvTransport(httpx2.BaseTransport):
    """Plain HTTP, through the proxy the environment names for each URL (HTTPS_PROXY, NO_PROXY ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transports: dict[str | None, httpx2.HTTPTransport] = {}

    def _for(self, url: httpx2.URL) -> httpx2.HTTPTransport:
        proxies = urllib.request.getproxies()
        proxy = proxies.get(url.scheme) or proxies.get("all")
        if proxy and urllib.request.proxy_bypass(url.host or ""):
            proxy = None
        with self._lock:
            if proxy not in self._transports:
                self._transports[proxy] = httpx2.HTTPTransport(proxy=proxy)
            return self._transports[proxy]

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return self._for(request.url).handle_request(request)

    def close(self) -> None:
        with self._lock:
            transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            transport.close()


class _Router(httpx2.BaseTransport):
    """Hands each request to its route's transport, with its timeouts and logging."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routes: weakref.WeakValueDictionary[str, Route] = weakref.WeakValueDictionary()
        self._by_origin: dict[str, weakref.ref[Route]] = {}
        self._fallback: httpx2.BaseTransport | None = None
        self._last = threading.local()

    def register(self, route: Route, endpoint: str) -> None:
        with self._lock:
            self._routes[route.id] = route
            self._by_origin[origin(endpoint)] = weakref.ref(route)

    def _route(self, request: httpx2.Request) -> Route:
        route_id = request.headers.pop(ROUTE_HEADER, None)
        with self._lock:
            route = self._routes.get(route_id) if route_id else None
            if route is None:
                ref = self._by_origin.get(origin(str(request.url)))
                route = ref() if ref is not None else None
            if route is not None:
                return route
            if self._fallback is None:
                self._fallback = _EnvTransport()
            live = list(self._routes.values())
        return Route(
            self._fallback, max((r.connect_s for r in live), default=DEFAULT_CONNECT_S),
            max((r.read_s for r in live), default=DEFAULT_READ_S), any(r.verbose for r in live), id="direct",
        )

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        route = self._route(request)
        timeout = request.extensions.get("timeout")
        if not timeout or all(value is None for value in timeout.values()):
            request.extensions["timeout"] = route.timeouts()  # huggingface_hub sets none: a stalled socket hangs
        url = redact(str(request.url))
        if route.verbose:
            log.debug("request", method=request.method, url=url)
        started = time.monotonic()
        try:
            response = route.transport.handle_request(request)
        except Exception as exc:
            if route.verbose:
                log.debug("request failed", method=request.method, url=url, error=type(exc).__name__)
            raise
        self._last.answer = Answer(
            response.status_code, url, response.headers.get("content-type", ""),
            {k: response.headers[k] for k in ("retry-after", "ratelimit", "x-request-id") if k in response.headers},
        )
        if route.verbose:
            log.debug(
                "response", method=request.method, url=url, status=response.status_code,
                elapsed_ms=round((time.monotonic() - started) * 1000, 1),
            )
        return response

    def last_answer(self) -> Answer | None:
        return getattr(self._last, "answer", None)

    def forget_answer(self) -> None:
        self._last.answer = None

    def close(self) -> None:
        """Keep the route transports open: huggingface_hub closes its shared client after a connect
        error while other threads (other pushes) still send through it; they own their transports."""


_ROUTER = _Router()
_install_lock = threading.Lock()
_installed = False


class _RoutedClient(httpx2.Client):
    """huggingface_hub's shared client, as hubferry installs it."""


def _routed_client() -> httpx2.Client:
    return _RoutedClient(
        event_hooks={"request": [hf_request_event_hook]}, follow_redirects=True, timeout=None,
        transport=_ROUTER, trust_env=False,  # proxies are the route transports' business (_EnvTransport)
    )


def install() -> None:
    """Make huggingface_hub send through hubferry's router (idempotent; re-done if someone replaced it)."""
    global _installed
    with _install_lock:
        # Once installed, the shared client is ours unless someone set another factory since.
        if not _installed or not isinstance(get_session(), _RoutedClient):
            set_client_factory(_routed_client)
            _installed = True


def last_answer() -> Answer | None:
    """The last HTTP answer received on the calling thread since :func:`forget_answer`, if any."""
    return _ROUTER.last_answer()


def forget_answer() -> None:
    """Start a new call on this thread: an earlier call's answer must not explain its failure."""
    _ROUTER.forget_answer()


_shared_lock = threading.Lock()
_shared: list[_EnvTransport] = []


def _shared_transport() -> _EnvTransport:
    """One connection pool for every :class:`HubClients` given no transport."""
    with _shared_lock:
        if not _shared:
            _shared.append(_EnvTransport())
        return _shared[0]


class _HubApi(HfApi):
    """An :class:`HfApi` holding its route alive (the router keeps only weak references)."""

    route: Route


class HubClients:
    """Makes the :class:`HfApi` clients of hubferry; tests swap the transport here.

    Args:
        settings: timeouts (``connect_timeout``, ``read_timeout``) and the Xet choice.
        transport: where requests go; default real HTTP (with environment proxies). Tests pass
            ``httpx2.MockTransport`` or a transport that fails on purpose.
    """

    def __init__(self, settings: Settings, transport: httpx2.BaseTransport | None = None) -> None:
        self.settings = settings
        self.transport = transport if transport is not None else _shared_transport()

    def api(self, endpoint: str, token: str, *, verbose: bool = False) -> HfApi:
        """An :class:`HfApi` for ``endpoint``; ``token`` is registered for redaction.

        Args:
            verbose: log every request and response of this client (URLs redacted).
        """
        register_secret(token)
        install()
        route = Route(self.transport, self.settings.connect_timeout, self.settings.read_timeout, verbose)
        _ROUTER.register(route, endpoint)
        api = _HubApi(
            endpoint=endpoint, token=token, library_name="hubferry", headers={ROUTE_HEADER: route.id},
        )
        api.route = route
        return api

    def use_xet(self, endpoint: str) -> bool:
        """Whether uploads to ``endpoint`` go through Xet storage: see :func:`use_xet`."""
        return use_xet(self.settings, endpoint)


def xet_installed() -> bool:
    """hf_xet is importable and the user did not disable it (``HF_HUB_DISABLE_XET``; read, never set)."""
    return not constants.HF_HUB_DISABLE_XET and importlib.util.find_spec("hf_xet") is not None


def use_xet(settings: Settings, endpoint: str) -> bool:
    """Whether uploads go through Xet storage (huggingface.co) or plain LFS (on-prem, tests).

    ``HUBFERRY_XET=auto`` uses Xet on huggingface.co only; either way Xet needs hf_xet installed.
    """
    if settings.xet == "auto":
        wanted = any(httpx2.URL(endpoint).host.endswith(host) for host in _XET_HOSTS)
    else:
        wanted = settings.xet == "on"
    return wanted and xet_installed()
