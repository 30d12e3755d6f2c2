"""Repositories, revisions and snapshots: the registry's model of git, kept in SQLite.

A commit stores the full list of its entries (files and directories with git oids), so reading a
revision is one indexed query, and a commit is "load parent entries, apply operations, write".
Commits on one branch are serialized by a per-branch lock plus SQLite's write lock.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, delete, func, insert, select, update

from . import gitobjects, storage
from .auth import Principal, require_write
from .blobs import BlobStore
from .httperrors import HubHTTPError, entry_not_found, repo_not_found, revision_not_found
from .paths import BIDI_CONTROLS

REPO_TYPES = ("model", "dataset")
URL_PREFIXES = {"model": "", "dataset": "datasets/"}

_NAME = re.compile(r"^\b[\w\-.]{1,96}\b$", re.ASCII)
_SHA_PREFIX = re.compile(r"^[0-9a-f]{7,40}$")
_BAD_REF_CHAR = re.compile(f"[\\x00-\\x20\\x7f-\\x9f~^:?*\\[\\\\{BIDI_CONTROLS}]")
_PR_REF = re.compile(r"refs/pr/([0-9]{1,9})")
#: Longest branch or tag name.
MAX_REF_BYTES = 255
DEFAULT_BRANCH = "main"


@dataclass(frozen=True)
class Repo:
    """One repository row."""

    pk: int
    type: str
    namespace: str
    name: str
    private: bool
    owner: str
    created_at: float

    @property
    def repo_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def url_path(self) -> str:
        """``[datasets/]ns/name``: the repo's path under the endpoint."""
        return f"{URL_PREFIXES[self.type]}{self.repo_id}"


@dataclass(frozen=True)
class AddFile:
    """A file to write in a commit; its content is already in the blob store."""

    path: str
    size: int
    sha256: str
    oid: str  # git blob sha1 (of the LFS pointer for LFS files)
    lfs: bool


@dataclass(frozen=True)
class DeleteFile:
    path: str


@dataclass(frozen=True)
class DeleteFolder:
    path: str


Operation = AddFile | DeleteFile | DeleteFolder


def validate_repo_name(name: str, what: str = "name") -> None:
    """Apply the Hub's repo-id rules (``huggingface_hub.utils.validate_repo_id``) to one part."""
    if not _NAME.match(name) or "--" in name or ".." in name or name.endswith(".git"):
        raise HubHTTPError(
            400,
            f"Invalid repo {what} {name!r}: use alphanumeric chars, '-', '_' or '.', not starting or ending "
            "with '-' or '.', no '--' or '..', not ending in '.git', at most 96 chars",
        )


def validate_ref_name(name: str, kind: str) -> None:
    """Git's ref-name rules (``git check-ref-format``), plus: ``refs/...`` names belong to the registry."""
    if (
        not name
        or len(name.encode()) > MAX_REF_BYTES
        or name.startswith(("/", "refs/", "-"))
        or name.endswith(("/", ".", ".lock"))
        or ".." in name
        or "//" in name
        or "@{" in name
        or _BAD_REF_CHAR.search(name)
    ):
        raise HubHTTPError(
            400,
            f"Invalid {kind} name {name[:100]!r}: use letters, digits, '-', '_', '.' and '/', at most "
            f"{MAX_REF_BYTES} bytes, not starting with 'refs/' or '/', without '..', '//', '@{{', spaces, "
            "control or bidi characters",
        )


def gitattributes(extensions: Iterable[str]) -> bytes:
    """The ``.gitattributes`` of a new repo, routing the LFS extensions to LFS."""
    lines = [f"*{ext} filter=lfs diff=lfs merge=lfs -text" for ext in sorted(extensions)]
    lines.append("*tfevents* filter=lfs diff=lfs merge=lfs -text")
    return ("\n".join(lines) + "\n").encode()


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


