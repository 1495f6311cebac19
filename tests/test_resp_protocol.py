"""RESP2 request parser and reply encoders: examples, limits, and chunking-independence."""

from __future__ import annotations

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumdb.api.resp_protocol import (
    NULL_BULK,
    OK,
    ONE,
    PONG,
    ZERO,
    RespLimits,
    RespProtocolError,
    RespRequestParser,
    encode_array,
    encode_bulk,
    encode_error,
    encode_integer,
    encode_null_array,
    encode_simple,
    split_inline,
)

MEBIBYTE = 1024 * 1024


def multibulk(*arguments: bytes) -> bytes:
    """Reference encoding of one request, written independently of the code under test."""
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        parts.append(b"$%d\r\n%b\r\n" % (len(argument), argument))
    return b"".join(parts)


def parse(data: bytes, limits: RespLimits | None = None) -> list[list[bytes]]:
    parser = RespRequestParser(limits)
    parser.feed(data)
    return parser.commands()


def parse_error(data: bytes, limits: RespLimits | None = None) -> str:
    parser = RespRequestParser(limits)
    parser.feed(data)
    with pytest.raises(RespProtocolError) as caught:
        parser.next_command()
    return str(caught.value)


def outcome(
    chunks: list[bytes], limits: RespLimits | None = None
) -> tuple[list[list[bytes]], bool]:
    """Commands produced by feeding `chunks` one after another (draining after each), and
    whether the stream failed; only RespProtocolError may escape the parser."""
    parser = RespRequestParser(limits)
    commands: list[list[bytes]] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (command := parser.next_command()) is not None:
                commands.append(command)
    except RespProtocolError:
        return commands, True
    return commands, False


def one_byte_chunks(data: bytes) -> list[bytes]:
    return [data[index : index + 1] for index in range(len(data))]


# --- examples -------------------------------------------------------------------------------


def test_single_command() -> None:
    assert parse(multibulk(b"SET", b"key", b"value")) == [[b"SET", b"key", b"value"]]


def test_next_command_returns_none_until_complete() -> None:
    parser = RespRequestParser()
    data = multibulk(b"GET", b"key")
    parser.feed(data[:-1])
    assert parser.next_command() is None
    parser.feed(data[-1:])
    assert parser.next_command() == [b"GET", b"key"]
    assert parser.next_command() is None


def test_pipelined_commands_in_one_feed() -> None:
    commands = [[b"SET", b"k%d" % index, b"v"] for index in range(50)]
    data = b"".join(multibulk(*command) for command in commands)
    assert parse(data) == commands


def test_every_split_point() -> None:
    data = multibulk(b"SET", b"key", b"value") + b"PING\r\n" + multibulk(b"GET", b"key")
    expected = [[b"SET", b"key", b"value"], [b"PING"], [b"GET", b"key"]]
    for split in range(len(data) + 1):
        assert outcome([data[:split], data[split:]]) == (expected, False), split


def test_binary_safe_arguments() -> None:
    arguments = (b"SET", b"a\r\nb", b"\r\n*1\r\n$3\r\n\x00\xff")
    assert parse(multibulk(*arguments)) == [list(arguments)]


def test_empty_bulk_string() -> None:
    assert parse(multibulk(b"SET", b"", b"")) == [[b"SET", b"", b""]]


def test_empty_multibulk_is_skipped_like_redis() -> None:
    data = b"*0\r\n" + multibulk(b"PING") + b"*0\r\n*0\r\n" + multibulk(b"ECHO", b"x")
    assert parse(data) == [[b"PING"], [b"ECHO", b"x"]]
    assert outcome(one_byte_chunks(data)) == ([[b"PING"], [b"ECHO", b"x"]], False)


def test_inline_commands() -> None:
    data = b"PING\r\nSET a  b\r\n\r\n\n  \t \r\nGET\ta\nECHO \"x y\" 'z'\r\n"
    expected = [[b"PING"], [b"SET", b"a", b"b"], [b"GET", b"a"], [b"ECHO", b"x y", b"z"]]
    assert parse(data) == expected
    assert outcome(one_byte_chunks(data)) == (expected, False)


def test_inline_waits_for_newline() -> None:
    parser = RespRequestParser()
    parser.feed(b"SET a")
    assert parser.next_command() is None
    parser.feed(b" b\r")
    assert parser.next_command() is None
    parser.feed(b"\n")
    assert parser.commands() == [[b"SET", b"a", b"b"]]


