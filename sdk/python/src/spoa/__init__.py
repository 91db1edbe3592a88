"""The Python SDK of spoa-host guests (componentize-py).

Reads message arguments by name and type, builds actions, reads the
operator's configuration (wasi:config), wraps the host's randomness, log,
IP tables, shared store and counters, and exports batches. componentize-py
generates `wit_world` from spoa-host's WIT at build time; under plain
CPython (a guest's unit tests) it is missing, and only the pure parts work:
`spoa.headers`, `spoa.testing`, `Store`/`StoreError`.
"""

from __future__ import annotations

import ipaddress
from typing import Any, List, Optional, Union

from .store import Store, StoreError, parse_counter

try:
    from componentize_py_types import Err, Ok  # raise Err("reason") to answer err(reason)
except ImportError:  # plain CPython: the unit tests of a guest's logic

    class Err(Exception):  # type: ignore[no-redef]
        """Raised to answer a message `err(value)`."""

        def __init__(self, value: Any) -> None:
            super().__init__(value)
            self.value = value

    class Ok:  # type: ignore[no-redef]
        def __init__(self, value: Any) -> None:
            self.value = value

try:
    from wit_world.imports import log as _log
    from wit_world.imports import random as _random
    # `wasi:config/store`; since spoa:agent 0.1.2 the world also imports
    # `wasi:keyvalue/store`, so componentize-py names both by package.
    from wit_world.imports import wasi_config_store as _config
    from wit_world.imports import wasi_keyvalue_store as _kv
    from wit_world.imports import expiry as _expiry
    from wit_world.imports import types
    from wit_world.imports import ip_table as _ip_table
    from wit_world.imports import metrics as _metrics
    IN_HOST = True
except ImportError:  # plain CPython: the unit tests of a guest's logic
    IN_HOST = False

try:
    # Only `handler-with-batch` imports it (as `spoa_agent_batch`: `batch`
    # is also a `wasi:keyvalue` interface); `Batches` needs it.
    from wit_world.imports import spoa_agent_batch as _batch
except ImportError:
    _batch = None

__all__ = ["Err", "Batches", "Message", "Action", "arg", "ip_arg", "int32", "int64", "boolean",
           "string", "set_var", "unset_var", "config", "random_below", "log",
           "open_table", "contains", "text_field", "Store", "StoreError", "HostStore",
           "parse_counter", "count", "increment", "IN_HOST"]

Message = types.Message if IN_HOST else Any
Action = types.Action if IN_HOST else Any
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class Batches:
    """Mix in before `wit_world.WitWorld` to export `handle-messages`: the
    host then enters the guest once per batch of messages, not once per
    message. Each message is answered with `self.handle_message` and handed
    to the host as soon as it is ready; an `Err` raised answers that message
    `err`, as it does from `handle_message`."""

    def handle_messages(self, msgs: List[Message]) -> None:
        # Looked up once per batch, not once per message.
        handle, give = self.handle_message, _batch.answer
        for index, msg in enumerate(msgs):
            try:
                answer = Ok(handle(msg))
            except Err as err:
                answer = err
            # False: the batch has had its share of the thread; the host
            # calls again with the messages left.
            if not give(index, answer):
                return


def arg(msg: Message, name: str) -> Optional[types.TypedData]:
    """The value of the argument `name`, or None."""
    # A plain loop: a generator costs a microsecond per call in the guest.
    for a in msg.args:
        if a.name == name:
            return a.value
    return None


class IPv4Address(ipaddress.IPv4Address):
    """An `ipaddress.IPv4Address` that keeps the parts it came in, so a
    table lookup hands them back as they are."""

    __slots__ = ("_parts",)


class IPv6Address(ipaddress.IPv6Address):
    """An `ipaddress.IPv6Address` that keeps the parts it came in."""

    __slots__ = ("_parts",)


def ip_arg(msg: Message, name: str) -> Optional[Address]:
    """The argument `name` as an ipaddress address, or None if missing or not an IP."""
    value = arg(msg, name)
    # From an int, not bytes: ipaddress checks an int in one comparison.
    if isinstance(value, types.TypedData_Ipv4):
        a, b, c, d = parts = value.value
        ip = IPv4Address((a << 24) | (b << 16) | (c << 8) | d)
        ip._parts = parts
        return ip
    if isinstance(value, types.TypedData_Ipv6):
        number = 0
        for group in value.value:
            number = (number << 16) | group
        ip6 = IPv6Address(number)
        ip6._parts = value.value
        return ip6
    return None


# Typed values for set_var.
def int32(n: int) -> types.TypedData:
    return types.TypedData_Int32(n)


def int64(n: int) -> types.TypedData:
    return types.TypedData_Int64(n)


def boolean(b: bool) -> types.TypedData:
    return types.TypedData_Boolean(bool(b))


def string(s: str) -> types.TypedData:
    return types.TypedData_String(s.encode())


def set_var(scope: str, name: str, value: types.TypedData) -> Action:
    """A set-var action; scope is "proc", "sess", "txn", "req" or "res"."""
    return types.Action_SetVar(types.SetVar(types.VarScope[scope.upper()], name, value))


