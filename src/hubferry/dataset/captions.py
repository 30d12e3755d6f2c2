"""Captions beside images (``photo.jpg`` + ``photo.txt``): read, cleaned, and given the trigger word.

A caption that lacks the trigger word gets it in front (``TOK, a photo of ...``); an ai-toolkit
style ``[trigger]`` placeholder is replaced by it instead. Images without a caption get none invented:
trainers caption those themselves (Replicate's FLUX trainer auto-captions with the trigger word).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from hubferry.errors import ValidationError

#: A caption file larger than this is not a caption.
CAPTION_MAX_BYTES = 16 * 1024
#: Longest trigger word accepted (a token or a short phrase).
TRIGGER_MAX_CHARS = 64

_PLACEHOLDER = "[trigger]"


@dataclass(frozen=True)
class Caption:
    """A caption as it goes into the zip, and whether the trigger word had to be added."""

    text: str
    trigger_inserted: bool = False


def check_trigger_word(word: str | None) -> str | None:
    """The trigger word, stripped, or a refusal when it cannot be used in a caption."""
    if word is None:
        return None
    word = word.strip()
    if not word or len(word) > TRIGGER_MAX_CHARS or any(unicodedata.category(c).startswith("C") for c in word):
        raise ValidationError(
            f"the trigger word {word!r} is empty, too long or holds control characters", field="trigger_word",
            hint=f"use a short, rare token such as TOK or ohwx (at most {TRIGGER_MAX_CHARS} characters)")
    return word


def clean(raw: bytes) -> str:
    """The caption file's text as one line: UTF-8 (a BOM is dropped), control characters removed,
    whitespace collapsed.

    Raises:
        ValueError: the file is too large or not UTF-8; the message says which.
    """
    if len(raw) > CAPTION_MAX_BYTES:
        raise ValueError(f"larger than {CAPTION_MAX_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return " ".join(unicodedata.normalize("NFC", text).split())


def contains_word(text: str, word: str) -> bool:
    """``word`` appears in ``text`` as a whole word (case-sensitive: tokenizers are)."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None


def with_trigger(text: str, trigger_word: str | None) -> Caption:
    """``text`` with the trigger word present exactly where the user asked, or in front."""
    if not trigger_word:
        return Caption(text)
    if _PLACEHOLDER in text:
        return Caption(text.replace(_PLACEHOLDER, trigger_word), trigger_inserted=True)
    if contains_word(text, trigger_word):
        return Caption(text)
    return Caption(f"{trigger_word}, {text}" if text else trigger_word, trigger_inserted=True)