def test_mixed_inline_and_multibulk_keep_order() -> None:
    data = (
        b"PING\r\n"
        + multibulk(b"SET", b"a", b"1")
        + multibulk(b"SET", b"b", b"2")
        + b"GET a\r\n"
        + multibulk(b"GET", b"b")
        + b"QUIT\r\n"
    )
    expected = [
        [b"PING"],
        [b"SET", b"a", b"1"],
        [b"SET", b"b", b"2"],
        [b"GET", b"a"],
        [b"GET", b"b"],
        [b"QUIT"],
    ]
    assert parse(data) == expected
    assert outcome(one_byte_chunks(data)) == (expected, False)


def test_commands_drained_in_several_steps_keep_order() -> None:
    parser = RespRequestParser()
    parser.feed(multibulk(b"A") + b"B\r\n" + multibulk(b"C"))
    assert parser.next_command() == [b"A"]
    parser.feed(b"D\r\n" + multibulk(b"E"))
    assert parser.commands() == [[b"B"], [b"C"], [b"D"], [b"E"]]


@pytest.mark.parametrize(
    ("line", "arguments"),
    [
        (b"SET a b", [b"SET", b"a", b"b"]),
        (b' "a\\"b" ', [b'a"b']),
        (b'"\\x41\\n\\t\\\\"', [b"A\n\t\\"]),
        (b"'it\\'s' \"\"", [b"it's", b""]),
        (b'a"b c"d', None),  # closing quote not followed by a space
        (b'"abc', None),
        (b"'abc", None),
    ],
)
def test_split_inline_quoting(line: bytes, arguments: list[bytes] | None) -> None:
    if arguments is None:
        with pytest.raises(RespProtocolError, match="unbalanced quotes"):
            split_inline(line)
    else:
        assert split_inline(line) == arguments


# --- invalid input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"+OK\r\n", "expected '*', got '+'"),
        (b":1\r\n", "expected '*', got ':'"),
        (b"-ERR x\r\n", "expected '*', got '-'"),
        (b"$3\r\nGET\r\n", "expected '*', got '$'"),
        (b"~1\r\n$1\r\na\r\n", "expected '*', got '~'"),
        (b"*-1\r\n", "invalid multibulk length"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\n$1\r\na\r\n", "invalid multibulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$x\r\n", "invalid bulk length"),
        (b"*1\r\n$1\na\r\n", "invalid bulk length"),
        (b"*1\r\n*1\r\n$1\r\na\r\n", "expected '$', got '*'"),
        (b"*1\r\n+OK\r\n", "expected '$', got '+'"),
        (b"*2\r\n$3\r\nGET\r\n:1\r\n", "expected '$', got ':'"),
        (b"*1\r\n$01\r\na\r\n", "bad bulk string length"),  # found by hiredis
        (b"*01\r\n$1\r\na\r\n", "bad multi-bulk length"),  # found by hiredis
        (b"*1 \r\n$1\r\na\r\n", "bad multi-bulk length"),  # found by hiredis
        (b"*1\r\n$ 1\r\na\r\n", "bad bulk string length"),  # found by hiredis
        (b"*1\r\n$" + b"1" * 30 + b"\r\n", "invalid bulk length"),
        (b"*1\r\n$" + b"1" * 30, "too big count string"),
        (b"*" + b"1" * 30, "too big count string"),
    ],
)
def test_invalid_requests(data: bytes, message: str) -> None:
    error = parse_error(data)
    assert error.startswith("ERR Protocol error: ")
    assert message in error
    # The same verdict when the input trickles in.
    assert outcome(one_byte_chunks(data)) == ([], True)


def test_commands_before_an_error_are_returned_first() -> None:
    parser = RespRequestParser()
    parser.feed(multibulk(b"SET", b"a", b"1") + b"PING\r\n" + multibulk(b"GET", b"a") + b"+OK\r\n")
    assert parser.commands() == [[b"SET", b"a", b"1"], [b"PING"], [b"GET", b"a"]]
    with pytest.raises(RespProtocolError):
        parser.commands()


def test_poisoned_after_error() -> None:
    parser = RespRequestParser()
    parser.feed(b"*1\r\n$-1\r\n")
    for _ in range(2):
        with pytest.raises(RespProtocolError, match="invalid bulk length"):
            parser.next_command()
        with pytest.raises(RespProtocolError, match="invalid bulk length"):
            parser.feed(multibulk(b"PING"))
        with pytest.raises(RespProtocolError, match="invalid bulk length"):
            parser.commands()