class RepoStore:
    """Reads and writes repositories; every method opens its own transaction."""

    def __init__(self, engine: Engine, blobs: BlobStore, lfs_extensions: Sequence[str]) -> None:
        self.engine = engine
        self.blobs = blobs
        self.lfs_extensions = tuple(lfs_extensions)
        self._locks: dict[tuple[int, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- repositories ----------------------------------------------------------------------------

    def find(self, conn: Connection, repo_type: str, namespace: str, name: str) -> Repo | None:
        t = storage.repos.c
        row = conn.execute(
            select(storage.repos).where(t.type == repo_type, t.namespace == namespace, t.name == name)
        ).first()
        return _repo(row) if row else None

    def by_pk(self, pk: int) -> Repo | None:
        with storage.reading(self.engine) as conn:
            row = conn.execute(select(storage.repos).where(storage.repos.c.id == pk)).first()
        return _repo(row) if row else None

    def references(self, repo: Repo, sha256: str) -> bool:
        """Whether any commit of ``repo`` holds a file with this content."""
        e = storage.entries.c
        with storage.reading(self.engine) as conn:
            found = conn.execute(select(e.path).where(e.repo_id == repo.pk, e.sha256 == sha256).limit(1)).first()
        return found is not None

    def visible(self, principal: Principal, repo_type: str, namespace: str, name: str) -> Repo:
        """The repo if the caller may read it; otherwise 404 ``RepoNotFound``, as for a missing repo."""
        with storage.reading(self.engine) as conn:
            repo = self.find(conn, repo_type, namespace, name)
        if repo is None or (repo.private and principal.user != repo.owner):
            raise repo_not_found(f"{namespace}/{name}")
        return repo

    def writable(self, principal: Principal, repo_type: str, namespace: str, name: str) -> Repo:
        """The repo if the caller may write to it (404 if invisible, 401/403 otherwise)."""
        repo = self.visible(principal, repo_type, namespace, name)
        user = require_write(principal)
        if user != repo.owner:
            raise HubHTTPError(403, f"You don't have the rights to write to {repo.repo_id}", code="Forbidden")
        return repo

    def create(self, owner: str, repo_type: str, namespace: str, name: str, private: bool) -> tuple[Repo, bool]:
        """Create a repo with its initial commit (a ``.gitattributes``).

        Returns:
            ``(repo, created)``; ``created`` is False if it already existed.
        """
        validate_repo_name(namespace, "namespace")
        validate_repo_name(name)
        content = gitattributes(self.lfs_extensions)
        sha256 = self.blobs.put_bytes(content)
        with storage.writing(self.engine) as conn:
            existing = self.find(conn, repo_type, namespace, name)
            if existing is not None:
                return existing, False
            now = time.time()
            pk = conn.execute(
                insert(storage.repos)
                .values(type=repo_type, namespace=namespace, name=name, private=private, owner=owner, created_at=now)
                .returning(storage.repos.c.id)
            ).scalar_one()
            repo = Repo(pk, repo_type, namespace, name, private, owner, now)
            add = AddFile(".gitattributes", len(content), sha256, gitobjects.blob_oid(content), lfs=False)
            oid = self._write_commit(conn, repo, None, {}, [add], owner, "initial commit", "")
            conn.execute(insert(storage.refs).values(repo_id=pk, name=DEFAULT_BRANCH, kind="branch", commit_oid=oid))
        return repo, True

    def set_private(self, repo: Repo, private: bool) -> None:
        with storage.writing(self.engine) as conn:
            conn.execute(update(storage.repos).where(storage.repos.c.id == repo.pk).values(private=private))

    def delete(self, repo: Repo) -> None:
        with storage.writing(self.engine) as conn:
            conn.execute(delete(storage.entries).where(storage.entries.c.repo_id == repo.pk))
            conn.execute(delete(storage.repos).where(storage.repos.c.id == repo.pk))

    def list_repos(
        self,
        principal: Principal,
        *,
        repo_type: str | None = None,
        author: str | None = None,
        search: str | None = None,
        sort: str = "lastModified",
        descending: bool = True,
        offset: int = 0,
        limit: int | None = None,
        everything: bool = False,
    ) -> list[tuple[Repo, str | None, float | None]]:
        """Repos the caller may see (all of them with ``everything``), with head commit oid and date.

        Args:
            author: only this namespace.
            search: only repo ids containing this text (case-insensitive).
            sort: ``lastModified``, ``createdAt`` or ``id``.
        """
        r, f, c = storage.repos.c, storage.refs.c, storage.commits.c
        query = (
            select(storage.repos, f.commit_oid, c.created_at.label("head_date"))
            .outerjoin(storage.refs, and_(f.repo_id == r.id, f.name == DEFAULT_BRANCH))
            .outerjoin(storage.commits, and_(c.repo_id == r.id, c.oid == f.commit_oid))
        )
        if not everything:
            query = query.where((r.private.is_(False)) | (r.owner == (principal.user or "")))
        if repo_type:
            query = query.where(r.type == repo_type)
        if author:
            query = query.where(r.namespace == author)
        if search:
            query = query.where(func.instr(func.lower(r.namespace + "/" + r.name), search.lower()) > 0)
        key = {"createdAt": r.created_at, "id": r.namespace + "/" + r.name}.get(sort, c.created_at)
        query = query.order_by(key.desc() if descending else key.asc(), r.id).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with storage.reading(self.engine) as conn:
            rows = conn.execute(query).all()
        return [(_repo(row), row.commit_oid, row.head_date) for row in rows]

    # -- revisions -------------------------------------------------------------------------------

    def resolve(self, conn: Connection, repo: Repo, revision: str) -> str:
        """The commit oid a branch, tag, ``refs/pr/N`` or (prefix of a) commit sha points at."""
        name = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        oid = conn.execute(
            select(storage.refs.c.commit_oid).where(storage.refs.c.repo_id == repo.pk, storage.refs.c.name == name)
        ).scalar()
        if oid:
            return oid
        if _SHA_PREFIX.match(revision):
            c = storage.commits.c
            found = (
                conn.execute(
                    select(c.oid).where(c.repo_id == repo.pk, func.substr(c.oid, 1, len(revision)) == revision).limit(2)
                )
                .scalars()
                .all()
            )
            if len(found) == 1:
                return found[0]
        raise revision_not_found(repo.repo_id, revision)

    def refs(self, repo: Repo) -> list[Row[Any]]:
        with storage.reading(self.engine) as conn:
            return list(
                conn.execute(
                    select(storage.refs).where(storage.refs.c.repo_id == repo.pk).order_by(storage.refs.c.name)
                ).all()
            )

    def create_ref(self, repo: Repo, name: str, kind: str, starting_point: str | None) -> str:
        """Create a branch or tag at ``starting_point`` (default: main); 409 if the name is taken."""
        validate_ref_name(name, kind)
        with storage.writing(self.engine) as conn:
            oid = self.resolve(conn, repo, starting_point or DEFAULT_BRANCH)
            taken = conn.execute(
                select(storage.refs.c.kind).where(storage.refs.c.repo_id == repo.pk, storage.refs.c.name == name)
            ).scalar()
            if taken:
                raise HubHTTPError(409, f"Reference already exists: {name} ({taken})", code="Conflict")
            conn.execute(insert(storage.refs).values(repo_id=repo.pk, name=name, kind=kind, commit_oid=oid))
        return oid

    def delete_ref(self, repo: Repo, name: str, kind: str) -> None:
        if kind == "branch" and name == DEFAULT_BRANCH:
            raise HubHTTPError(403, "Cannot delete the default branch 'main'", code="Forbidden")
        with storage.writing(self.engine) as conn:
            deleted = conn.execute(
                delete(storage.refs).where(
                    storage.refs.c.repo_id == repo.pk, storage.refs.c.name == name, storage.refs.c.kind == kind
                )
            ).rowcount
        if not deleted:
            raise revision_not_found(repo.repo_id, name)

    def commits(self, repo: Repo, revision: str) -> list[Row[Any]]:
        """The history of ``revision``, newest first."""
        with storage.reading(self.engine) as conn:
            head = self.resolve(conn, repo, revision)
            rows = conn.execute(select(storage.commits).where(storage.commits.c.repo_id == repo.pk)).all()
        by_oid = {row.oid: row for row in rows}
        history, oid = [], head
        while oid and oid in by_oid:
            history.append(by_oid[oid])
            oid = by_oid[oid].parent_oid
        return history

    def commit(self, conn: Connection, repo: Repo, oid: str) -> Row[Any]:
        return conn.execute(
            select(storage.commits).where(storage.commits.c.repo_id == repo.pk, storage.commits.c.oid == oid)
        ).one()

    # -- snapshots -------------------------------------------------------------------------------

    def entries(
        self,
        conn: Connection,
        repo: Repo,
        commit: str,
        *,
        under: str = "",
        recursive: bool = False,
        paths: Sequence[str] | None = None,
        kind: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[Row[Any]]:
        """Entries of a commit: children of ``under`` (all descendants if ``recursive``), or ``paths``."""
        e = storage.entries.c
        query = select(storage.entries).where(e.repo_id == repo.pk, e.commit_oid == commit)
        if paths is not None:
            query = query.where(e.path.in_(list(paths)))
        elif not recursive:
            query = query.where(e.parent_path == under)
        elif under:
            query = query.where(func.substr(e.path, 1, len(under) + 1) == under + "/")
        if kind:
            query = query.where(e.kind == kind)
        query = query.order_by(e.path).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        return list(conn.execute(query).all())

    def entry(self, conn: Connection, repo: Repo, commit: str, path: str) -> Row[Any] | None:
        found = self.entries(conn, repo, commit, paths=[path])
        return found[0] if found else None

    def last_commits(self, conn: Connection, repo: Repo, oids: Iterable[str]) -> dict[str, Row[Any]]:
        c = storage.commits.c
        wanted = sorted(set(oids))
        rows = conn.execute(select(storage.commits).where(c.repo_id == repo.pk, c.oid.in_(wanted))).all()
        return {row.oid: row for row in rows}

    # -- commits ---------------------------------------------------------------------------------

    def _lock(self, repo: Repo, branch: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault((repo.pk, branch), threading.Lock())

    def apply_commit(
        self,
        repo: Repo,
        revision: str,
        operations: Sequence[Operation],
        *,
        author: str,
        title: str,
        description: str = "",
        parent_commit: str | None = None,
        create_pr: bool = False,
    ) -> tuple[str, int | None]:
        """Apply ``operations`` on top of branch ``revision`` and move the branch.

        Returns:
            ``(commit_oid, pull_request_number or None)``.

        Raises:
            HubHTTPError: 404 unknown revision or deleted entry, 412 ``parent_commit`` is not the
                head, 400 unknown LFS object or path conflict. Nothing is written on error.
        """
        lock_name = "refs/pr/*" if create_pr else revision
        with self._lock(repo, lock_name), storage.writing(self.engine) as conn:
            ref = conn.execute(
                select(storage.refs).where(storage.refs.c.repo_id == repo.pk, storage.refs.c.name == revision)
            ).first()
            if ref is None:
                self.resolve(conn, repo, revision)  # 404 for unknown revisions
                raise HubHTTPError(400, f"Cannot commit to {revision!r}: not a branch")
            head = ref.commit_oid
            if parent_commit and not (len(parent_commit) >= 7 and head.startswith(parent_commit)):
                raise HubHTTPError(412, "A commit has happened since. Please refresh and try again.")
            branch = ref.name
            pr_number = None
            if create_pr:
                pr_number = self._next_pr_number(conn, repo)
                branch = f"refs/pr/{pr_number}"
                conn.execute(insert(storage.refs).values(repo_id=repo.pk, name=branch, kind="pr", commit_oid=head))
            parent_rows = {row.path: row for row in self.entries(conn, repo, head, recursive=True)}
            oid = self._write_commit(conn, repo, head, parent_rows, operations, author, title, description)
            conn.execute(
                update(storage.refs)
                .where(storage.refs.c.repo_id == repo.pk, storage.refs.c.name == branch)
                .values(commit_oid=oid)
            )
        return oid, pr_number

    def _next_pr_number(self, conn: Connection, repo: Repo) -> int:
        """One more than the highest ``refs/pr/N`` of any kind (a ref of that name may predate this rule)."""
        names = conn.execute(
            select(storage.refs.c.name).where(
                storage.refs.c.repo_id == repo.pk, storage.refs.c.name.like("refs/pr/%")
            )
        ).scalars()
        numbers = [int(m.group(1)) for n in names if (m := _PR_REF.fullmatch(n))]
        return max(numbers, default=0) + 1

    def _write_commit(
        self,
        conn: Connection,
        repo: Repo,
        parent: str | None,
        parent_rows: dict[str, Row[Any]],
        operations: Sequence[Operation],
        author: str,
        title: str,
        description: str,
    ) -> str:
        files: dict[str, dict[str, Any]] = {
            path: dict(row._mapping) for path, row in parent_rows.items() if row.kind == "file"
        }
        changed: set[str] = set()
        for op in operations:
            if isinstance(op, AddFile):
                files[op.path] = {"size": op.size, "oid": op.oid, "sha256": op.sha256, "lfs": op.lfs}
                changed.add(op.path)
            elif isinstance(op, DeleteFile):
                if files.pop(op.path, None) is None:
                    raise entry_not_found(op.path, parent) from None
            else:
                prefix = op.path + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise entry_not_found(op.path, parent)
                for path in doomed:
                    del files[path]
        for path in changed:
            ancestor = _parent(path)
            while ancestor:
                if ancestor in files:
                    raise HubHTTPError(400, f"Path conflict: {ancestor!r} is a file, cannot hold {path!r}")
                ancestor = _parent(ancestor)
        dirs = gitobjects.directory_oids({path: meta["oid"] for path, meta in files.items()})
        conflicts = sorted(set(files) & set(dirs))
        if conflicts:
            raise HubHTTPError(400, f"Path conflict: {conflicts[0]!r} is both a file and a folder")
        now = time.time()
        oid = gitobjects.commit_oid(
            tree=dirs[""], parent=parent, author=author, timestamp=int(now), title=title, description=description
        )
        if parent and oid == parent:  # same second, same tree, same message: keep oids unique
            now += 1
            oid = gitobjects.commit_oid(
                tree=dirs[""], parent=parent, author=author, timestamp=int(now), title=title, description=description
            )
        conn.execute(
            insert(storage.commits).values(
                repo_id=repo.pk,
                oid=oid,
                parent_oid=parent,
                tree_oid=dirs[""],
                author=author,
                title=title,
                message=description,
                created_at=now,
            )  # fmt: skip
        )
        rows = []
        for path, meta in files.items():
            old = parent_rows.get(path)
            last = old.last_commit_oid if old is not None and path not in changed and old.oid == meta["oid"] else oid
            rows.append(
                dict(
                    path=path,
                    parent_path=_parent(path),
                    kind="file",
                    size=meta["size"],
                    oid=meta["oid"],
                    sha256=meta["sha256"],
                    lfs=bool(meta["lfs"]),
                    last_commit_oid=last,
                )  # fmt: skip
            )
        for path, tree in dirs.items():
            if not path:
                continue
            old = parent_rows.get(path)
            last = old.last_commit_oid if old is not None and old.oid == tree else oid
            rows.append(
                dict(
                    path=path,
                    parent_path=_parent(path),
                    kind="directory",
                    size=0,
                    oid=tree,
                    sha256=None,
                    lfs=False,
                    last_commit_oid=last,
                )  # fmt: skip
            )
        if rows:
            conn.execute(insert(storage.entries), [dict(r, repo_id=repo.pk, commit_oid=oid) for r in rows])
        return oid


def _repo(row: Row[Any]) -> Repo:
    return Repo(row.id, row.type, row.namespace, row.name, bool(row.private), row.owner, row.created_at)