def unset_var(scope: str, name: str) -> Action:
    """An unset-var action."""
    return types.Action_UnsetVar(types.UnsetVar(types.VarScope[scope.upper()], name))


def config(key: str, default: str) -> str:
    """The operator's setting `key` (`--guest-config key=value`), or `default`."""
    try:
        value = _config.get(key)
    except Err as e:  # the host's config source failed: answer err with the reason
        raise Err(f"config {key}: {e.value.value}")
    return default if value is None else value


_RANDOM_DRAWS = 64
_random_pool: Any = memoryview(b"").cast("Q")
_random_next = 0


def random_below(n: int) -> int:
    """A uniform random integer in 0..n-1 from the host (multiply-shift)."""
    global _random_pool, _random_next
    # The host's bytes for 64 draws in one call: a host call costs more
    # than the draw. Filled at the first draw, never at build time, so no
    # two instances share a pool.
    if _random_next == len(_random_pool):
        _random_pool = memoryview(_random.get_random_bytes(8 * _RANDOM_DRAWS)).cast("Q")
        _random_next = 0
    draw = _random_pool[_random_next]
    _random_next += 1
    return (draw * n) >> 64


def log(level: str, message: str) -> None:
    """Logs into the host's log: "trace", "debug", "info", "warn" or "error"."""
    _log.log(_log.Level[level.upper()], message)


def _wit_address(ip: Address) -> _ip_table.IpAddress:
    parts = getattr(ip, "_parts", None)
    if parts is not None:
        if len(parts) == 4:
            return _ip_table.IpAddress_Ipv4(parts)
        return _ip_table.IpAddress_Ipv6(parts)
    number = int(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        return _ip_table.IpAddress_Ipv4(
            (number >> 24, (number >> 16) & 0xFF, (number >> 8) & 0xFF, number & 0xFF))
    return _ip_table.IpAddress_Ipv6(tuple((number >> shift) & 0xFFFF for shift in range(112, -1, -16)))


def open_table(name: str) -> Optional[_ip_table.Table]:
    """The IP table the operator granted as `name` (`--ip-table name=PATH`),
    or None when it is not granted. Open tables in `init` and keep them."""
    try:
        return _ip_table.open(name)
    except Err:
        return None


def contains(table: Optional[_ip_table.Table], ip: Address) -> bool:
    """Whether a network of `table` holds `ip` (False without a table). An
    IPv4-mapped IPv6 address matches IPv4 networks."""
    return table is not None and table.contains(_wit_address(ip))


def text_field(table: Optional[_ip_table.Table], ip: Address, path: str) -> Optional[str]:
    """The text at `path` (e.g. "country.iso_code") of the MaxMind DB record
    holding `ip`, or None."""
    if table is None:
        return None
    hit = table.lookup_fields(_wit_address(ip), [path])
    value = hit.values[0] if hit is not None and hit.values else None
    return value.value if isinstance(value, _ip_table.FieldValue_Text) else None


class HostStore:
    """The agent's store: the bucket `name` (`"default"` unless the operator
    granted others), opened through `wasi:keyvalue`. Open it once per
    instance, in `init`. Every method raises StoreError when the store
    fails."""

    def __init__(self, name: str = "default") -> None:
        try:
            self._bucket = _kv.open(name)
        except Err as e:
            raise StoreError(_describe(e.value)) from None

    def _call(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except Err as e:
            raise StoreError(_describe(e.value)) from None

    def get(self, key: str) -> Optional[bytes]:
        return self._call(self._bucket.get, key)

    def set(self, key: str, value: bytes) -> None:
        self._call(self._bucket.set, key, bytes(value))

    def set_with_ttl(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._call(_expiry.set_with_ttl, self._bucket, key, bytes(value), ttl_ms)

    def delete(self, key: str) -> None:
        self._call(self._bucket.delete, key)

    def exists(self, key: str) -> bool:
        return self._call(self._bucket.exists, key)

    def increment_within(self, key: str, delta: int, window_ms: int) -> int:
        return self._call(_expiry.increment_within, self._bucket, key, delta, window_ms)

    def expires_in(self, key: str) -> Optional[int]:
        return self._call(_expiry.expires_in, self._bucket, key)


def _describe(error: Any) -> str:
    if isinstance(error, _kv.Error_AccessDenied):
        return "access denied (bucket not granted)"
    if isinstance(error, _kv.Error_NoSuchStore):
        return "no such store"
    return str(getattr(error, "value", error))


def increment(name: str, by: int = 1) -> bool:
    """Adds `by` to the guest's counter `name`
    (`spoa_guest_counter_total{guest,name}`); False when the operator did not
    allow the name (`metrics = [...]`, `--guest-metric`)."""
    try:
        _metrics.increment(name, by)
        return True
    except Err:
        return False


def count(name: str) -> None:
    """Adds one to the counter `name` (a name not allowed is ignored)."""
    increment(name, 1)
