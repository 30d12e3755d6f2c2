"""Captions: cleaned to one line, and given the trigger word exactly once."""

from __future__ import annotations

import pytest

from hubferry.dataset import captions
from hubferry.errors import ValidationError


def test_a_caption_file_becomes_one_clean_line():
    raw = "\ufeffa photo of\r\n  a dog\t on grass\x07\n".encode()
    assert captions.clean(raw) == "a photo of a dog on grass"


@pytest.mark.parametrize(("raw", "problem"), [(b"\xff\xfe\x00bad", "UTF-8"), (b"x" * 20_000, "KiB")])
def test_unreadable_caption_files_say_why(raw, problem):
    with pytest.raises(ValueError, match=problem):
        captions.clean(raw)


@pytest.mark.parametrize(("text", "expected", "inserted"), [
    ("a photo of a dog", "TOK, a photo of a dog", True),
    ("TOK sitting on a bench", "TOK sitting on a bench", False),
    ("a photo of [trigger] on a bench", "a photo of TOK on a bench", True),
    ("TOKEN is not the trigger", "TOK, TOKEN is not the trigger", True),
    ("tok in lower case is another token", "TOK, tok in lower case is another token", True),
])
def test_the_trigger_word_is_added_where_missing(text, expected, inserted):
    assert captions.with_trigger(text, "TOK") == captions.Caption(expected, inserted)


def test_without_a_trigger_word_captions_stay_as_written():
    assert captions.with_trigger("a dog", None) == captions.Caption("a dog")


@pytest.mark.parametrize("word", ["", "   ", "tok\nen", "x" * 65])
def test_unusable_trigger_words_are_refused(word):
    with pytest.raises(ValidationError) as caught:
        captions.check_trigger_word(word)
    assert caught.value.context["field"] == "trigger_word"
    assert caught.value.hint


def test_a_trigger_phrase_is_kept_stripped():
    assert captions.check_trigger_word("  ohwx man ") == "ohwx man"
