"""Removing metadata from a JPEG without re-encoding it, so a photo that needs no other change keeps
its exact pixels (no second lossy compression) and loses its EXIF, GPS, XMP, ICC, IPTC and comments.

The marker walk keeps what decoding needs (SOF, DQT, DHT, DRI, SOS and the entropy-coded scans, APP0
JFIF and APP14 Adobe, which says how colours are stored) and drops every other APPn segment and COM.
Anything after the end-of-image marker (a second MPO picture, trailing junk) is dropped too.
"""

from __future__ import annotations

_SOI, _EOI, _SOS, _COM, _APP14 = 0xD8, 0xD9, 0xDA, 0xFE, 0xEE


def _dropped(marker: int) -> bool:
    return marker == _COM or (0xE1 <= marker <= 0xEF and marker != _APP14)


def _scan_end(data: bytes, start: int) -> int:
    """Where the entropy-coded data starting at ``start`` ends: the first marker that is not a stuffed
    byte (``FF 00``), a restart marker (``FF D0``-``FF D7``) or fill."""
    at = start
    while True:
        at = data.find(b"\xff", at)
        if at < 0 or at + 1 >= len(data):
            raise ValueError("the image data has no end")
        following = data[at + 1]
        if following == 0xFF:
            at += 1  # fill before a marker
        elif following == 0x00 or 0xD0 <= following <= 0xD7:
            at += 2
        else:
            return at


def strip_metadata(data: bytes) -> bytes:
    """``data`` (a whole JPEG) without metadata segments.

    Raises:
        ValueError: the bytes are not a JPEG this walk understands; re-encode instead.
    """
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    out = bytearray(data[:2])
    at = 2
    while at < len(data):
        if data[at] != 0xFF:
            raise ValueError(f"expected a marker at byte {at}")
        while at < len(data) and data[at] == 0xFF:
            at += 1
        if at >= len(data):
            break
        marker = data[at]
        at += 1
        if marker == _EOI:
            out += b"\xff\xd9"
            return bytes(out)
        if marker in (_SOI, 0x01) or 0xD0 <= marker <= 0xD7:
            raise ValueError(f"unexpected marker {marker:#x} at byte {at - 1}")
        length = int.from_bytes(data[at:at + 2], "big")
        if length < 2 or at + length > len(data):
            raise ValueError(f"segment {marker:#x} at byte {at - 1} runs past the end")
        if not _dropped(marker):
            out += bytes((0xFF, marker)) + data[at:at + length]
        at += length
        if marker == _SOS:
            end = _scan_end(data, at)
            out += data[at:end]
            at = end
    raise ValueError("no end-of-image marker")
