"""Hub repository names: the Hub's rules, slugs of config names, and collision suffixes."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection

from hubferry.errors import ValidationError

#: The Hub refuses repository names longer than this.
MAX_NAME_LENGTH = 96
#: Used when a config name has no character that survives slugging (e.g. only emoji).
FALLBACK_SLUG = "model"
#: How many suffixes (``-2`` ... ``-N``) to try before giving up on an automatic name.
MAX_SUFFIX = 1000

_ALLOWED = re.compile(r"[A-Za-z0-9._-]+")
_EDGE = "-."

Taken = Callable[[str], bool] | Collection[str]


def repo_name_problem(name: str) -> str | None:
    """Why the Hub would refuse ``name`` as a repository (or namespace) name, or ``None`` if it is fine."""
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is longer than {MAX_NAME_LENGTH} characters"
    if not _ALLOWED.fullmatch(name):
        return "may only contain letters, digits, '-', '_' and '.'"
    if "--" in name or ".." in name:
        return "may not contain '--' or '..'"
    if name[0] in _EDGE or name[-1] in _EDGE:
        return "may not start or end with '-' or '.'"
    if name.lower().endswith(".git"):
        return "may not end with '.git'"
    return None


def is_valid_repo_name(name: str) -> bool:
    """Whether the Hub accepts ``name`` as a repository name."""
    return repo_name_problem(name) is None


def validate_repo_id(repo_id: str, *, field: str = "repo_id") -> str:
    """Check a ``namespace/name`` repository id against the Hub's rules.

    Returns:
        ``repo_id`` unchanged.

    Raises:
        ValidationError: naming ``field`` and the broken rule.
    """
    namespace, sep, name = repo_id.partition("/")
    if not sep or "/" in name:
        raise ValidationError(
            f"{field} must look like 'namespace/name', got {repo_id!r}",
            field=field,
            hint="Use your Hub username or an organisation, a slash, then the repository name.",
        )
    for part, value in (("namespace", namespace), ("name", name)):
        problem = repo_name_problem(value)
        if problem:
            raise ValidationError(
                f"{field} {part} {value!r} {problem}",
                field=field,
                hint="Hub names use letters, digits, '-', '_' and '.', at most 96 characters.",
            )
    return repo_id


def slugify(text: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    """A lowercase Hub-safe repository name derived from free text such as a config name.

    Accents are folded to ASCII, every run of other characters becomes one ``-``, and the
    result never breaks a Hub rule; text with nothing usable gives :data:`FALLBACK_SLUG`.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9._]+", "-", ascii_text.lower())
    slug = re.sub(r"[-.]*-[-.]*", "-", slug)  # a run of separators with a dash in it: one dash
    slug = re.sub(r"\.{2,}", ".", slug)
    slug = _trim(slug[:max_length])
    while slug.endswith(".git"):
        slug = _trim(slug[: -len(".git")])
    return slug or FALLBACK_SLUG[:max_length]


def with_suffix(name: str, n: int) -> str:
    """``name-n``, shortening ``name`` so the result stays within :data:`MAX_NAME_LENGTH`."""
    suffix = f"-{n}"
    return _trim(name[: MAX_NAME_LENGTH - len(suffix)]) + suffix


def auto_repo_id(username: str, config_name: str, taken: Taken = (), *, max_suffix: int = MAX_SUFFIX) -> str:
    """The automatic target repository ``{username}/{slug(config_name)}``, suffixed when taken.

    Args:
        username: the Hub namespace (user or organisation) to publish under.
        config_name: the job's config name; slugged with :func:`slugify`.
        taken: a predicate called with a full repo id, or a collection of taken repo ids
            (matched case-insensitively, as the Hub does).
        max_suffix: the largest suffix tried.

    Returns:
        The first free id among ``user/slug``, ``user/slug-2``, ``user/slug-3`` ...

    Raises:
        ValidationError: ``username`` is not a valid namespace, or every candidate is taken.
    """
    problem = repo_name_problem(username)
    if problem:
        raise ValidationError(f"Hub username {username!r} {problem}", field="hf_username")
    is_taken = _as_predicate(taken)
    base = slugify(config_name)
    candidates = (base, *(with_suffix(base, n) for n in range(2, max_suffix + 1)))
    for name in candidates:
        repo_id = f"{username}/{name}"
        if not is_taken(repo_id):
            return repo_id
    raise ValidationError(
        f"every name from {username}/{base} to {username}/{candidates[-1]} is taken",
        field="repo_id",
        hint="Choose the target repository explicitly.",
    )


def _trim(name: str) -> str:
    return name.strip(_EDGE)


def _as_predicate(taken: Taken) -> Callable[[str], bool]:
    if callable(taken):
        return taken
    lowered = {repo_id.lower() for repo_id in taken}
    return lambda repo_id: repo_id.lower() in lowered
