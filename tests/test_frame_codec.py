"""Node-to-node frame codec: layout, round trips under any chunking, and corruption."""

from __future__ import annotations

import struct
import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumdb.runtime.frame_codec import (
    DEFAULT_MAX_FRAME_BYTES,
    FrameDecoder,
    FrameError,
    encode_frame,
    encode_frames,
)


def frame(payload: bytes, checksum: int | None = None) -> bytes:
    """Reference framing of a raw payload, written independently of the code under test."""
    if checksum is None:
        checksum = zlib.crc32(payload)
    return struct.pack(">II", len(payload), checksum) + payload


def decode_in_chunks(chunks: list[bytes], decoder: FrameDecoder | None = None) -> list[object]:
    decoder = decoder if decoder is not None else FrameDecoder()
    objects: list[object] = []
    for chunk in chunks:
        objects.extend(decoder.feed(chunk))
    return objects


def one_byte_chunks(data: bytes) -> list[bytes]:
    return [data[index : index + 1] for index in range(len(data))]


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    bounds = [0, *cuts, len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


messages = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


# --- examples -------------------------------------------------------------------------------


def test_frame_layout() -> None:
    message = {"type": "append", "entries": [[1, b"key", b"value"]], "term": 7}
    payload = msgpack.packb(message, use_bin_type=True)
    assert encode_frame(message) == frame(payload)


def test_encode_frames_concatenates() -> None:
    batch = [1, "two", b"three", [4], {"five": 5}]
    assert encode_frames(batch) == b"".join(encode_frame(item) for item in batch)
    assert encode_frames([]) == b""


def test_round_trip_of_several_frames_in_one_feed() -> None:
    batch = [{"term": index, "value": b"x" * index} for index in range(100)]
    assert FrameDecoder().feed(encode_frames(batch)) == batch


def test_partial_frame_is_kept_until_complete() -> None:
    data = encode_frames(["first", "second"])
    decoder = FrameDecoder()
    assert decoder.feed(data[:-3]) == ["first"]
    assert decoder.buffered_bytes == len(encode_frame("second")) - 3
    assert decoder.feed(data[-3:]) == ["second"]
    assert decoder.buffered_bytes == 0


def test_large_frame_in_small_chunks() -> None:
    value = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    data = encode_frames(["before", value, "after"])
    decoder = FrameDecoder()
    objects = decode_in_chunks(
        [data[start : start + 4096] for start in range(0, len(data), 4096)], decoder
    )
    assert objects == ["before", value, "after"]
    assert decoder.buffered_bytes == 0


def test_frame_of_exactly_the_maximum_size() -> None:
    payload = msgpack.packb(b"x" * 100, use_bin_type=True)
    decoder = FrameDecoder(max_frame_bytes=len(payload))
    assert decoder.feed(frame(payload)) == [b"x" * 100]


# --- corruption and limits ------------------------------------------------------------------


def test_corrupted_checksum() -> None:
    payload = msgpack.packb("hello", use_bin_type=True)
    with pytest.raises(FrameError, match="checksum"):
        FrameDecoder().feed(frame(payload, zlib.crc32(payload) ^ 1))


def test_corrupted_payload_byte() -> None:
    data = bytearray(encode_frame({"key": b"value"}))
    data[-1] ^= 0x40
    with pytest.raises(FrameError, match="checksum"):
        FrameDecoder().feed(bytes(data))


def test_oversized_length_is_rejected_right_after_the_header() -> None:
    decoder = FrameDecoder(max_frame_bytes=1000)
    header = struct.pack(">II", 1001, 0)
    for byte in one_byte_chunks(header[:-1]):
        assert decoder.feed(byte) == []
    with pytest.raises(FrameError, match="exceeds"):
        decoder.feed(header[-1:])


def test_default_maximum_refuses_a_huge_declared_length() -> None:
    assert DEFAULT_MAX_FRAME_BYTES >= 64 * 1024 * 1024
    with pytest.raises(FrameError, match="exceeds"):
        FrameDecoder().feed(struct.pack(">II", DEFAULT_MAX_FRAME_BYTES + 1, 0))


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # nothing to decode
        b"\xc1",  # reserved msgpack byte
        b"\x92\x01",  # array missing an element
        b"\x01\x02",  # trailing garbage after a complete object
        b"\x81\x90\x01",  # map keyed by a list
        b"\xa2\xff\xfe",  # invalid UTF-8 in a str
        b"\xd6\xff\x00",  # truncated timestamp extension
    ],
)
def test_invalid_payload_with_valid_checksum(payload: bytes) -> None:
    with pytest.raises(FrameError, match="invalid frame payload"):
        FrameDecoder().feed(frame(payload))


