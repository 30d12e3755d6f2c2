"""Refuse to publish files that contain values looking like credentials.

Scanning is streaming: :class:`FileScanner` is fed the bytes of one file as the manifest hashes
them (one read pass), so any size is scanned, with an overlap across chunk borders. What is
scanned:

- every file, binaries included, for the push token's own value (a plain byte search);
- text files (known text names, dotenv variants such as ``.env.local``/``prod.env``/``.envrc``,
  files without extension, notebooks, anything that sniffs as UTF-8 or UTF-16 text) for token
  patterns, after decoding JSON string escapes (``\\u0068f_...``);
- the JSON header of ``.safetensors`` files (``__metadata__`` strings);
- gzip files (``.json.gz`` ...), decompressed as a stream up to a bounded ratio.

Out of scope: base64-encoded or split tokens, and archives (zip, tar) other than gzip.
"""

from __future__ import annotations

import codecs
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hubferry.errors import ValidationError
from hubferry.hub import bytesearch

#: Names scanned as text whatever their first bytes look like.
TEXT_SUFFIXES = (
    ".json", ".jsonl", ".yaml", ".yml", ".md", ".txt", ".toml", ".cfg", ".ini", ".conf", ".env", ".envrc",
    ".py", ".sh", ".bash", ".zsh", ".csv", ".tsv", ".log", ".ipynb", ".netrc", ".properties", ".xml", ".html",
    ".js", ".ts", ".sql", ".rst", ".bat", ".ps1", ".r", ".tex",
)  # fmt: skip
#: Binary formats: only the push token (and a safetensors header) is looked for in them.
BINARY_SUFFIXES = (
    ".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gguf", ".h5", ".joblib", ".mlmodel", ".model",
    ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb", ".pickle", ".pkl", ".pt", ".pth", ".rar",
    ".safetensors", ".tar", ".tflite", ".tgz", ".wasm", ".xz", ".zip", ".zst", ".png", ".jpg", ".jpeg", ".webp",
)  # fmt: skip
PATTERNS: dict[str, re.Pattern[str]] = {
    # No word boundaries: tokens glued to other text (key_hf_..., hf_...\x00) must match too.
    "Hugging Face token": re.compile(r"hf_[A-Za-z0-9]{30,}"),
    "Replicate token": re.compile(r"r8_[A-Za-z0-9]{30,}"),
    "RunPod API key": re.compile(r"rpa_[A-Za-z0-9]{30,}"),
    "AWS access key id": re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),
    "AWS secret access key": re.compile(
        r"(?i)aws_?secret_?(?:access_?)?key[\"'\s]*[:=][\"'\s]*[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])"
    ),
    # 40 hex digits are only a W&B key next to a wandb key name (WANDB_API_KEY=, wandb.login(key=...)).
    "Weights & Biases API key": re.compile(r"(?i)wandb[\w.(-]{0,30}?[\"'\s]*[:=][\"'\s]*[0-9a-f]{40}(?![0-9a-f])"),
    "Weights & Biases API key (netrc)": re.compile(
        r"(?i)machine\s+api\.wandb\.ai\s+login\s+\S+\s+password\s+[0-9a-f]{40}(?![0-9a-f])"
    ),
}
PUSH_TOKEN = "the token used for this push"
#: Characters kept from one text window to the next, so a token across a chunk border is seen.
OVERLAP = 512
#: Bytes looked at to decide whether a file of unknown type is text.
SNIFF_BYTES = 8192
#: Decompression bound: at most this many times the compressed size (and at least FLOOR) is scanned.
GZIP_MAX_RATIO = 200
GZIP_FLOOR = 64 * 1024 * 1024
#: The safetensors format caps its JSON header at 100 MB.
SAFETENSORS_MAX_HEADER = 100_000_000
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|[\"\\/bfnrt])")
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": " ", "f": " ", "n": " ", "r": " ", "t": " "}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int  #: 1-based line in the (decoded) text; 0 when found in binary content
    kind: str
    excerpt: str
    offset: int | None = None  #: byte offset, for binary content

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}" if self.line else f"{self.path} (byte {self.offset})"


def _mask(value: str) -> str:
    return value[:4] + "…" + "*" * 6


def _unescape(text: str) -> str:
    """JSON string escapes decoded (``\\u0068`` -> ``h``); escaped line breaks become spaces."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] == "u":
            char = chr(int(code[1:], 16))
            return " " if char in "\r\n" else char
        return _SIMPLE[code]

    return _ESCAPE.sub(one, text)


class _Report:
    """Findings of one file, each (kind, value) once however many decoders see it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.findings: list[Finding] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, kind: str, value: str, line: int = 0, offset: int | None = None) -> None:
        if (kind, value) not in self._seen:
            self._seen.add((kind, value))
            self.findings.append(Finding(self.path, line, kind, _mask(value), offset))

    def unscannable(self, why: str) -> None:
        """Content that could not be scanned is refused like a secret: it may hide one."""
        if ("unscannable", why) not in self._seen:
            self._seen.add(("unscannable", why))
            self.findings.append(Finding(self.path, 0, f"content that cannot be scanned ({why})", "not scanned", 0))


