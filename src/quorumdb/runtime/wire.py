"""Core messages to and from msgpack-ready values, for frames between nodes.

Each registered dataclass or enum travels as a msgpack extension type whose payload
is `[tag, *fields]`, so nested records (an operation inside a forward request, an
outcome carrying a scan page) survive the trip with their types.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

import msgpack

from quorumdb.core import messages
from quorumdb.core.errors import ErrorCode
from quorumdb.core.keyspace import KeyspaceConfig

_RECORD_EXTENSION = 1
_ENUM_EXTENSION = 2

_RECORD_TYPES: tuple[type, ...] = (
    messages.Get,
    messages.Put,
    messages.Delete,
    messages.Increment,
    messages.Append,
    messages.ScanPartition,
    messages.CountPartition,
    messages.CreateKeyspace,
    messages.ScanPage,
    messages.Outcome,
    messages.ForwardRequest,
    messages.ForwardReply,
    messages.CatalogRequest,
    messages.CatalogUpdate,
    KeyspaceConfig,
    messages.CatalogAck,  # new records go last: a tag is a record's position
)
_ENUM_TYPES: tuple[type[Enum], ...] = (messages.PutCondition, ErrorCode)

_RECORD_TAGS = {record_type: tag for tag, record_type in enumerate(_RECORD_TYPES)}
_ENUM_TAGS = {enum_type: tag for tag, enum_type in enumerate(_ENUM_TYPES)}
_RECORD_FIELDS = {
    record_type: tuple(field.name for field in dataclasses.fields(record_type))
    for record_type in _RECORD_TYPES
}


class WireError(ValueError):
    """A peer sent a well-framed payload that is not a valid message."""


def _default(value: Any) -> msgpack.ExtType:
    value_type = type(value)
    tag = _RECORD_TAGS.get(value_type)
    if tag is not None:
        fields = [getattr(value, name) for name in _RECORD_FIELDS[value_type]]
        payload = msgpack.packb([tag, *fields], default=_default, use_bin_type=True)
        return msgpack.ExtType(_RECORD_EXTENSION, payload)
    tag = _ENUM_TAGS.get(value_type)
    if tag is not None:
        return msgpack.ExtType(_ENUM_EXTENSION, msgpack.packb([tag, value.value]))
    raise TypeError(f"cannot encode {value_type.__name__} for the wire")


def _ext_hook(code: int, payload: bytes) -> Any:
    items = msgpack.unpackb(payload, ext_hook=_ext_hook, raw=False, use_list=False)
    if not isinstance(items, tuple) or not items or not isinstance(items[0], int):
        raise WireError("malformed record")
    tag = items[0]
    try:
        if code == _RECORD_EXTENSION:
            return _RECORD_TYPES[tag](*items[1:])
        if code == _ENUM_EXTENSION and len(items) == 2:
            return _ENUM_TYPES[tag](items[1])
    except (IndexError, TypeError, ValueError) as error:
        raise WireError(f"malformed record: {error}") from None
    raise WireError(f"unknown extension type {code}")


def pack_message(message: object) -> bytes:
    """Serialize one message (any registered record) to msgpack bytes."""
    result: bytes = msgpack.packb(message, default=_default, use_bin_type=True)
    return result


def unpack_message(payload: bytes) -> object:
    """Inverse of `pack_message`; raises WireError on anything malformed."""
    try:
        return msgpack.unpackb(payload, ext_hook=_ext_hook, raw=False, use_list=False)
    except WireError:
        raise
    except Exception as error:  # msgpack raises several types for corrupt input
        raise WireError(f"undecodable payload: {error}") from None
