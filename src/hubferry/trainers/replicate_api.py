"""The calls hubferry makes to Replicate, through the official client built in one factory.

Every call is retried on transient failures and its exceptions become hubferry errors (status, URL,
attempt, a hint). Tests point ``HUBFERRY_REPLICATE_BASE_URL`` at a fake or pass a transport.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import replicate
from replicate.exceptions import ReplicateError

from hubferry.config import Settings
from hubferry.errors import HubferryError, PermanentError, TransientError
from hubferry.hub import retry
from hubferry.logs import redact, register_secret

T = TypeVar("T")
#: Hardware of a destination model hubferry creates (a LoRA destination only stores versions).
DESTINATION_HARDWARE = "gpu-t4"


def connect(settings: Settings, token: str, transport: httpx.BaseTransport | None = None) -> ReplicateApi:
    """The one factory for Replicate clients: base URL and timeouts from settings, an optional transport."""
    register_secret(token)
    kwargs: dict[str, Any] = {"transport": transport} if transport is not None else {}
    timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
    client = replicate.Client(api_token=token, base_url=settings.replicate_base_url, timeout=timeout, **kwargs)
    return ReplicateApi(client, settings, token)


def classify(exc: BaseException, what: str, endpoint: str) -> HubferryError:
    """A Replicate client exception as a hubferry error."""
    if isinstance(exc, HubferryError):
        return exc
    if isinstance(exc, ReplicateError):
        status = exc.status or 0
        message = f"Replicate {what} failed: HTTP {status}: {redact(exc.detail or exc.title or '')}"
        if status in (401, 403):
            return PermanentError(message, category="authentication", status=status, url=endpoint,
                                  hint="check the Replicate token (--replicate-token, REPLICATE_API_TOKEN or "
                                  "`hubferry secrets set replicate_token`)")
        if status == 429:
            return TransientError(message, category="rate_limit", status=status, url=endpoint,
                                  hint="Replicate is rate-limiting this token; hubferry backs off and retries")
        if status in (408, 409) or status >= 500:
            return TransientError(message, category="service_error", status=status, url=endpoint,
                                  hint="Replicate had a problem; hubferry retries")
        return PermanentError(message, category="validation", status=status, url=endpoint,
                              hint="Replicate refused the request: read its message")
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"Replicate {what} timed out", category="timeout", url=endpoint,
                              hint="the network or Replicate is slow; hubferry retries")
    if isinstance(exc, httpx.HTTPError | ConnectionError):
        return TransientError(f"Replicate {what} failed: network error: {redact(str(exc))}", category="network",
                              url=endpoint, hint=f"check that {endpoint} is reachable")
    if isinstance(exc, ValueError):  # an answer the client could not parse (not JSON, unknown fields)
        return TransientError(f"Replicate {what}: unreadable answer: {redact(str(exc))[:300]}",
                              category="service_error", url=endpoint, hint="hubferry retries")
    return PermanentError(f"Replicate {what} failed: {type(exc).__name__}: {redact(str(exc))[:300]}",
                          category="service_error", url=endpoint, hint="report this with the log")


class ReplicateApi:
    """The handful of Replicate operations hubferry needs, each retried and classified."""

    def __init__(self, client: replicate.Client, settings: Settings, token: str) -> None:
        self.client = client
        self.token = token
        self.endpoint = settings.replicate_base_url
        self.policy = retry.RetryPolicy.from_settings(settings)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        def attempt() -> T:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - every client failure is classified here
                raise classify(exc, what, self.endpoint) from exc

        return retry.call(attempt, what=f"Replicate {what}", endpoint=self.endpoint, policy=self.policy)

    def webhook_secret(self) -> str:
        """The account's webhook signing secret (``whsec_...``)."""
        return str(self._call("read webhook secret", lambda: self.client.webhooks.default.secret()).key)

    def whoami(self) -> str:
        """The username of the token (``GET /v1/account``)."""
        return str(self._call("account", lambda: self.client.accounts.current()).username)

    def input_schema(self, model: str, version: str) -> dict[str, Any]:
        """The trainer version's input schema (``components.schemas.TrainingInput``, else ``Input``)."""
        schema = self._call("read version", lambda: self.client.models.get(model).versions.get(version).openapi_schema)
        components = (schema or {}).get("components", {}).get("schemas", {})
        found = components.get("TrainingInput") or components.get("Input")
        if not isinstance(found, dict):
            raise PermanentError(f"the version {model}:{version} publishes no training input schema",
                                 category="validation", hint="pick another trainer version with --trainer-version")
        return {**found, "_components": components}  # enums are ``allOf`` references into the components

    def ensure_model(self, destination: str) -> bool:
        """Create the destination model (private) when it is missing; returns True when created."""
        owner, name = destination.split("/", 1)
        try:
            self._call("read destination model", lambda: self.client.models.get(owner, name))
            return False
        except PermanentError as exc:
            if exc.context.get("status") != 404:
                raise
        self._call("create destination model", lambda: self.client.models.create(
            owner=owner, name=name, visibility="private", hardware=DESTINATION_HARDWARE,
            description="LoRA trained with hubferry"))
        return True

    def create_training(self, model: str, version: str, inputs: dict[str, Any], destination: str,
                        webhook: str | None) -> dict[str, Any]:
        """Start a training (never retried blindly: a POST that may have landed is not re-sent)."""
        kwargs: dict[str, Any] = {"destination": destination}
        if webhook:
            kwargs.update(webhook=webhook, webhook_events_filter=["start", "logs", "completed"])
        try:
            training = self.client.trainings.create(model=model, version=version, input=inputs, **kwargs)
        except Exception as exc:  # noqa: BLE001 - classified; a create is not retried (it may have landed)
            raise classify(exc, "create training", self.endpoint) from exc
        return training.dict()

    def get_training(self, training_id: str) -> dict[str, Any]:
        return self._call("read training", lambda: self.client.trainings.get(training_id)).dict()

    def cancel_training(self, training_id: str) -> dict[str, Any]:
        return self._call("cancel training", lambda: self.client.trainings.cancel(training_id)).dict()
