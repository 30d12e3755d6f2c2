"""The small protocols through which services reach the Hub and the trainers (adapters live elsewhere)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hubferry.hub.card import CardInfo
    from hubferry.hub.manifest import LocalFile
    from hubferry.hub.progress import PushProgress
    from hubferry.hub.publish import Publication


@dataclass(frozen=True)
class HubTarget:
    """Where a publish goes and with which token (the token is resolved when the publish runs)."""

    endpoint: str
    token: str | None

    def __repr__(self) -> str:  # never show the token
        return f"HubTarget(endpoint={self.endpoint!r}, token={'set' if self.token else 'none'})"


@dataclass(frozen=True)
class HubIdentity:
    """Who a token belongs to, as the Hub's whoami says."""

    name: str
    #: The token's role: ``write``, ``read``, ``fineGrained`` or ``None`` when the Hub does not say.
    role: str | None = None
    #: Organisations the user may write to.
    writable_orgs: tuple[str, ...] = field(default=())

    def can_write(self, namespace: str) -> bool:
        return self.role != "read" and (namespace == self.name or namespace in self.writable_orgs)


class Publisher(Protocol):
    """Publishing to a Hub: the only way services touch huggingface_hub."""

    def identify(self, target: HubTarget) -> HubIdentity:
        """whoami, retried on transient failures; raises PermanentError for a bad token."""
        ...

    def check_target(self, target: HubTarget, repo_id: str) -> HubIdentity:
        """Pre-flight: the endpoint answers, the token is valid and may write, the repo is free or writable."""
        ...

    def repo_exists(self, target: HubTarget, repo_id: str) -> bool: ...

    def newest_commit(self, target: HubTarget, repo_id: str) -> tuple[str, datetime] | None:
        """The newest commit on ``main`` and its time (None when the repo has none)."""
        ...

    def remote_files(self, target: HubTarget, repo_id: str, commit_sha: str) -> list[LocalFile]:
        """The files of ``repo_id`` at ``commit_sha``, as the Hub records them."""
        ...

    def dataset_rows(self, target: HubTarget, repo_id: str, max_rows: int) -> tuple[str, list[Any]]:
        """The first rows of a Hub dataset and the path of the file they come from."""
        ...

    def publish(
        self, folder: Path, repo_id: str, target: HubTarget, *, private: bool, message: str, card: CardInfo,
        progress: Callable[[PushProgress], None],
    ) -> Publication:
        """Push ``folder`` (resumable, exactly once); not yet verified."""
        ...

    def verify(
        self, folder: Path, repo_id: str, target: HubTarget, commit_sha: str, card: CardInfo,
        files: list[LocalFile] | None = None,
    ) -> list[LocalFile]:
        """Read ``commit_sha`` back and compare it with ``files`` (default: ``folder`` hashed again, with the
        card a publish would add); returns the files; raises VerificationError on a difference."""
        ...
