"""How a value is laid out in storage: a one-byte header, an optional expiry, the value.

Kept separate from the storage engine's own checksum framing: the engine protects
bytes, this module gives them meaning.
"""

from __future__ import annotations

import struct

_PLAIN = 0
_EXPIRING = 1
_EXPIRY = struct.Struct(">q")


class RecordFormatError(ValueError):
    """Stored bytes that are not a record this version understands."""


PLAIN_RECORD_PREFIX = b"\x00"  # a record that never expires: this byte, then the value


def encode_record(value: bytes, expire_at_ms: int | None = None) -> bytes:
    if expire_at_ms is None:
        return PLAIN_RECORD_PREFIX + value
    return b"\x01" + _EXPIRY.pack(expire_at_ms) + value


def decode_record(raw: bytes) -> tuple[bytes, int | None]:
    """Return (value, expire_at_ms or None)."""
    if not raw:
        raise RecordFormatError("empty record")
    header = raw[0]
    if header == _PLAIN:
        return raw[1:], None
    if header == _EXPIRING and len(raw) >= 9:
        return raw[9:], _EXPIRY.unpack_from(raw, 1)[0]
    raise RecordFormatError(f"unknown record header {header}")


def live_value(raw: bytes | None, now_ms: int) -> bytes | None:
    """The value if present and not expired at `now_ms`."""
    if raw is None:
        return None
    if raw and raw[0] == _PLAIN:
        return raw[1:]
    value, expire_at_ms = decode_record(raw)
    if expire_at_ms is not None and expire_at_ms <= now_ms:
        return None
    return value
