"""Publish a folder to the Hub: pre-flight, model card, pipelined hashing and upload, read-back verification."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from huggingface_hub import HfApi

from hubferry.config import Settings, load_settings
from hubferry.hub import card as cards
from hubferry.hub import manifest, preflight, retry, secret_scan
from hubferry.hub.client import HubClients
from hubferry.hub.manifest import LocalFile, Selected
from hubferry.hub.progress import ProgressCallback, PushProgress, format_size, ignore
from hubferry.hub.upload import Pending, Ready, Uploader
from hubferry.hub.verify import verify
from hubferry.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Publication:
    """A push: what the Hub now holds; ``verified`` once read back and compared."""

    repo_id: str
    repo_url: str
    revision: str
    commit_sha: str
    files: list[LocalFile]
    bytes_uploaded: int
    commits_created: int
    elapsed_s: float
    verified: bool = field(default=False)
    #: Things the user should know that did not stop the push (an unchanged visibility ...).
    notices: tuple[str, ...] = ()

    @property
    def revision_url(self) -> str:
        """The pushed branch's page: the repo's URL for ``main``, ``.../tree/BRANCH`` otherwise."""
        return self.repo_url if self.revision == "main" else f"{self.repo_url}/tree/{quote(self.revision, safe='')}"

    def to_dict(self) -> dict[str, object]:
        return {
            "repo_id": self.repo_id,
            "repo_url": self.repo_url,
            "revision": self.revision,
            "revision_url": self.revision_url,
            "commit_sha": self.commit_sha,
            "files": [f.to_dict() for f in self.files],
            "bytes_uploaded": self.bytes_uploaded,
            "commits_created": self.commits_created,
            "elapsed_s": self.elapsed_s,
            "verified": self.verified,
            "notices": list(self.notices),
        }


def publish(
    folder: str | Path,
    repo_id: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    private: bool | None = None,
    update_visibility: bool = False,
    revision: str | None = None,
    message: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    allow_secrets: bool = False,
    follow_symlinks: bool = False,
    forbidden_roots: Iterable[str | os.PathLike[str]] | None = None,
    card: cards.CardInfo | None = None,
    repo_type: str = "model",
    progress: ProgressCallback = ignore,
    settings: Settings | None = None,
    clients: HubClients | None = None,
    verbose: bool = False,
    verify_after: bool = True,
) -> Publication:
    """Publish ``folder`` to ``repo_id`` and verify it by reading it back.

    Args:
        folder: the folder to publish.
        repo_id: ``OWNER/NAME``; created (private unless ``private=False``) when missing.
        endpoint: Hub URL; default HUBFERRY_ENDPOINT, then HF_ENDPOINT, then huggingface.co.
        token: Hub token; default HUBFERRY_TOKEN, HF_TOKEN, then huggingface_hub's token file.
        private: visibility of a new repo (default private). An existing repo keeps its own unless
            ``update_visibility``; a difference is reported in :attr:`Publication.notices`.
        update_visibility: make an existing repo's visibility match ``private``.
        revision: branch to push to (created from main when missing); default ``main``.
        message: commit message.
        include, exclude: glob patterns on paths relative to ``folder``.
        allow_secrets: publish even if files contain values that look like credentials.
        follow_symlinks: publish links that resolve inside ``folder`` as the files they point to
            (links out of the folder are always refused).
        forbidden_roots: folders nothing is ever published from; default ``settings.home``
            (hubferry's keys and vault).
        card: model-card facts, used only when the folder has no README.md.
        repo_type: ``model`` or ``dataset``.
        progress: called with :class:`PushProgress` events.
        settings: defaults to :func:`hubferry.config.load_settings`.
        clients: the Hub client factory (tests pass one with a fake transport).
        verbose: log every HTTP request and response (token and signed URLs redacted).
        verify_after: read back and compare before returning (the default). Callers that record
            the commit before verifying pass False, then call :func:`verify_publication`.

    Returns:
        The :class:`Publication`; ``verified`` only once every file was read back with matching
        size and hash.

    Raises:
        ValidationError: bad input, a link out of the folder, secrets in the files (nothing committed).
        PermanentError: the Hub refused (bad token, no rights, ...); the hint says what to do.
        TransientError: the Hub or network kept failing; re-running resumes.
        VerificationError: the Hub does not hold what was sent.
    """
    started = time.monotonic()
    settings = settings or load_settings()
    clients = clients or HubClients(settings)
    folder = Path(folder).expanduser()
    endpoint = (endpoint or settings.resolved_endpoint()).rstrip("/")
    token = preflight.resolve_token(token, settings)
    revision = revision or "main"
    namespace, _name = preflight.check_repo_id(repo_id)
    policy = retry.RetryPolicy.from_settings(settings)
    progress(PushProgress("preflight", 0, 0, 0, 0, f"checking {folder}"))
    items = manifest.select_paths(
        folder, include, exclude, follow_symlinks=follow_symlinks,
        forbidden_roots=[settings.home] if forbidden_roots is None else forbidden_roots,
    )
    preflight.check_sizes({item.path_in_repo: item.size for item in items}, settings.max_file_size)
    limit = settings.regular_file_limit
    scan = None if allow_secrets else [token]
    bytes_total = sum(i.size for i in items)

    # Large files are hashed (and scanned) from now on, one after the other, while the Hub is asked
    # who we are and while earlier files upload; small ones are hashed and scanned before anything is sent.
    with manifest.HashAhead([i for i in items if i.size > limit], git_sha1_limit=limit, scan=scan) as ahead:
        api = clients.api(endpoint, token, verbose=verbose)
        preflight.require_write(preflight.identify(api, policy), namespace, endpoint)
        existing = preflight.existing_repo(api, repo_id, repo_type, policy)
        progress(PushProgress("hashing", 0, bytes_total, 0, len(items), "hashing files"))
        ready, findings = manifest.hash_all([i for i in items if i.size <= limit], git_sha1_limit=limit, scan=scan)
        if "README.md" not in {i.path_in_repo for i in items}:
            info = cards.complete_from_folder(card or cards.CardInfo(), folder)
            generated = manifest.from_bytes("README.md", cards.render(info, repo_id).encode())
            ready.append(generated)
            bytes_total += generated.size
            if scan is not None:
                findings += secret_scan.scan_bytes("README.md", generated.content or b"", scan)
        secret_scan.refuse(findings)

        def call(fn, what):
            return retry.call(fn, what=what, endpoint=endpoint, policy=policy, repo_id=repo_id)

        repo_url = f"{endpoint}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        notices: list[str] = []
        if existing is None:
            repo_url = str(call(
                lambda: api.create_repo(
                    repo_id, private=True if private is None else private, repo_type=repo_type, exist_ok=True,
                ),
                "create repo",
            ))
        elif private is not None and bool(existing.private) != private:
            notices.append(_visibility(api, call, repo_id, repo_type, private, update_visibility))
            progress(PushProgress("preflight", 0, bytes_total, 0, len(items), notices[-1]))
        if revision != "main":
            call(lambda: api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True),
                 "create branch")

        uploader = Uploader(
            api, repo_id=repo_id, repo_type=repo_type, revision=revision, settings=settings, policy=policy,
            progress=progress, bytes_total=bytes_total, files_total=len(ready) + len(ahead.pending),
            xet=clients.use_xet(endpoint), before_commit=ahead.finished,
        )
        entries: list[Pending] = [Ready(f) for f in ready]
        entries += ahead.pending
        entries.sort(key=lambda e: e.path_in_repo)
        try:
            result = uploader.run(entries, message or f"Upload {folder.name} with hubferry")
        except manifest.SecretsFound as found:
            if existing is None:
                _remove_new_repo(api, repo_id, repo_type)
            secret_scan.refuse(found.findings)
            raise
        files = sorted([*ready, *ahead.finished()], key=lambda f: f.path_in_repo)

    publication = Publication(
        repo_id=repo_id, repo_url=repo_url, revision=revision, commit_sha=result.commit_sha, files=files,
        bytes_uploaded=result.bytes_uploaded, commits_created=result.commits_created,
        elapsed_s=round(time.monotonic() - started, 3), verified=False, notices=tuple(notices),
    )
    if not verify_after:
        return publication
    progress(PushProgress("verifying", bytes_total, bytes_total, len(files), len(files), "reading back"))
    verify(api, repo_id, repo_type, result.commit_sha, files, policy)
    publication = dataclasses.replace(publication, verified=True, elapsed_s=round(time.monotonic() - started, 3))
    progress(PushProgress("done", bytes_total, bytes_total, len(files), len(files), publication.revision_url))
    log.info("published", repo_id=repo_id, commit=result.commit_sha, files=len(files),
             sent=format_size(result.bytes_uploaded), commits=result.commits_created)
    return publication


def _visibility(api: HfApi, call, repo_id: str, repo_type: str, private: bool, update: bool) -> str:
    """Apply (or only report) a visibility that differs from the existing repo's."""
    have, want = ("public", "private") if private else ("private", "public")
    if not update:
        return (f"{repo_id} already exists and is {have}: its visibility is left unchanged "
                f"(pass --update-visibility to make it {want})")
    call(lambda: api.update_repo_settings(repo_id, private=private, repo_type=repo_type), "update repo visibility")
    return f"{repo_id} was {have} and is now {want}"


def _remove_new_repo(api: HfApi, repo_id: str, repo_type: str) -> None:
    """Delete the repo this push created, before refusing it: nothing was committed to it."""
    try:
        api.delete_repo(repo_id, repo_type=repo_type, missing_ok=True)
    except Exception as exc:  # noqa: BLE001 - best effort: the refusal that follows is what matters
        log.warning("could not remove the empty repo this push created", repo_id=repo_id, error=str(exc))


def verify_publication(
    publication: Publication, *, endpoint: str, token: str, settings: Settings, repo_type: str = "model",
    clients: HubClients | None = None,
) -> Publication:
    """Read ``publication`` back from the Hub; returns it marked verified, or raises VerificationError."""
    api = (clients or HubClients(settings)).api(endpoint, token)
    policy = retry.RetryPolicy.from_settings(settings)
    verify(api, publication.repo_id, repo_type, publication.commit_sha, publication.files, policy)
    return dataclasses.replace(publication, verified=True)


def local_manifest(
    folder: Path,
    repo_id: str,
    *,
    card: cards.CardInfo | None = None,
    paths: Sequence[Selected] | None = None,
    settings: Settings,
    follow_symlinks: bool = False,
) -> list[LocalFile]:
    """Every file a push of ``folder`` publishes, hashed: its files (all, or ``paths``) plus a generated card."""
    selected = (
        manifest.select_paths(folder, follow_symlinks=follow_symlinks, forbidden_roots=[settings.home])
        if paths is None else paths
    )
    files = manifest.build(selected, git_sha1_limit=settings.regular_file_limit)
    if "README.md" not in {f.path_in_repo for f in files}:
        info = cards.complete_from_folder(card or cards.CardInfo(), Path(folder))
        files.append(manifest.from_bytes("README.md", cards.render(info, repo_id).encode()))
    return sorted(files, key=lambda f: f.path_in_repo)
