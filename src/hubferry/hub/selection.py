"""Which files a push publishes: exactly the folder's own files, never what a link smuggles in.

A training command can leave symbolic links in its output (``ln -s /etc/shadow shadow.bin``). A
link that resolves outside the folder, or into hubferry's home, is refused and never followed. A
link inside the folder is published as the file it points to only when the caller asks
(``follow_symlinks``). Files are later opened with :func:`open_source`, which walks from the
folder without following any link and checks that the file is still the one selected, so a link
swapped in after selection is not followed either.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hubferry.errors import PermanentError, ValidationError

#: Never published: git internals and huggingface_hub's local cache, as upload_folder does.
ALWAYS_IGNORED = (".git", ".git/*", "*/.git/*", ".cache/huggingface/*", "*/.cache/huggingface/*")
#: What, inside a forbidden root (hubferry's home), a published folder may neither contain nor be inside.
SENSITIVE = ("keys", "secrets.json", "secrets")
#: Problems listed in one refusal.
_SHOWN = 10
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in must not block the open


@dataclass(frozen=True)
class Selected:
    """One file to publish: its path in the repo and where its bytes are, relative to the folder.

    ``source`` differs from ``path_in_repo`` for a followed link (it is the link's target).
    ``identity`` is ``(st_dev, st_ino, st_size, st_mtime_ns)`` at selection.
    """

    path_in_repo: str
    root: Path
    source: str
    identity: tuple[int, int, int, int]

    @property
    def size(self) -> int:
        return self.identity[2]

    @property
    def local_path(self) -> Path:
        return self.root / self.source


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def matches(path: str, patterns: Sequence[str]) -> bool:
    """Whether ``path`` (or a folder above it) matches one of the glob ``patterns``."""
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.rstrip("/") + "/*") for p in patterns)


def check_folder(folder: Path, forbidden_roots: Iterable[Path]) -> None:
    """Refuse a folder inside, or containing, the keys and secrets of a forbidden root."""
    root = folder.resolve()
    for forbidden in forbidden_roots:
        home = Path(forbidden).expanduser().resolve()
        for name in SENSITIVE:
            sensitive = home / name
            if _inside(root, sensitive) or _inside(sensitive, root):
                where = "is inside" if _inside(root, sensitive) else "contains"
                raise ValidationError(
                    f"refusing to publish {folder}: it {where} {sensitive}, where hubferry keeps keys and secrets",
                    path=str(folder), hint="publish the folder that holds only the trained model",
                )


class _Walk:
    def __init__(
        self, folder: Path, include: Sequence[str], exclude: Sequence[str], follow: bool, forbidden: list[Path],
    ) -> None:
        self.folder, self.root = folder, folder.resolve()
        self.include, self.exclude, self.follow, self.forbidden = include, exclude, follow, forbidden
        self.selected: list[Selected] = []
        self.problems: list[tuple[str, str]] = []  # (path in folder, sentence)

    def skipped(self, rel: str, is_dir: bool) -> bool:
        if matches(rel, ALWAYS_IGNORED) or matches(rel, self.exclude):
            return True
        return not is_dir and bool(self.include) and not matches(rel, self.include)

    def target(self, link: Path, rel: str) -> Path | None:
        """Where the link ``rel`` leads, if it may be followed; else records why not."""
        raw = os.readlink(link)
        try:
            target = link.resolve(strict=True)
        except (OSError, RuntimeError):
            self.problems.append((rel, f"{rel} is a broken symbolic link (to {raw})"))
            return None
        home = next((f for f in self.forbidden if _inside(target, f)), None)
        if home is not None:
            self.problems.append((rel, f"{rel} is a symbolic link into hubferry's home {home} (to {target})"))
        elif not _inside(target, self.root):
            self.problems.append((rel, f"{rel} is a symbolic link to {target}, outside {self.folder}"))
        elif not self.follow:
            self.problems.append((
                rel, f"{rel} is a symbolic link (to {raw}): pass --follow-symlinks (follow_symlinks=True) to "
                "publish the file it points to, or remove the link",
            ))
        else:
            return target
        return None

    def walk(self, real_dir: Path, rel_dir: str, ancestors: frozenset[tuple[int, int]]) -> None:
        with os.scandir(real_dir) as entries:
            ordered = sorted(entries, key=lambda e: e.name)
        for entry in ordered:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            path = Path(entry.path)
            if entry.is_symlink():
                try:
                    to_dir = entry.is_dir(follow_symlinks=True)
                except OSError:
                    to_dir = False
                if self.skipped(rel, is_dir=to_dir):
                    continue  # excluded: it would not be published, whatever it points to
                target = self.target(path, rel)
                if target is None:
                    continue
                st = target.stat()
                if stat.S_ISREG(st.st_mode):
                    self.add(rel, target, st)
                elif not stat.S_ISDIR(st.st_mode):
                    self.problems.append((rel, f"{rel} is a link to something that is not a regular file"))
                elif (st.st_dev, st.st_ino) in ancestors:
                    self.problems.append((rel, f"{rel} is a symbolic link to a folder above it (a loop)"))
                else:
                    self.walk(target, rel, ancestors | {(st.st_dev, st.st_ino)})
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                if not self.skipped(rel, is_dir=True):
                    self.walk(path, rel, ancestors | {(st.st_dev, st.st_ino)})
            elif self.skipped(rel, is_dir=False):
                continue
            elif stat.S_ISREG(st.st_mode):
                self.add(rel, path, st)
            else:
                self.problems.append((rel, f"{rel} is not a regular file (a socket, FIFO or device)"))

    def add(self, rel: str, real: Path, st: os.stat_result) -> None:
        # The Hub (and the built-in registry) store names in NFC: a macOS (NFD) name is published as NFC,
        # and two local names that are one name in NFC cannot both be published.
        name = unicodedata.normalize("NFC", rel)
        if any(item.path_in_repo == name for item in self.selected):
            self.problems.append((rel, f"{rel} and another file have the same name in Unicode NFC form"))
            return
        source = real.relative_to(self.root).as_posix()
        self.selected.append(Selected(name, self.root, source, _identity(st)))


def select(
    folder: str | os.PathLike[str],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    *,
    follow_symlinks: bool = False,
    forbidden_roots: Iterable[str | os.PathLike[str]] = (),
) -> list[Selected]:
    """The files under ``folder`` to publish, sorted by path in the repo.

    Args:
        include, exclude: glob patterns on paths relative to ``folder``.
        follow_symlinks: publish links that resolve inside ``folder`` as the files they point to.
        forbidden_roots: folders never published from (hubferry's home): links into them are
            refused, and so is a folder inside or containing their keys and secrets.

    Raises:
        ValidationError: naming every link or special file that cannot be published, and why.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValidationError(
            f"{folder} is not a folder", path=str(folder), hint="pass the folder that holds the trained model",
        )
    forbidden = [Path(f).expanduser().resolve() for f in forbidden_roots]
    check_folder(folder, forbidden)
    walk = _Walk(folder, include, exclude, follow_symlinks, forbidden)
    root_stat = walk.root.stat()
    walk.walk(walk.root, "", frozenset({(root_stat.st_dev, root_stat.st_ino)}))
    if walk.problems:
        shown = "; ".join(sentence for _, sentence in walk.problems[:_SHOWN])
        more = f"; and {len(walk.problems) - _SHOWN} more" if len(walk.problems) > _SHOWN else ""
        outside = any("outside" in s or "home" in s for _, s in walk.problems)
        raise ValidationError(
            f"refusing to publish {folder}: {shown}{more}", path=walk.problems[0][0],
            hint="links out of the folder are never followed: copy what should be published into the folder"
            if outside else "remove these entries, exclude them with --exclude, or pass --follow-symlinks",
        )
    return sorted(walk.selected, key=lambda s: s.path_in_repo)


def open_source(item: Selected) -> int:
    """Open ``item`` for reading without following any link, and check it is the file selected.

    Every path component is opened relative to its parent with ``O_NOFOLLOW``, so a folder or a
    file swapped for a link after selection is refused, not followed.

    Returns:
        A file descriptor (the caller closes it).

    Raises:
        PermanentError: the file is gone, became a link, or is another file than the one selected.
    """
    parts = PurePosixPath(item.source).parts
    flags = os.O_RDONLY | _O_CLOEXEC
    try:
        fd = os.open(item.root, flags | _O_DIRECTORY)
        try:
            for part in parts[:-1]:
                child = os.open(part, flags | _O_DIRECTORY | _O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
            leaf = os.open(parts[-1], flags | _O_NOFOLLOW | _O_NONBLOCK, dir_fd=fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise PermanentError(
            f"cannot open {item.local_path} without following links: {exc.strerror} (it was moved, removed or "
            "replaced by a symbolic link after it was selected)", category="file_error", path=str(item.local_path),
            hint="wait until nothing writes to the folder, then push again",
        ) from None
    st = os.fstat(leaf)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != item.identity[:2]:
        os.close(leaf)
        raise PermanentError(
            f"{item.local_path} was replaced after it was selected", category="file_error",
            path=str(item.local_path), hint="wait until nothing writes to the folder, then push again",
        )
    return leaf


def still_selected(item: Selected) -> None:
    """Check, just before a path is handed to code that opens it itself (hf_xet), that it is still
    the regular file selected and not a link; a narrow window remains, which :func:`open_source` closes."""
    try:
        st = os.lstat(item.local_path)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode) or _identity(st) != item.identity:
        raise PermanentError(
            f"{item.local_path} was replaced after it was selected", category="file_error",
            path=str(item.local_path), hint="wait until nothing writes to the folder, then push again",
        )
