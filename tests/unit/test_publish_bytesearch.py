"""The push token's byte search: the C library's memmem must answer exactly as bytearray.find."""

from __future__ import annotations

import os
import random

import pytest

from hubferry.hub import bytesearch, manifest, secret_scan
from hubferry.hub.selection import select

TOKEN = b"hf_" + b"QxZ7mW2pLk9vRt4yNc8bHs3dJf6gAe1uKo5"


def test_memmem_is_used_on_this_platform():
    # The development and CI machines run glibc: the fast path must not silently fall back.
    assert bytesearch.fast()


@pytest.mark.parametrize("at", [0, 1, 4095, 500_000, (1 << 20) - len(TOKEN)])
def test_finds_the_needle_where_bytearray_find_does(at):
    data = bytearray(os.urandom(1 << 20))
    data[at : at + len(TOKEN)] = TOKEN
    assert bytesearch.find(data, TOKEN, len(data)) == data.find(TOKEN) == at


def test_respects_the_end_of_the_filled_part_of_the_buffer():
    data = bytearray(os.urandom(64 * 1024))
    data[-len(TOKEN) :] = TOKEN
    filled = len(data) - 1  # the token's last byte lies beyond what the last read filled
    assert bytesearch.find(data, TOKEN, filled) == -1
    assert bytesearch.find(data, TOKEN, len(data)) == len(data) - len(TOKEN)
    assert bytesearch.find(data, TOKEN, len(data) + 100) == len(data) - len(TOKEN)  # clamped, never past the buffer
    assert bytesearch.find(data, TOKEN, -5) == -1


def test_agrees_with_bytearray_find_on_random_cases():
    rng = random.Random(7)
    for _ in range(200):
        size = rng.choice([0, 10, 4095, 4096, 5000, 70_000])
        data = bytearray(rng.randbytes(size))
        needle = rng.randbytes(rng.randint(1, 40)) if rng.random() < 0.5 else TOKEN
        if size > len(needle) and rng.random() < 0.7:
            at = rng.randrange(size - len(needle))
            data[at : at + len(needle)] = needle
        end = rng.randint(0, size)
        assert bytesearch.find(data, needle, end) == data.find(needle, 0, end)


def test_the_buffer_stays_resizable_after_a_search():
    data = bytearray(os.urandom(8192))
    bytesearch.find(data, TOKEN, len(data))
    data.extend(b"more")  # would raise BufferError if the ctypes view had leaked an export


def test_hashing_finds_the_token_in_a_large_binary_at_any_offset(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    content = bytearray(os.urandom(3 * 1024 * 1024 + 17))
    for at in (5, 1024 * 1024 - 10, 2 * 1024 * 1024 + 333):  # inside a read, across a border, inside another
        content[at : at + len(TOKEN)] = TOKEN
    (folder / "weights.bin").write_bytes(bytes(content))
    _files, found = manifest.hash_all(select(folder), git_sha1_limit=0, scan=[TOKEN.decode()])
    assert [(f.kind, f.offset) for f in found] == [(secret_scan.PUSH_TOKEN, 5)]  # one finding per value
