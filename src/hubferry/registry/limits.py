"""Bounds on what a request may make the registry read, parse and build.

Bodies are read up to a size limit (``Content-Length`` is checked first, so an oversized body is
refused before it is read), JSON is checked for nesting depth before ``json.loads`` recurses, and
parsing and validation run in a worker thread, never on the event loop.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from itertools import accumulate
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool

from .context import context
from .httperrors import HubHTTPError, describe_errors

#: Deepest JSON nesting accepted; the Hub's request bodies are at most 4 levels deep.
MAX_JSON_DEPTH = 32
#: Largest HTML form body (sign-in, token forms).
MAX_FORM_BYTES = 64 * 1024

Model = TypeVar("Model", bound=BaseModel)

# A JSON string (escapes included), so brackets inside strings do not count as nesting.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def too_large(what: str, limit: int) -> HubHTTPError:
    return HubHTTPError(413, f"{what} is larger than the {limit}-byte limit of this registry; send less per request")


def declared_length(request: Request, limit: int, what: str) -> None:
    """Refuse a body whose ``Content-Length`` is already over ``limit``, before reading it."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise HubHTTPError(400, "Content-Length must be a number of bytes")
    if int(declared) > limit:
        raise too_large(what, limit)


async def read_body(request: Request, limit: int, what: str = "The request body") -> bytes:
    """The whole body, or 413 as soon as it passes ``limit`` bytes."""
    declared_length(request, limit, what)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(what, limit)
    return bytes(body)


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in ``raw`` (linear time, no recursion)."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(accumulate(_STEP[b] for b in brackets))


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes, what: str = "request body") -> Any:
    """Decode JSON that is UTF-8, at most :data:`MAX_JSON_DEPTH` deep, and free of NaN/Infinity.

    Raises:
        HubHTTPError: 400 saying what is wrong.
    """
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise HubHTTPError(400, f"The {what} nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise HubHTTPError(400, f"The {what} is not valid JSON: {str(exc)[:200]}") from None


def validate(model: type[Model], value: Any, what: str = "request body") -> Model:
    """``value`` as ``model``; 400 naming the fields that do not fit."""
    try:
        return model.model_validate(value)
    except PydanticValidationError as exc:
        raise HubHTTPError(400, f"Invalid {what}: {describe_errors(exc.errors())}") from None


def json_body(model: type[Model], what: str = "request body") -> Callable[[Request], Awaitable[Model]]:
    """A FastAPI dependency: the body read within ``max_json_bytes``, parsed and validated in a thread."""

    async def dependency(request: Request) -> Model:
        raw = await read_body(request, context(request).settings.max_json_bytes, f"The {what}")
        return await run_in_threadpool(lambda: validate(model, parse_json(raw, what), what))

    return dependency


def optional_json_body(model: type[Model]) -> Callable[[Request], Awaitable[Model]]:
    """Like :func:`json_body`, but an empty body means ``model()`` (all defaults)."""

    async def dependency(request: Request) -> Model:
        raw = await read_body(request, context(request).settings.max_json_bytes)
        if not raw.strip():
            return model()
        return await run_in_threadpool(lambda: validate(model, parse_json(raw)))

    return dependency
