"""The one validator for file paths inside a repo: every path a request names goes through :func:`repo_path`.

A path is stored and compared in Unicode NFC, so two spellings of one name (``é`` composed or
decomposed) cannot become two files. Refused: absolute paths, ``.``/``..``/empty components, ``.git``
in any case or with trailing dots or spaces (which some filesystems drop), backslashes, control
characters and bidi overrides (which make a name display as another), and over-long names.
"""

from __future__ import annotations

import re
import unicodedata

from .httperrors import HubHTTPError

#: Bytes (UTF-8) in one path component; most filesystems stop at 255.
MAX_COMPONENT_BYTES = 255
#: Bytes (UTF-8) in a whole path.
MAX_PATH_BYTES = 1024
#: Directory levels in a path.
MAX_DEPTH = 64

#: Bidirectional formatting characters (embeddings, overrides, isolates and marks): they make a name
#: display as another (``invoice\u202egpj.exe`` shows as ``invoiceexe.jpg``).
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_FORBIDDEN_CHAR = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\\\{BIDI_CONTROLS}]")


def _refuse(path: str, why: str) -> HubHTTPError:
    shown = path if len(path) <= 200 else path[:200] + "..."
    return HubHTTPError(400, f"Invalid path in repo {shown!r}: {why}", code="InvalidPath")


def repo_path(path: object, *, folder: bool = False) -> str:
    """Check a path inside a repo and return it in NFC.

    Args:
        path: the path as the request sent it.
        folder: the path names a folder, so one trailing ``/`` is allowed (and dropped).

    Raises:
        HubHTTPError: 400 ``InvalidPath`` saying what is wrong with the path.
    """
    if not isinstance(path, str):
        raise _refuse(str(path), "a path must be a string")
    if path.startswith("/"):
        raise _refuse(path, "absolute paths are not allowed; name the file relative to the repo root")
    name = unicodedata.normalize("NFC", path)
    if folder and name.endswith("/"):
        name = name[:-1]
    if not name:
        raise _refuse(path, "the path is empty")
    bad = _FORBIDDEN_CHAR.search(name)
    if bad:
        raise _refuse(path, f"it contains the character U+{ord(bad.group()):04X} (control, bidi or backslash)")
    if len(name.encode()) > MAX_PATH_BYTES:
        raise _refuse(path, f"it is longer than {MAX_PATH_BYTES} bytes")
    parts = name.split("/")
    if len(parts) > MAX_DEPTH:
        raise _refuse(path, f"it is more than {MAX_DEPTH} levels deep")
    for part in parts:
        if part in ("", ".", ".."):
            raise _refuse(path, "empty, '.' and '..' components are not allowed")
        if part.rstrip(". ").lower() == ".git":
            raise _refuse(path, "'.git' is reserved")
        if len(part.encode()) > MAX_COMPONENT_BYTES:
            raise _refuse(path, f"a component is longer than {MAX_COMPONENT_BYTES} bytes")
    return name
