"""HAProxy's binary header list (`req.hdrs_bin`, `res.hdrs_bin`), as a
WAF-style guest receives it (`args hdrs=req.hdrs_bin`).

Each header is its name then its value, each a length (a SPOP varint) and
that many bytes; the list ends with an empty name and an empty value.
Pure Python: works in the guest and in plain CPython tests.
"""

from typing import List, Optional, Tuple

Header = Tuple[bytes, bytes]


class HeadersError(ValueError):
    """The bytes are not a complete header list."""


def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    if pos >= len(data):
        raise HeadersError("header list truncated")
    value = data[pos]
    pos += 1
    if value < 240:
        return value, pos
    shift = 4
    while True:
        if pos >= len(data):
            raise HeadersError("header list truncated")
        byte = data[pos]
        pos += 1
        value += byte << shift
        if byte < 128:
            break
        shift += 7
        if shift > 4 + 7 * 8:
            raise HeadersError("header list has a bad length")
    if value >= 1 << 64:
        raise HeadersError("header list has a bad length")
    return value, pos


def _field(data: bytes, pos: int) -> Tuple[bytes, int]:
    length, pos = _varint(data, pos)
    if length > len(data) - pos:
        raise HeadersError("header list truncated")
    return data[pos:pos + length], pos + length


def parse(data: bytes) -> List[Header]:
    """The headers of the list `data`, in order, as (name, value) bytes.
    Bytes after the end marker are ignored."""
    data = bytes(data)
    headers: List[Header] = []
    pos = 0
    while True:
        if pos >= len(data):
            raise HeadersError("header list has no end marker")
        name, pos = _field(data, pos)
        value, pos = _field(data, pos)
        if not name and not value:
            return headers
        headers.append((name, value))


def find(headers: List[Header], name: str) -> Optional[bytes]:
    """The value of the first header called `name` (without case), or None."""
    wanted = name.lower().encode()
    return next((value for key, value in headers if key.lower() == wanted), None)
