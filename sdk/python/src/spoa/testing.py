"""A store double for unit tests of a guest's logic under plain CPython:
`MemoryStore` has the host's semantics (counters as decimal text, fixed
windows, expiry) on a clock the test moves, and an outage switch.

    store = MemoryStore()
    assert store.increment_within("seen:192.0.2.1", 1, 60_000) == 1
    store.advance(60_000)
    store.set_down(True)   # every call now raises StoreError
"""

from typing import Dict, List, Optional, Tuple

from .store import StoreError, parse_counter

__all__ = ["MemoryStore", "StoreError"]

_MAX_COUNTER = (1 << 63) - 1
# The host's limits, so a test passes only what the agent would accept.
MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1 << 20
MAX_TTL_MS = (1 << 53) - 1


def _check(key: str, value: bytes = b"", ms: Optional[int] = None) -> None:
    if len(key.encode()) > MAX_KEY_BYTES:
        raise StoreError(f"key of {len(key.encode())} bytes is over the limit of {MAX_KEY_BYTES}")
    if len(value) > MAX_VALUE_BYTES:
        raise StoreError(f"value of {len(value)} bytes is over the limit of {MAX_VALUE_BYTES}")
    if ms is not None and not 1 <= ms <= MAX_TTL_MS:
        raise StoreError(f"time to live {ms} ms is out of range 1..={MAX_TTL_MS}")


class MemoryStore:
    """An in-memory `spoa.Store`."""

    def __init__(self) -> None:
        self._entries: Dict[str, Tuple[bytes, Optional[int]]] = {}
        self._now = 0
        self._down = False

    def advance(self, ms: int) -> None:
        """Moves the store's clock on by `ms` milliseconds."""
        self._now += ms

    def set_down(self, down: bool) -> None:
        """While down, every call raises StoreError, as the host's store
        does when it is unreachable."""
        self._down = down

    def keys(self) -> List[str]:
        self._up()
        return sorted(self._entries)

    def _up(self) -> None:
        if self._down:
            raise StoreError("store unavailable")
        self._entries = {k: v for k, v in self._entries.items() if v[1] is None or v[1] > self._now}

    def get(self, key: str) -> Optional[bytes]:
        self._up()
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def set(self, key: str, value: bytes) -> None:
        _check(key, value)
        self._up()
        self._entries[key] = (bytes(value), None)

    def set_with_ttl(self, key: str, value: bytes, ttl_ms: int) -> None:
        _check(key, value, ttl_ms)
        self._up()
        self._entries[key] = (bytes(value), self._now + ttl_ms)

    def delete(self, key: str) -> None:
        self._up()
        self._entries.pop(key, None)

    def exists(self, key: str) -> bool:
        self._up()
        return key in self._entries

    def increment_within(self, key: str, delta: int, window_ms: int) -> int:
        _check(key, b"", window_ms)
        if delta < 0:
            raise StoreError(f"delta {delta} is negative (a u64)")
        self._up()
        value, expiry = self._entries.get(key, (b"0", None))
        current = parse_counter(value)
        if current is None:
            raise StoreError(f"the value at `{key}` is not a counter")
        total = current + delta
        if total > _MAX_COUNTER:
            raise StoreError(f"the counter at `{key}` would overflow")
        self._entries[key] = (str(total).encode(), self._now + window_ms if expiry is None else expiry)
        return total

    def expires_in(self, key: str) -> Optional[int]:
        self._up()
        entry = self._entries.get(key)
        return None if entry is None or entry[1] is None else entry[1] - self._now
