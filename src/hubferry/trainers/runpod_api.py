"""The calls hubferry makes to RunPod, through the official ``runpod`` client built in one factory.

The client has no retries, raises on a non-JSON answer, reads its base URL from the environment at
every call, and interpolates values into GraphQL unescaped. So: every call here is retried on
transient failures and classified into hubferry errors; the key is passed per call (never the
client's process-wide ``runpod.api_key``); the base URL is the ``runpod_base_url`` setting, handed to
the client through its own ``RUNPOD_API_BASE_URL``; and every value put into a query is checked first.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import requests
from runpod.api import ctl_commands
from runpod.api.graphql import run_graphql_query
from runpod.api.mutations import pods as pod_mutations
from runpod.api.queries import gpus as gpu_queries
from runpod.error import AuthenticationError, QueryError

from hubferry.config import Settings
from hubferry.errors import HubferryError, PermanentError, TransientError, ValidationError
from hubferry.hub import retry
from hubferry.logs import redact, register_secret

T = TypeVar("T")
#: RunPod's words when no machine matches a deploy request.
CAPACITY_MESSAGE = "no longer any instances available"
#: What may appear in a value the client puts between GraphQL quotes (it escapes nothing).
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_\-.:/@+=%?&~,]*")
_SAFE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _\-.:/()]{0,127}")


def connect(settings: Settings, api_key: str) -> RunpodApi:
    """The one factory for RunPod clients: base URL and retry policy from settings."""
    register_secret(api_key)
    # The official client reads this at every call; it is the only place it takes a base URL from.
    os.environ["RUNPOD_API_BASE_URL"] = settings.runpod_base_url.rstrip("/")
    return RunpodApi(settings, api_key)


def classify(exc: BaseException, what: str, endpoint: str) -> HubferryError:
    """A ``runpod`` client exception as a hubferry error."""
    if isinstance(exc, HubferryError):
        return exc
    if isinstance(exc, AuthenticationError):
        return PermanentError(f"RunPod {what} failed: the API key was refused", category="authentication",
                              status=401, url=endpoint,
                              hint="check the key (--runpod-key, RUNPOD_API_KEY or `hubferry secrets set "
                              "runpod_api_key`); make one at https://www.runpod.io/console/user/settings")
    if isinstance(exc, QueryError):
        message = redact(str(exc))[:500]
        if CAPACITY_MESSAGE in message:
            return PermanentError(f"RunPod has no capacity for this pod: {message}", category="capacity",
                                  url=endpoint, hint="try another GPU type (--gpu) or cloud type (--cloud-type "
                                  "COMMUNITY or ALL), or try again later")
        return PermanentError(f"RunPod {what} failed: {message}", category="validation", url=endpoint,
                              hint="RunPod refused the request: read its message")
    if isinstance(exc, requests.Timeout):
        return TransientError(f"RunPod {what} timed out", category="timeout", url=endpoint,
                              hint="the network or RunPod is slow; hubferry retries")
    if isinstance(exc, requests.RequestException | ConnectionError):
        return TransientError(f"RunPod {what} failed: network error: {type(exc).__name__}", category="network",
                              url=endpoint, hint=f"check that {endpoint} is reachable")
    if isinstance(exc, json.JSONDecodeError | ValueError | KeyError | TypeError):
        # a proxy's HTML page, a cut body, an answer without "data": the client cannot parse it
        return TransientError(f"RunPod {what}: unreadable answer ({type(exc).__name__})", category="service_error",
                              url=endpoint, hint="RunPod or a proxy answered with something else than GraphQL "
                              "JSON; hubferry retries")
    return PermanentError(f"RunPod {what} failed: {type(exc).__name__}: {redact(str(exc))[:300]}",
                          category="service_error", url=endpoint, hint="report this with the log")


def check_env(env: Mapping[str, str]) -> None:
    """Refuse pod variables the client would break GraphQL with (it puts them between quotes unescaped).

    Raises:
        ValidationError: naming the variable (never its value).
    """
    for key, value in env.items():
        if not _SAFE_KEY.fullmatch(key):
            raise ValidationError(f"invalid pod variable name {key!r}", field="env",
                                  hint="use letters, digits and underscores")
        if not _SAFE_VALUE.fullmatch(value) or len(value) > 4096:
            raise ValidationError(f"the value of pod variable {key} has characters RunPod's client cannot send "
                                  "(quotes, spaces, backslashes, newlines)", field="env",
                                  hint="use a value of letters, digits and -_.:/@+=%?&~,")


def check_id(kind: str, value: str) -> str:
    """A GPU type, image or pod name checked before it is put into a query."""
    if not _SAFE_ID.fullmatch(value):
        raise ValidationError(f"invalid {kind} {value!r}", field=kind,
                              hint=f"a {kind} has letters, digits, spaces and -_.:/() only")
    return value


class RunpodApi:
    """The handful of RunPod operations hubferry needs, each retried and classified."""

    def __init__(self, settings: Settings, api_key: str) -> None:
        self.key = api_key
        self.endpoint = settings.runpod_base_url.rstrip("/")
        self.policy = retry.RetryPolicy.from_settings(settings)

    def _call(self, what: str, fn: Callable[[], T], before_retry: Callable[[HubferryError], T | None] | None = None,
              ) -> T:
        def attempt() -> T:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - every client failure is classified here
                raise classify(exc, what, self.endpoint) from exc

        return retry.call(attempt, what=f"RunPod {what}", endpoint=self.endpoint, policy=self.policy,
                          before_retry=before_retry)

    def gpu(self, gpu_id: str) -> dict[str, Any]:
        """The GPU type (prices, memory, clouds).

        Raises:
            ValidationError: RunPod has no such GPU type (the message lists some that exist).
        """
        check_id("gpu", gpu_id)
        found = self._call("read GPU types", lambda: run_graphql_query(
            _gpu_query(gpu_id), api_key=self.key)["data"]["gpuTypes"])
        if not found:
            names = sorted(str(g.get("id")) for g in self.gpus())[:12]
            raise ValidationError(f"RunPod has no GPU type {gpu_id!r}", field="gpu",
                                  hint="use one of: " + ", ".join(names))
        return dict(found[0])

    def whoami(self) -> str:
        """The account id of the key (``myself``); PermanentError (authentication) for a refused key."""
        return str(self._call("read account", lambda: ctl_commands.get_user(api_key=self.key))["id"])

    def gpus(self) -> list[dict[str, Any]]:
        return list(self._call("list GPU types", lambda: ctl_commands.get_gpus(api_key=self.key)))

    def create_pod(self, *, name: str, image: str, gpu: str, cloud_type: str, env: Mapping[str, str],
                   container_disk_gb: int, volume_gb: int) -> dict[str, Any]:
        """Deploy an on-demand GPU pod. A retry after a lost answer first looks for the pod by its name
        (names are unique per job), so one request never starts two pods."""
        check_id("name", name)
        check_id("image", image)
        check_id("gpu", gpu)
        check_env(env)
        # no dockerArgs: an empty one replaces the image's command (the agent would never start)
        query = pod_mutations.generate_pod_deployment_mutation(
            name, image, gpu_type_id=gpu, cloud_type=cloud_type, support_public_ip=True, start_ssh=False,
            gpu_count=1, volume_in_gb=volume_gb, container_disk_in_gb=container_disk_gb, min_vcpu_count=1,
            min_memory_in_gb=1, volume_mount_path="/workspace", env=dict(env))

        def already_created(_: HubferryError) -> dict[str, Any] | None:
            return next((p for p in self.list_pods() if p.get("name") == name), None)

        return dict(self._call("deploy pod", lambda: run_graphql_query(query, api_key=self.key)["data"][
            "podFindAndDeployOnDemand"], before_retry=already_created))

    def get_pod(self, pod_id: str) -> dict[str, Any] | None:
        """The pod, or None when RunPod no longer knows it (terminated)."""
        check_id("pod", pod_id)
        pod = self._call("read pod", lambda: ctl_commands.get_pod(pod_id, api_key=self.key))
        return dict(pod) if pod else None

    def list_pods(self) -> list[dict[str, Any]]:
        return [dict(p) for p in self._call("list pods", lambda: ctl_commands.get_pods(api_key=self.key)) or []]

    def stop_pod(self, pod_id: str) -> None:
        check_id("pod", pod_id)
        self._call("stop pod", lambda: run_graphql_query(pod_mutations.generate_pod_stop_mutation(pod_id),
                                                         api_key=self.key))

    def resume_pod(self, pod_id: str, gpu_count: int = 1) -> None:
        check_id("pod", pod_id)
        self._call("resume pod", lambda: run_graphql_query(
            pod_mutations.generate_pod_resume_mutation(pod_id, gpu_count), api_key=self.key))

    def terminate_pod(self, pod_id: str) -> None:
        check_id("pod", pod_id)
        self._call("terminate pod", lambda: run_graphql_query(
            pod_mutations.generate_pod_terminate_mutation(pod_id), api_key=self.key))


def _gpu_query(gpu_id: str) -> str:
    return gpu_queries.generate_gpu_query(gpu_id, 1)