def test_poisoned_after_hiredis_error() -> None:
    parser = RespRequestParser()
    parser.feed(multibulk(b"PING") + b"*1\r\n$01\r\na\r\n" + multibulk(b"PING"))
    assert parser.next_command() == [b"PING"]
    for _ in range(2):
        with pytest.raises(RespProtocolError, match="bad bulk string length"):
            parser.next_command()
    with pytest.raises(RespProtocolError):
        parser.feed(multibulk(b"PING"))


# --- limits ---------------------------------------------------------------------------------


def test_huge_declared_bulk_length_fails_without_waiting_for_data() -> None:
    assert "request too large" in parse_error(b"*2\r\n$3\r\nSET\r\n$999999999999\r\n")


def test_declared_request_size_counts_all_arguments() -> None:
    limits = RespLimits(max_request_bytes=100, max_inline_bytes=100, max_buffered_bytes=1000)
    value = b"v" * 73
    exact = multibulk(b"SET", b"k", value)
    assert len(exact) == 100
    assert parse(exact, limits) == [[b"SET", b"k", value]]
    # One more byte of declared payload is refused as soon as its header is seen.
    header_only = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$74\r\n"
    assert "request too large" in parse_error(header_only, limits)
    # The same, wherever the feeds split the request.
    for split in range(len(exact) + 1):
        chunks = [exact[:split], exact[split:]]
        assert outcome(chunks, limits) == ([[b"SET", b"k", value]], False), split
    for split in range(len(header_only) + 1):
        chunks = [header_only[:split], header_only[split:]]
        assert outcome(chunks, limits) == ([], True), split


def test_too_many_arguments_fails_at_the_header() -> None:
    limits = RespLimits(max_arguments=3)
    assert parse(multibulk(b"a", b"b", b"c"), limits) == [[b"a", b"b", b"c"]]
    assert "invalid multibulk length" in parse_error(b"*4\r\n", limits)
    assert "invalid multibulk length" in parse_error(b"*99999999999999\r\n")


def test_too_big_inline_request() -> None:
    limits = RespLimits(max_inline_bytes=16)
    assert parse(b"x" * 16 + b"\r\n", limits) == [[b"x" * 16]]
    assert "too big inline request" in parse_error(b"x" * 17 + b"\r\n", limits)
    # Without a newline the line is refused once it exceeds the limit.
    assert "too big inline request" in parse_error(b"x" * 20, limits)
    parser = RespRequestParser(limits)
    for _ in range(17):  # 16 bytes and perhaps the CR of the line end
        parser.feed(b"x")
    assert parser.next_command() is None
    parser.feed(b"x")
    with pytest.raises(RespProtocolError, match="too big inline request"):
        parser.next_command()


