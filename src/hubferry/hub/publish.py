"""Publish a folder to the Hub: pre-flight, model card, batched upload, read-back verification."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from hubferry.config import Settings, load_settings
from hubferry.hub import card as cards
from hubferry.hub import manifest, preflight, retry, secret_scan
from hubferry.hub.client import make_api, use_xet
from hubferry.hub.manifest import LocalFile
from hubferry.hub.progress import ProgressCallback, PushProgress, ignore
from hubferry.hub.upload import Uploader
from hubferry.hub.verify import verify
from hubferry.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Publication:
    """A verified push: what the Hub now holds, read back and compared."""

    repo_id: str
    repo_url: str
    revision: str
    commit_sha: str
    files: list[LocalFile]
    bytes_uploaded: int
    commits_created: int
    elapsed_s: float
    verified: bool = field(default=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "repo_id": self.repo_id,
            "repo_url": self.repo_url,
            "revision": self.revision,
            "commit_sha": self.commit_sha,
            "files": [f.to_dict() for f in self.files],
            "bytes_uploaded": self.bytes_uploaded,
            "commits_created": self.commits_created,
            "elapsed_s": self.elapsed_s,
            "verified": self.verified,
        }


def publish(
    folder: str | Path,
    repo_id: str,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    private: bool = True,
    revision: str | None = None,
    message: str | None = None,
    include: list[str] | tuple[str, ...] = (),
    exclude: list[str] | tuple[str, ...] = (),
    allow_secrets: bool = False,
    card: cards.CardInfo | None = None,
    repo_type: str = "model",
    progress: ProgressCallback = ignore,
    settings: Settings | None = None,
    verbose: bool = False,
    verify_after: bool = True,
) -> Publication:
    """Publish ``folder`` to ``repo_id`` and verify it by reading it back.

    Args:
        folder: the folder to publish.
        repo_id: ``OWNER/NAME``; created (private by default) when missing.
        endpoint: Hub URL; default HUBFERRY_ENDPOINT, then HF_ENDPOINT, then huggingface.co.
        token: Hub token; default HUBFERRY_TOKEN, HF_TOKEN, then huggingface_hub's token file.
        private: visibility when the repo is created (an existing repo keeps its own).
        revision: branch to push to (created from main when missing); default ``main``.
        message: commit message.
        include, exclude: glob patterns on paths relative to ``folder``.
        allow_secrets: publish even if text files contain values that look like credentials.
        card: model-card facts, used only when the folder has no README.md.
        repo_type: ``model`` or ``dataset``.
        progress: called with :class:`PushProgress` events.
        settings: defaults to :func:`hubferry.config.load_settings`.
        verbose: log every HTTP request and response (token and signed URLs redacted).
        verify_after: read back and compare before returning (the default). Callers that record
            the commit before verifying pass False, then call :func:`verify_publication`.

    Returns:
        The :class:`Publication`; ``verified`` only once every file was read back with matching
        size and hash.

    Raises:
        ValidationError: bad input (nothing was sent).
        PermanentError: the Hub refused (bad token, no rights, ...); the hint says what to do.
        TransientError: the Hub or network kept failing; re-running resumes.
        VerificationError: the Hub does not hold what was sent.
    """
    started = time.monotonic()
    settings = settings or load_settings()
    folder = Path(folder).expanduser()
    endpoint = (endpoint or settings.resolved_endpoint()).rstrip("/")
    token = preflight.resolve_token(token or (settings.token.get_secret_value() if settings.token else None))
    revision = revision or "main"
    namespace, _name = preflight.check_repo_id(repo_id)
    policy = retry.RetryPolicy.from_settings(settings)
    progress(PushProgress("preflight", 0, 0, 0, 0, f"checking {folder}"))
    paths = manifest.select_paths(folder, include, exclude)
    sizes = {rel: local.stat().st_size for local, rel in paths}
    preflight.check_sizes(sizes, settings.max_file_size)

    api = make_api(settings, endpoint=endpoint, token=token, verbose=verbose)
    preflight.check_write_access(api, namespace, policy)

    progress(PushProgress("hashing", 0, sum(sizes.values()), 0, len(paths), "hashing files"))
    files = local_manifest(folder, repo_id, card=card, paths=paths, settings=settings)
    if not allow_secrets:
        secret_scan.refuse(secret_scan.scan(files, max_bytes=settings.secret_scan_max_bytes, extra=[token]))

    def call(fn, what):
        return retry.call(fn, what=what, endpoint=endpoint, policy=policy, repo_id=repo_id)

    repo_url = str(call(
        lambda: api.create_repo(repo_id, private=private, repo_type=repo_type, exist_ok=True), "create repo",
    ))
    if revision != "main":
        call(lambda: api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True),
             "create branch")

    bytes_total = manifest.total_size(files)
    uploader = Uploader(
        api, repo_id=repo_id, repo_type=repo_type, revision=revision, settings=settings, policy=policy,
        progress=progress, bytes_total=bytes_total, files_total=len(files), xet=use_xet(settings, endpoint),
    )
    result = uploader.run(files, message or f"Upload {folder.name} with hubferry")

    publication = Publication(
        repo_id=repo_id, repo_url=repo_url, revision=revision, commit_sha=result.commit_sha, files=files,
        bytes_uploaded=result.bytes_uploaded, commits_created=result.commits_created,
        elapsed_s=round(time.monotonic() - started, 3), verified=False,
    )
    if not verify_after:
        return publication
    progress(PushProgress("verifying", bytes_total, bytes_total, len(files), len(files), "reading back"))
    verify(api, repo_id, repo_type, result.commit_sha, files, policy)
    publication = dataclasses.replace(
        publication, verified=True, elapsed_s=round(time.monotonic() - started, 3)
    )
    progress(PushProgress("done", bytes_total, bytes_total, len(files), len(files), publication.repo_url))
    log.info("published", repo_id=repo_id, commit=result.commit_sha, files=len(files),
             bytes_uploaded=result.bytes_uploaded, commits=result.commits_created)
    return publication


def verify_publication(
    publication: Publication, *, endpoint: str, token: str, settings: Settings, repo_type: str = "model"
) -> Publication:
    """Read ``publication`` back from the Hub; returns it marked verified, or raises VerificationError."""
    api = make_api(settings, endpoint=endpoint, token=token)
    policy = retry.RetryPolicy.from_settings(settings)
    verify(api, publication.repo_id, repo_type, publication.commit_sha, publication.files, policy)
    return dataclasses.replace(publication, verified=True)


def local_manifest(
    folder: Path,
    repo_id: str,
    *,
    card: cards.CardInfo | None = None,
    paths: list[tuple[Path, str]] | None = None,
    settings: Settings,
) -> list[LocalFile]:
    """Every file a push of ``folder`` publishes, hashed: its files (all, or ``paths``) plus a generated card."""
    selected = manifest.select_paths(folder) if paths is None else paths
    files = manifest.build(selected, git_sha1_limit=settings.regular_file_limit)
    if "README.md" not in {f.path_in_repo for f in files}:
        info = cards.complete_from_folder(card or cards.CardInfo(), folder)
        files.append(manifest.from_bytes("README.md", cards.render(info, repo_id).encode()))
    return sorted(files, key=lambda f: f.path_in_repo)