class _TextScanner:
    """Token patterns and literals in a stream of text, with an overlap across feeds."""

    def __init__(self, report: _Report, literals: Sequence[str]) -> None:
        self.report, self.literals = report, literals
        self.carry = ""
        self.line = 1  #: line number at the start of ``carry``

    def feed(self, text: str, *, final: bool = False) -> None:
        if not text and not final:
            return
        window = self.carry + text
        variants = [window, _unescape(window)] if "\\" in window else [window]
        for variant in variants:
            for kind, pattern in PATTERNS.items():
                for match in pattern.finditer(variant):
                    if match.end() == len(variant) and not final:
                        continue  # may go on in the next feed: the overlap brings it back whole
                    self.report.add(kind, match.group(0), self.line + variant.count("\n", 0, match.start()))
            for literal in self.literals:
                if (at := variant.find(literal)) >= 0:
                    self.report.add(PUSH_TOKEN, literal, self.line + variant.count("\n", 0, at))
        cut = max(0, len(window) - OVERLAP)
        self.line += window.count("\n", 0, cut)
        self.carry = window[cut:]


class _LiteralSearch:
    """The push token's bytes anywhere in a byte stream, across chunk borders."""

    def __init__(self, report: _Report, literals: Sequence[str]) -> None:
        self.report = report
        self.literals = [(s, s.encode()) for s in literals]
        self.keep = max((len(b) for _, b in self.literals), default=1) - 1
        self.tail = b""
        self.position = 0  #: stream offset of the byte after ``tail``

    def feed(self, data: bytes | bytearray, n: int) -> None:
        for text, literal in self.literals:
            at = bytesearch.find(data, literal, n)
            if at >= 0:
                self.report.add(PUSH_TOKEN, text, offset=self.position + at)
            elif self.tail:
                border = self.tail + bytes(data[: min(n, len(literal) - 1)])
                if (at := border.find(literal)) >= 0:
                    self.report.add(PUSH_TOKEN, text, offset=self.position - len(self.tail) + at)
        if self.keep:
            self.tail = (self.tail + bytes(data[max(0, n - self.keep) : n]))[-self.keep :]
        self.position += n


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1].lower()


def _is_text_name(name: str) -> bool:
    return (
        name.endswith(TEXT_SUFFIXES) or name.startswith(".env") or name.endswith(".env") or "." not in name.lstrip(".")
    )