def test_buffered_input_is_bounded_when_not_drained() -> None:
    limits = RespLimits(max_request_bytes=64, max_inline_bytes=64, max_buffered_bytes=100)
    parser = RespRequestParser(limits)
    command = multibulk(b"SET", b"key", b"value")
    for _ in range(100 // len(command)):
        parser.feed(command)
    parser.feed(command)  # over the bound: refused, reported after the accepted commands
    assert len(parser.commands()) == 100 // len(command)
    with pytest.raises(RespProtocolError, match="too much unprocessed input"):
        parser.next_command()


def test_draining_releases_the_buffered_bound() -> None:
    limits = RespLimits(max_request_bytes=64, max_inline_bytes=64, max_buffered_bytes=100)
    parser = RespRequestParser(limits)
    command = multibulk(b"SET", b"key", b"value")
    for _ in range(50):
        parser.feed(command)
        assert parser.commands() == [[b"SET", b"key", b"value"]]


def test_sixteen_mebibyte_value_with_default_limits() -> None:
    value = bytes(range(256)) * (16 * MEBIBYTE // 256)
    data = multibulk(b"SET", b"big", value)
    parser = RespRequestParser()
    for start in range(0, len(data), 64 * 1024):
        parser.feed(data[start : start + 64 * 1024])
    assert parser.commands() == [[b"SET", b"big", value]]


def test_limits_validation() -> None:
    assert RespLimits().max_buffered_bytes > RespLimits().max_request_bytes >= 16 * MEBIBYTE
    assert RespLimits(max_request_bytes=1000).max_buffered_bytes > 1000
    with pytest.raises(ValueError):
        RespLimits(max_arguments=0)
    with pytest.raises(ValueError):
        RespLimits(max_request_bytes=1000, max_buffered_bytes=999)


# --- properties -----------------------------------------------------------------------------

arguments_strategy = st.lists(st.binary(max_size=40), min_size=1, max_size=6)
commands_strategy = st.lists(arguments_strategy, max_size=12)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    bounds = [0, *cuts, len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


@settings(deadline=None)
@given(commands=commands_strategy, data=st.data())
def test_multibulk_round_trip_independent_of_chunking(
    commands: list[list[bytes]], data: st.DataObject
) -> None:
    stream = b"".join(multibulk(*command) for command in commands)
    assert outcome([stream]) == (commands, False)
    assert outcome(one_byte_chunks(stream)) == (commands, False)
    assert outcome(data.draw(chunked(stream))) == (commands, False)


inline_word = st.binary(min_size=1, max_size=8).filter(
    lambda word: (
        not any(byte in b" \t\r\n\x0b\x0c\"'" for byte in word)
        and word[0] not in b"$+-:_,#!=(%~>|*"
    )
)
mixed_command = st.one_of(
    arguments_strategy.map(lambda arguments: (arguments, multibulk(*arguments))),
    st.lists(inline_word, min_size=1, max_size=4).map(
        lambda words: (words, b" ".join(words) + b"\r\n")
    ),
)


@settings(deadline=None)
@given(items=st.lists(mixed_command, max_size=12), data=st.data())
def test_mixed_stream_independent_of_chunking(
    items: list[tuple[list[bytes], bytes]], data: st.DataObject
) -> None:
    commands = [arguments for arguments, _ in items]
    stream = b"".join(encoded for _, encoded in items)
    assert outcome([stream]) == (commands, False)
    assert outcome(one_byte_chunks(stream)) == (commands, False)
    assert outcome(data.draw(chunked(stream))) == (commands, False)


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_protocol_errors(stream: bytes) -> None:
    whole = outcome([stream])
    assert outcome(one_byte_chunks(stream)) == whole


resp_tokens = st.sampled_from(
    [b"*", b"$", b"\r\n", b"\r", b"\n", b"0", b"1", b"2", b"3", b"-1", b"12", b"+", b":", b"a"]
)


@settings(deadline=None, max_examples=300)
@given(stream=st.lists(resp_tokens, max_size=60).map(b"".join), data=st.data())
def test_resp_like_noise_is_chunking_independent(stream: bytes, data: st.DataObject) -> None:
    """Noise built from RESP tokens reaches deep parser states that random bytes do not."""
    whole = outcome([stream])
    assert outcome(one_byte_chunks(stream)) == whole
    assert outcome(data.draw(chunked(stream))) == whole


# --- encoders -------------------------------------------------------------------------------


def decode_reply(data: bytes) -> object:
    reader = hiredis.Reader()
    reader.feed(data)
    reply = reader.gets()
    assert reply is not False, "incomplete reply"
    assert reader.gets() is False, "trailing data after the reply"
    return reply


def test_constants() -> None:
    assert OK == encode_simple("OK")
    assert PONG == encode_simple("PONG")
    assert NULL_BULK == encode_bulk(None)
    assert ZERO == encode_integer(0)
    assert ONE == encode_integer(1)
    assert encode_null_array() == b"*-1\r\n"
    assert decode_reply(encode_null_array()) is None


def test_simple_and_error_replies() -> None:
    assert decode_reply(encode_simple("QUEUED")) == b"QUEUED"
    error = decode_reply(encode_error("ERR unknown command 'FOO'"))
    assert isinstance(error, hiredis.ReplyError)
    assert str(error) == "ERR unknown command 'FOO'"
    # CR/LF inside the text would end the line early and desynchronize the client.
    assert encode_error("ERR bad\r\nthing") == b"-ERR bad  thing\r\n"
    assert decode_reply(encode_simple("a\nb")) == b"a b"


@settings(deadline=None)
@given(st.integers(-(2**63), 2**63 - 1))
def test_integer_replies(number: int) -> None:
    assert decode_reply(encode_integer(number)) == number


@settings(deadline=None)
@given(st.none() | st.binary(max_size=100))
def test_bulk_replies(value: bytes | None) -> None:
    assert decode_reply(encode_bulk(value)) == value


array_items = st.recursive(
    st.none() | st.binary(max_size=20) | st.integers(-(2**63), 2**63 - 1),
    lambda children: st.lists(children, max_size=5),
    max_leaves=30,
)


@settings(deadline=None)
@given(st.lists(array_items, max_size=8))
def test_array_replies(items: list[object]) -> None:
    assert decode_reply(encode_array(items)) == items  # type: ignore[arg-type]


def test_array_rejects_unsupported_items() -> None:
    with pytest.raises(TypeError):
        encode_array(["text"])  # type: ignore[list-item]
