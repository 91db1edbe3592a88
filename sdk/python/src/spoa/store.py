"""The shared store as a protocol, so a guest's logic runs against the
agent's store (`HostStore`) in the guest and against
`spoa.testing.MemoryStore` in plain CPython tests."""

import re
from typing import Optional

try:
    from typing import Protocol
except ImportError:  # Python < 3.8
    Protocol = object  # type: ignore

__all__ = ["Store", "StoreError", "parse_counter"]


class StoreError(Exception):
    """A store call failed (the store is down, out of time, a bucket not
    granted, a value that is not a counter); the guest decides what to
    answer."""


class Store(Protocol):
    def get(self, key: str) -> Optional[bytes]: ...
    def set(self, key: str, value: bytes) -> None: ...
    def set_with_ttl(self, key: str, value: bytes, ttl_ms: int) -> None: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def increment_within(self, key: str, delta: int, window_ms: int) -> int:
        """Adds `delta` to the counter at `key` and returns it; a new counter
        expires `window_ms` from now (a fixed window)."""
        ...
    def expires_in(self, key: str) -> Optional[int]: ...


_COUNTER = re.compile(rb"0|[1-9][0-9]*")


def parse_counter(value: bytes) -> Optional[int]:
    """A counter's value as the store keeps it (canonical decimal text, at
    most 2^63 - 1), or None for anything else."""
    if not _COUNTER.fullmatch(value):
        return None
    number = int(value)
    return number if number < (1 << 63) else None
