"""A small SDK for spoa-host guests written in Python (componentize-py).

Reads message arguments by name and type, builds actions, reads the
operator's configuration (wasi:config) and wraps the host's randomness and
log. componentize-py generates `wit_world` from spoa-host's WIT at build time.
"""

import ipaddress
from typing import List, Optional, Union

from componentize_py_types import Err  # raise Err("reason") to answer err(reason)
from wit_world.imports import log as _log
from wit_world.imports import random as _random
# `wasi:config/store`; since spoa:agent 0.1.2 the world also imports
# `wasi:keyvalue/store`, so componentize-py names both by package.
from wit_world.imports import wasi_config_store as _store
from wit_world.imports import types

__all__ = ["Err", "Message", "Action", "arg", "ip_arg", "int32", "int64", "boolean",
           "string", "set_var", "unset_var", "config", "random_below", "log"]

Message = types.Message
Action = types.Action
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def arg(msg: Message, name: str) -> Optional[types.TypedData]:
    """The value of the argument `name`, or None."""
    return next((a.value for a in msg.args if a.name == name), None)


def ip_arg(msg: Message, name: str) -> Optional[Address]:
    """The argument `name` as an ipaddress address, or None if missing or not an IP."""
    value = arg(msg, name)
    if isinstance(value, types.TypedData_Ipv4):
        return ipaddress.IPv4Address(bytes(value.value))
    if isinstance(value, types.TypedData_Ipv6):
        return ipaddress.IPv6Address(b"".join(g.to_bytes(2, "big") for g in value.value))
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
        value = _store.get(key)
    except Err as e:  # the host's config source failed: answer err with the reason
        raise Err(f"config {key}: {e.value.value}")
    return default if value is None else value


def random_below(n: int) -> int:
    """A uniform random integer in 0..n-1 from the host (multiply-shift)."""
    return (_random.get_random_u64() * n) >> 64


def log(level: str, message: str) -> None:
    """Logs into the host's log: "trace", "debug", "info", "warn" or "error"."""
    _log.log(_log.Level[level.upper()], message)
