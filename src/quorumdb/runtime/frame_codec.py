"""Node-to-node message framing, without I/O.

A frame is a 4-byte big-endian payload length, the 4-byte big-endian CRC-32 of the payload,
then the payload: one msgpack-encoded object. The length prefix lets the receiver cut the
stream without parsing msgpack incrementally; the checksum turns corruption that TCP lets
through (buggy NICs, middleboxes, our own bugs) into a dropped connection instead of a
silently wrong replicated write; the maximum size bounds what a peer can make us buffer.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Iterable

import msgpack

MEBIBYTE = 1024 * 1024
DEFAULT_MAX_FRAME_BYTES = 64 * MEBIBYTE + MEBIBYTE
"""Room for a 64 MiB batch of replicated writes plus its envelope."""

HEADER = struct.Struct(">II")
HEADER_BYTES = HEADER.size
MAX_LENGTH_FIELD = 0xFFFFFFFF


class FrameError(Exception):
    """The frame stream is corrupt or violates the size limit; the connection must be dropped."""


class _ThreadPacker(threading.local):
    """One reusable msgpack Packer per thread: several times faster than `msgpack.packb` for
    small messages, which would allocate a new Packer each call, and never shared between
    threads."""

    def __init__(self) -> None:
        self.pack = msgpack.Packer(use_bin_type=True).pack


_packer = _ThreadPacker()


def encode_frame(obj: object, max_frame_bytes: int = MAX_LENGTH_FIELD) -> bytes:
    """One frame holding `obj`. Raises FrameError if the payload exceeds `max_frame_bytes`
    (pass the receiver's limit to fail at the sender rather than have the receiver drop the
    connection), and TypeError if msgpack cannot encode `obj`."""
    payload: bytes = _packer.pack(obj)
    if len(payload) > max_frame_bytes:
        raise _too_large(len(payload), max_frame_bytes)
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def encode_frames(objects: Iterable[object], max_frame_bytes: int = MAX_LENGTH_FIELD) -> bytes:
    """Several frames concatenated, so that many messages to one peer cost a single write."""
    pack = _packer.pack
    pack_header = HEADER.pack
    crc32 = zlib.crc32
    parts: list[bytes] = []
    append = parts.append
    for obj in objects:
        payload: bytes = pack(obj)
        if len(payload) > max_frame_bytes:
            raise _too_large(len(payload), max_frame_bytes)
        append(pack_header(len(payload), crc32(payload)))
        append(payload)
    return b"".join(parts)


def _too_large(length: int, maximum: int) -> FrameError:
    return FrameError(f"frame payload of {length} bytes exceeds {maximum}")


class FrameDecoder:
    """Cuts a byte stream into decoded objects.

    Complete frames are decoded straight from the fed data; only an unfinished frame is
    copied into the buffer, which grows by appending and is compacted only when the consumed
    prefix outweighs what remains, so a large frame arriving in small pieces costs linear
    time. After a FrameError every call raises it again.
    """

    __slots__ = ("_buffer", "_offset", "_max_frame_bytes", "_error")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if not 0 < max_frame_bytes <= MAX_LENGTH_FIELD:
            raise ValueError("max_frame_bytes must be between 1 and 2**32 - 1")
        self._buffer = bytearray()
        self._offset = 0  # start of the unconsumed part of _buffer
        self._max_frame_bytes = max_frame_bytes
        self._error: FrameError | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes of an unfinished frame held until the rest arrives."""
        return len(self._buffer) - self._offset

    def feed(self, data: bytes) -> list[object]:
        """Every object completed by `data`, in stream order."""
        if self._error is not None:
            raise self._error
        buffer = self._buffer
        objects: list[object] = []
        try:
            if buffer:
                buffer += data
                offset = self._decode(buffer, self._offset, objects)
                if offset >= len(buffer) - offset:
                    # Copy what remains only when at most as much was consumed: linear overall.
                    del buffer[:offset]
                    offset = 0
                self._offset = offset
            else:
                offset = self._decode(data, 0, objects)
                if offset < len(data):
                    buffer += memoryview(data)[offset:]
        except FrameError as error:
            self._error = error
            buffer.clear()
            self._offset = 0
            raise
        return objects

    def _decode(self, source: bytes | bytearray, offset: int, objects: list[object]) -> int:
        """Append the objects of the complete frames in `source[offset:]`; return the offset
        of the first unconsumed byte."""
        end = len(source)
        maximum = self._max_frame_bytes
        unpack_header = HEADER.unpack_from
        crc32 = zlib.crc32
        unpackb = msgpack.unpackb
        with memoryview(source) as view:
            while end - offset >= HEADER_BYTES:
                length, checksum = unpack_header(view, offset)
                if length > maximum:
                    raise FrameError(f"frame length {length} exceeds {maximum}")
                start = offset + HEADER_BYTES
                stop = start + length
                if stop > end:
                    break
                with view[start:stop] as payload:
                    if crc32(payload) != checksum:
                        raise FrameError("frame checksum mismatch")
                    try:
                        obj = unpackb(payload, raw=False, strict_map_key=False)
                    except Exception as error:  # untrusted input: any failure is corruption
                        raise FrameError(f"invalid frame payload: {error!r}") from error
                objects.append(obj)
                offset = stop
        return offset
