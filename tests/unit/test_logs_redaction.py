"""Secrets never printed: token shapes, named keys and signed URLs are redacted wherever they appear."""

from __future__ import annotations

import pytest

from hubferry.logs import printable, redact

SHAPED = [
    "hf_" + "a1" * 17, "r8_" + "b2" * 16, "rpa_" + "C3" * 16, "hfy_" + "Zz-_" * 8,
]


@pytest.mark.parametrize("token", SHAPED)
def test_token_shapes_are_redacted_even_glued_to_text(token):
    for text in (token, f"key_{token}", f"Authorization: Bearer {token}\n"):
        assert token not in redact(text)


def test_named_keys_and_signed_urls_are_redacted():
    wandb = "0123456789abcdef0123456789abcdef01234567"
    assert wandb not in redact(f"WANDB_API_KEY={wandb}") and wandb not in redact(f"wandb: key {wandb}")
    assert "sig=abc" not in redact("GET https://h/lfs-storage/x?exp=1&sig=abc done")
    assert wandb in redact(f"commit {wandb}")  # a bare hash is not a secret


def test_printable_strips_terminal_escapes():
    hostile = "a\x1b]52;c;ZXZpbA==\x07b\x1b[2Jc\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\ d\x9b31m"
    cleaned = printable(hostile)
    assert "\x1b" not in cleaned and "\x07" not in cleaned and "\x9b" not in cleaned
    assert cleaned.startswith("abc") and "link" in cleaned


def test_huggingface_hub_lines_follow_log_json_and_are_redacted():
    import io
    import json
    import logging

    import structlog

    from hubferry import logs

    saved = structlog.get_config()
    hub = logging.getLogger("huggingface_hub")
    level, formatters = hub.level, [h.formatter for h in hub.handlers]
    buffer = io.StringIO()
    try:
        logs.configure(json=True, verbose=True, stream=io.StringIO())
        streams = [h.setStream(buffer) for h in hub.handlers if isinstance(h, logging.StreamHandler)]
        assert streams, "huggingface_hub has its own handler"
        logging.getLogger("huggingface_hub.utils._http").warning(
            "retrying PUT https://h/lfs-storage/abc?exp=1&sig=SECRETSIG")
        record = json.loads(buffer.getvalue().splitlines()[-1])
        assert record["level"] == "warning" and "SECRETSIG" not in record["event"]
        assert record["logger"] == "huggingface_hub.utils._http"
    finally:
        for handler, formatter in zip(hub.handlers, formatters, strict=True):
            handler.setFormatter(formatter)
            if isinstance(handler, logging.StreamHandler) and handler.stream is buffer:
                handler.setStream(streams[0])
        hub.setLevel(level)
        structlog.configure(**saved)
