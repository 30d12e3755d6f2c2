"""The :class:`~hubferry.services.ports.Publisher` port on huggingface_hub: how services reach the Hub."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from hubferry.config import Settings
from hubferry.errors import PermanentError, ValidationError
from hubferry.hub import preflight, remote_repo, retry
from hubferry.hub.card import CardInfo
from hubferry.hub.client import HubClients
from hubferry.hub.manifest import LocalFile
from hubferry.hub.progress import PushProgress
from hubferry.hub.publish import Publication, local_manifest, publish
from hubferry.hub.verify import verify
from hubferry.services.ports import HubIdentity, HubTarget

#: Pre-flight calls (identify, check_target, repo_exists) run while a person waits at submit: a few
#: quick tries, so an unreachable Hub is reported in seconds, not after a backoff ladder.
PREFLIGHT_ATTEMPTS = 3
PREFLIGHT_MAX_DELAY_S = 1.0


class HubPublisher:
    """Publishes with the settings' retry policy through one :class:`HubClients` factory.

    Every Hub call is retried on transient failures and classified by :mod:`hubferry.hub.failures`;
    no method lets a raw client exception out. Nothing is ever published from ``settings.home``.
    """

    def __init__(self, settings: Settings, clients: HubClients) -> None:
        self.settings = settings
        self.clients = clients
        self.policy = retry.RetryPolicy.from_settings(settings)
        self.preflight_policy = dataclasses.replace(
            self.policy, max_attempts=min(self.policy.max_attempts, PREFLIGHT_ATTEMPTS),
            base_delay=min(self.policy.base_delay, PREFLIGHT_MAX_DELAY_S / 4),
            max_delay=min(self.policy.max_delay, PREFLIGHT_MAX_DELAY_S),
            retry_after_cap=min(self.policy.retry_after_cap, 5 * PREFLIGHT_MAX_DELAY_S),
        )

    def _api(self, target: HubTarget) -> HfApi:
        return self.clients.api(target.endpoint.rstrip("/"), _token(target))

    def identify(self, target: HubTarget) -> HubIdentity:
        """whoami, retried on transient failures; PermanentError for a bad token."""
        return preflight.identify(self._api(target), self.preflight_policy)

    def check_target(self, target: HubTarget, repo_id: str) -> HubIdentity:
        """Pre-flight before any compute is spent: the endpoint answers, the token is valid and may
        write to the namespace, and the repo is free or an existing repo the user may write to."""
        namespace, _ = preflight.check_repo_id(repo_id)
        api = self._api(target)
        identity = preflight.identify(api, self.preflight_policy)
        if identity.role == "read":
            preflight.require_write(identity, namespace, api.endpoint)
        existing = preflight.existing_repo(api, repo_id, "model", self.preflight_policy)
        if existing is not None and not identity.can_write(namespace):
            raise PermanentError(
                f"{repo_id} already exists and belongs to {namespace!r}: {identity.name} cannot write to it",
                category="authentication", url=f"{api.endpoint}/{repo_id}", repo_id=repo_id,
                hint=f"choose a repo under {identity.name}/..., or use a token of {namespace!r} with write rights",
            )
        preflight.require_write(identity, namespace, api.endpoint)
        return identity

    def repo_exists(self, target: HubTarget, repo_id: str) -> bool:
        """Whether ``repo_id`` exists (and is visible to the token), retried and classified."""
        preflight.check_repo_id(repo_id)
        return preflight.existing_repo(self._api(target), repo_id, "model", self.preflight_policy) is not None

    def newest_commit(self, target: HubTarget, repo_id: str) -> tuple[str, datetime] | None:
        """The newest commit on ``main`` of ``repo_id`` and its time (None when there is none)."""
        return remote_repo.newest_commit(self._api(target), repo_id, self.policy)

    def remote_files(self, target: HubTarget, repo_id: str, commit_sha: str) -> list[LocalFile]:
        """The files of ``repo_id`` at ``commit_sha``, as the Hub records them."""
        return remote_repo.remote_manifest(self._api(target), repo_id, commit_sha, self.policy)

    def dataset_rows(self, target: HubTarget, repo_id: str, max_rows: int) -> tuple[str, list[Any]]:
        """The first rows of a Hub dataset (its first JSONL or Parquet file) and that file's path."""
        return remote_repo.dataset_rows(self._api(target), target.token, repo_id, max_rows, self.policy)

    def publish(
        self, folder: Path, repo_id: str, target: HubTarget, *, private: bool, message: str, card: CardInfo,
        progress: Callable[[PushProgress], None],
    ) -> Publication:
        """Push ``folder`` (resumable, exactly once); not yet verified."""
        return publish(
            folder, repo_id, endpoint=target.endpoint, token=_token(target), private=private,
            message=message, card=card, progress=progress, settings=self.settings, clients=self.clients,
            forbidden_roots=[self.settings.home], verify_after=False,
        )

    def verify(
        self, folder: Path, repo_id: str, target: HubTarget, commit_sha: str, card: CardInfo,
        files: list[LocalFile] | None = None,
    ) -> list[LocalFile]:
        """Read ``commit_sha`` back and compare it with ``files`` (default: ``folder`` hashed again,
        with the card a publish would add); raises VerificationError on a difference."""
        if not commit_sha:
            raise ValidationError(f"no commit to verify for {repo_id}", repo_id=repo_id, hint="publish it first")
        files = files if files is not None else local_manifest(folder, repo_id, card=card, settings=self.settings)
        verify(self._api(target), repo_id, "model", commit_sha, files, self.policy)
        return files


def _token(target: HubTarget) -> str:
    """A job's token is the one its credential resolved, never this process's environment."""
    if not target.token:
        raise ValidationError(f"no Hub token for {target.endpoint}", category="authentication",
                              hint="store one (`hubferry secrets set hf_token --endpoint URL`) or pass --token")
    return target.token