def _sniff_encoding(head: bytes) -> str | None:
    """The text encoding of a file starting with ``head``, or None for binary content."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if b"\0" not in head:
        return "utf-8"
    pairs = len(head) // 2
    if pairs >= 8:
        even, odd = head[0 : pairs * 2 : 2].count(0), head[1 : pairs * 2 : 2].count(0)
        if odd > 0.4 * pairs and even < 0.05 * pairs:
            return "utf-16-le"
        if even > 0.4 * pairs and odd < 0.05 * pairs:
            return "utf-16-be"
    return None


class FileScanner:
    """Scans one file's bytes as they are read; :meth:`finish` returns the findings.

    Args:
        path: the file's path in the repo (names the findings, and hints at the format).
        literals: exact secrets to find anywhere, binaries included (the push token).
    """

    def __init__(self, path: str, literals: Sequence[str] = (), *, report: _Report | None = None) -> None:
        self.path = path
        self.literals = [s for s in literals if s]
        self.report = report or _Report(path)
        self._raw = _LiteralSearch(self.report, self.literals) if self.literals else None
        name = _name(path)
        self._head = bytearray()
        self._sink: _Sink | None = None
        self._known_text = _is_text_name(name)
        self._binary_name = name.endswith(BINARY_SUFFIXES)
        self._gzip_name = name.endswith(".gz")
        self._safetensors_name = name.endswith(".safetensors")

    def feed(self, data: bytes | bytearray, n: int | None = None) -> None:
        n = len(data) if n is None else n
        if n == 0:
            return
        if self._raw is not None:
            self._raw.feed(data, n)
        if self._sink is None:
            self._head += data[:n]
            if len(self._head) < SNIFF_BYTES:
                return
            self._start()
            return
        if self._sink.active:
            self._sink.feed(bytes(data[:n]))

    def _start(self) -> None:
        head, self._head = bytes(self._head), bytearray()
        self._sink = self._choose(head)
        self._sink.feed(head)

    def _choose(self, head: bytes) -> _Sink:
        if self._gzip_name or head.startswith(b"\x1f\x8b"):
            return _Gzip(self.path[:-3] if self._gzip_name else self.path, self.literals, self.report)
        if self._safetensors_name or _looks_like_safetensors(head):
            return _Safetensors(self.report, self.literals)
        if self._binary_name:
            return _Sink()
        encoding = _sniff_encoding(head) or ("utf-8" if self._known_text else None)
        return _Sink() if encoding is None else _Text(self.report, self.literals, encoding)

    def finish(self) -> list[Finding]:
        if self._sink is None:
            self._start()
        assert self._sink is not None
        self._sink.finish()
        return self.report.findings


class _Sink:
    """Binary content: nothing beyond the literal search."""

    active = False  #: whether the content after the sniffed head matters

    def feed(self, data: bytes) -> None:
        return None

    def finish(self) -> None:
        return None


class _Text(_Sink):
    active = True

    def __init__(self, report: _Report, literals: Sequence[str], encoding: str) -> None:
        self.decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self.text = _TextScanner(report, literals)

    def feed(self, data: bytes) -> None:
        self.text.feed(self.decoder.decode(data))

    def finish(self) -> None:
        self.text.feed(self.decoder.decode(b"", final=True), final=True)


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= SAFETENSORS_MAX_HEADER and head[8:9] == b"{"


class _Safetensors(_Sink):
    """The 8-byte little-endian header length, then that many bytes of JSON: scanned as text with
    JSON escapes decoded; the tensor data after it is binary."""

    active = True

    def __init__(self, report: _Report, literals: Sequence[str]) -> None:
        self.prefix = b""
        self.left: int | None = None
        self.text = _Text(report, literals, "utf-8")

    def feed(self, data: bytes) -> None:
        if self.left is None:
            need = 8 - len(self.prefix)
            self.prefix, data = self.prefix + data[:need], data[need:]
            if len(self.prefix) < 8:
                return
            (length,) = struct.unpack("<Q", self.prefix)
            self.left = length if length <= SAFETENSORS_MAX_HEADER else 0
        if self.left and data:
            part = data[: self.left]
            self.left -= len(part)
            self.text.feed(part)
        if self.left == 0:
            self.active = False

    def finish(self) -> None:
        self.text.finish()


class _Gzip(_Sink):
    """Decompress as a stream into a scanner of the inner file, within a bounded expansion."""

    active = True

    def __init__(self, inner_path: str, literals: Sequence[str], report: _Report) -> None:
        self.report = report
        self.inner = FileScanner(inner_path, literals, report=report)
        self.z = zlib.decompressobj(wbits=31)
        self.read = 0
        self.written = 0
        self.stopped = False

    def feed(self, data: bytes) -> None:
        self.read += len(data)
        while data and not self.stopped:
            try:
                out = self.z.decompress(data, 1024 * 1024)
            except zlib.error:
                self.stopped, self.active = True, False  # not gzip after all: the literal search saw its bytes
                return
            self.written += len(out)
            if self.written > max(GZIP_FLOOR, GZIP_MAX_RATIO * self.read):
                self.report.unscannable(f"it decompresses to over {GZIP_MAX_RATIO}x its size")
                self.stopped, self.active = True, False
                return
            self.inner.feed(out)
            data = self.z.unconsumed_tail
            if self.z.eof:  # a multi-member gzip: the next member starts in unused_data
                data, self.z = self.z.unused_data + data, zlib.decompressobj(wbits=31)

    def finish(self) -> None:
        self.inner.finish()


def scan_bytes(path: str, data: bytes, literals: Iterable[str] = ()) -> list[Finding]:
    """Findings in one in-memory file (a generated model card, a test)."""
    scanner = FileScanner(path, list(literals))
    scanner.feed(data)
    return scanner.finish()


def scan_text(path: str, text: str, extra: Iterable[str] = ()) -> list[Finding]:
    """Findings in one file's text; ``extra`` are literal secrets (the push token) to look for too."""
    report = _Report(path)
    _TextScanner(report, [s for s in extra if s]).feed(text)
    return report.findings


def refuse(findings: list[Finding]) -> None:
    """Raise a :class:`ValidationError` naming every finding (values masked)."""
    if not findings:
        return
    lines = "; ".join(f"{f.location}: {f.kind} ({f.excerpt})" for f in findings[:20])
    more = f" and {len(findings) - 20} more" if len(findings) > 20 else ""
    raise ValidationError(
        f"refusing to publish: {len(findings)} value(s) look like secrets: {lines}{more}",
        category="validation",
        path=findings[0].path,
        hint="remove the secrets from these files (and revoke them), exclude the files with --exclude, "
        "or pass --allow-secrets if they are not real",
    )