def test_poisoned_after_error() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameError):
        decoder.feed(frame(b"\xc1"))
    for _ in range(2):
        with pytest.raises(FrameError, match="invalid frame payload"):
            decoder.feed(encode_frame("valid"))


def test_encoder_refuses_payload_over_the_given_maximum() -> None:
    assert len(encode_frame(b"x" * 100, max_frame_bytes=102)) == 8 + 102
    with pytest.raises(FrameError, match="exceeds"):
        encode_frame(b"x" * 100, max_frame_bytes=101)
    with pytest.raises(FrameError, match="exceeds"):
        encode_frames(["small", b"x" * 100], max_frame_bytes=101)


def test_encoder_rejects_unencodable_objects_and_recovers() -> None:
    with pytest.raises(TypeError):
        encode_frame([1, object()])
    assert FrameDecoder().feed(encode_frame([1, 2])) == [[1, 2]]


def test_invalid_maximum() -> None:
    with pytest.raises(ValueError):
        FrameDecoder(max_frame_bytes=0)
    with pytest.raises(ValueError):
        FrameDecoder(max_frame_bytes=2**32)


# --- properties -----------------------------------------------------------------------------


@settings(deadline=None)
@given(batch=st.lists(messages, max_size=8), data=st.data())
def test_round_trip_independent_of_chunking(batch: list[object], data: st.DataObject) -> None:
    stream = encode_frames(batch)
    assert FrameDecoder().feed(stream) == batch
    assert decode_in_chunks(one_byte_chunks(stream)) == batch
    assert decode_in_chunks(data.draw(chunked(stream))) == batch


def outcome(chunks: list[bytes], max_frame_bytes: int) -> tuple[list[object], bool]:
    """Objects decoded before a failure, and whether one occurred; only FrameError may escape."""
    decoder = FrameDecoder(max_frame_bytes)
    objects: list[object] = []
    try:
        for chunk in chunks:
            objects.extend(decoder.feed(chunk))
    except FrameError:
        return objects, True
    return objects, False


@settings(deadline=None)
@given(stream=st.binary(max_size=200), max_frame_bytes=st.sampled_from([16, 1000, 2**32 - 1]))
def test_arbitrary_bytes_only_raise_frame_errors(stream: bytes, max_frame_bytes: int) -> None:
    whole = outcome([stream], max_frame_bytes)
    _, whole_failed = whole
    bytewise = outcome(one_byte_chunks(stream), max_frame_bytes)
    # Byte by byte, objects preceding the failure are returned before it is seen.
    assert bytewise[1] == whole_failed
    if not whole_failed:
        assert bytewise == whole


@settings(deadline=None)
@given(payloads=st.lists(st.binary(max_size=30), max_size=5))
def test_arbitrary_payloads_with_valid_checksums(payloads: list[bytes]) -> None:
    """Past the checksum, msgpack's own failures must also surface as FrameError."""
    stream = b"".join(frame(payload) for payload in payloads)
    whole = outcome([stream], 2**32 - 1)
    bytewise = outcome(one_byte_chunks(stream), 2**32 - 1)
    assert bytewise[1] == whole[1]
    if not whole[1]:
        assert bytewise == whole


@settings(deadline=None)
@given(batch=st.lists(messages, min_size=1, max_size=4), data=st.data())
def test_any_single_bit_flip_is_detected_or_harmless(
    batch: list[object], data: st.DataObject
) -> None:
    stream = bytearray(encode_frames(batch))
    index = data.draw(st.integers(0, len(stream) - 1))
    stream[index] ^= 1 << data.draw(st.integers(0, 7))
    objects, failed = outcome([bytes(stream)], DEFAULT_MAX_FRAME_BYTES)
    # CRC-32 detects every single-bit error in the payload; a flipped length either fails,
    # waits for bytes that never come, or (flipped checksum) fails.
    assert failed or objects == batch[: len(objects)]
    assert objects != batch
