"""Refuse to publish text files that contain values looking like credentials."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from hubferry.errors import ValidationError
from hubferry.hub.manifest import LocalFile

#: Files scanned: configs and documents (weights are binary and never scanned).
TEXT_SUFFIXES = (
    ".json", ".yaml", ".yml", ".md", ".txt", ".toml", ".cfg", ".ini", ".conf", ".env", ".py", ".sh", ".csv", ".log",
)
PATTERNS: dict[str, re.Pattern[str]] = {
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "Replicate token": re.compile(r"\br8_[A-Za-z0-9]{30,}\b"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(
        r"(?i)aws_?secret_?(?:access_?)?key[\"'\s]*[:=][\"'\s]*[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"
    ),
    "Weights & Biases API key": re.compile(r"(?i)wandb[_-]?(?:api[_-]?)?key[\"'\s]*[:=][\"'\s]*[0-9a-f]{40}\b"),
}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str
    excerpt: str


def _mask(value: str) -> str:
    return value[:4] + "…" + "*" * 6


def scan_text(path: str, text: str, extra: Iterable[str] = ()) -> list[Finding]:
    """Findings in one file's text; ``extra`` are literal secrets (the push token) to look for too."""
    findings = []
    literals = [s for s in extra if s]
    for number, line in enumerate(text.splitlines(), start=1):
        for kind, pattern in PATTERNS.items():
            for match in pattern.finditer(line):
                findings.append(Finding(path, number, kind, _mask(match.group(0))))
        for literal in literals:
            if literal in line:
                findings.append(Finding(path, number, "the token used for this push", _mask(literal)))
    return findings


def scan(files: Iterable[LocalFile], *, max_bytes: int, extra: Iterable[str] = ()) -> list[Finding]:
    """Scan the text files among ``files`` (up to ``max_bytes`` each)."""
    extra = list(extra)
    findings: list[Finding] = []
    for f in files:
        if not f.path_in_repo.lower().endswith(TEXT_SUFFIXES) or f.size > max_bytes:
            continue
        data = f.content if f.content is not None else f.local_path.read_bytes()  # type: ignore[union-attr]
        findings.extend(scan_text(f.path_in_repo, data.decode("utf-8", errors="replace"), extra))
    return findings


def refuse(findings: list[Finding]) -> None:
    """Raise a :class:`ValidationError` naming every finding (values masked)."""
    if not findings:
        return
    lines = "; ".join(f"{f.path}:{f.line}: {f.kind} ({f.excerpt})" for f in findings[:20])
    more = f" and {len(findings) - 20} more" if len(findings) > 20 else ""
    raise ValidationError(
        f"refusing to publish: {len(findings)} value(s) look like secrets: {lines}{more}",
        category="validation",
        path=findings[0].path,
        hint="remove the secrets from these files (and revoke them), exclude the files with --exclude, "
        "or pass --allow-secrets if they are not real",
    )
