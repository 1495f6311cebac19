"""The server's parser (hiredis first, checks after) against the exact header-checking one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumdb.api.resp_fast_parser import DecodeError, FastRequestParser
from quorumdb.api.resp_protocol import RespLimits, RespProtocolError, RespRequestParser


def multibulk(*arguments: bytes) -> bytes:
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        parts.append(b"$%d\r\n%b\r\n" % (len(argument), argument))
    return b"".join(parts)


def run(parser: FastRequestParser | RespRequestParser, chunks: list[bytes], entry: str = "feed"):
    """Commands produced, and whether the stream failed (only RespProtocolError may escape).

    `entry` "feed" reads with `feed` and `next_command`; "unchecked" as the server does: a
    loop over `unchecked` that takes a two-argument command of byte strings as it is and
    checks any other, then `end_of_read`."""
    commands: list[list[bytes]] = []
    try:
        for chunk in chunks:
            if entry == "unchecked":
                assert isinstance(parser, FastRequestParser)
                taken, error = read_unchecked(parser, chunk)
                commands.extend(taken)
                if error is not None:
                    raise error
                continue
            parser.feed(chunk)
            while (command := parser.next_command()) is not None:
                commands.append(command)
    except RespProtocolError:
        return commands, True
    return commands, False


def read_unchecked(
    parser: FastRequestParser, chunk: bytes
) -> tuple[list[list[bytes]], RespProtocolError | None]:
    taken: list[list[bytes]] = []
    command = None
    try:
        for command in parser.unchecked(chunk):
            if type(command) is list and len(command) == 2:
                if type(command[0]) is bytes and type(command[1]) is bytes:
                    taken.append(command)
                    continue
            checked = parser.check(command)
            if checked is not None:
                taken.append(checked)
    except DecodeError as error:
        return taken, parser.decode_failed(error)
    except RespProtocolError as error:
        return taken, error
    try:
        parser.end_of_read(command is not None)
    except RespProtocolError as error:
        return taken, error
    return taken, None


ENTRIES = pytest.mark.parametrize("entry", ["feed", "unchecked"])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)] or [b""]


commands_strategy = st.lists(
    st.lists(st.binary(max_size=40), min_size=1, max_size=5), min_size=1, max_size=12
)


@settings(max_examples=300, deadline=None)
@given(commands=commands_strategy, cuts=st.lists(st.integers(min_value=0), max_size=20))
@ENTRIES
def test_multibulk_streams_parse_like_the_exact_parser(commands, cuts, entry) -> None:
    stream = b"".join(multibulk(*command) for command in commands)
    chunks = split(stream, cuts)
    assert run(FastRequestParser(), chunks, entry) == (commands, False)
    assert run(FastRequestParser(), chunks, entry) == run(RespRequestParser(), chunks)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(min_value=0), max_size=10))
@ENTRIES
def test_garbage_only_raises_the_declared_error(data, cuts, entry) -> None:
    commands, _ = run(FastRequestParser(), split(data, cuts), entry)
    assert all(isinstance(command, list) for command in commands)
    assert all(type(argument) is bytes for command in commands for argument in command)


@settings(max_examples=200, deadline=None)
@given(commands=commands_strategy)
@ENTRIES
def test_one_byte_at_a_time(commands, entry) -> None:
    stream = b"".join(multibulk(*command) for command in commands)
    chunks = [stream[index : index + 1] for index in range(len(stream))]
    assert run(FastRequestParser(), chunks, entry) == (commands, False)


@pytest.mark.parametrize(
    "data",
    [
        b"*1\r\n:1\r\n",  # an integer where a bulk string belongs
        b"*2\r\n$3\r\nGET\r\n*1\r\n$1\r\na\r\n",  # nested array
        b"*1\r\n$-1\r\n",  # null bulk
        b"*-1\r\n",  # null array
        b"*2\r\n$3\r\nGET\r\n$x\r\n",  # malformed length
        b"*1\r\n-ERR x\r\n",  # an error reply inside a request
    ],
)
@ENTRIES
def test_invalid_requests_fail_and_poison(data: bytes, entry) -> None:
    parser = FastRequestParser()
    assert run(parser, [multibulk(b"PING") + data], entry) == ([[b"PING"]], True)
    with pytest.raises(RespProtocolError):
        parser.feed(multibulk(b"PING"))


@ENTRIES
def test_inline_commands_switch_to_the_exact_parser(entry) -> None:
    parser = FastRequestParser()
    commands, failed = run(
        parser, [b"PING\r\n", b'SET a "b c"\r\n', multibulk(b"GET", b"a")], entry
    )
    assert not failed and parser.exact
    assert commands == [[b"PING"], [b"SET", b"a", b"b c"], [b"GET", b"a"]]


@ENTRIES
def test_empty_multibulk_is_skipped(entry) -> None:
    assert run(FastRequestParser(), [b"*0\r\n" + multibulk(b"PING")], entry) == ([[b"PING"]], False)


@ENTRIES
def test_an_incomplete_request_larger_than_the_limit_fails(entry) -> None:
    limits = RespLimits(max_request_bytes=1024)
    parser = FastRequestParser(limits)
    header = b"*2\r\n$3\r\nSET\r\n$5000\r\n"
    commands, failed = run(parser, [header, b"x" * 600, b"x" * 600], entry)
    assert commands == [] and failed


@ENTRIES
def test_a_request_of_many_small_arguments_is_held_to_the_limit_too(entry) -> None:
    """hiredis drops the bytes of arguments it has parsed, so its buffer stays small while
    an unfinished request of many arguments grows in memory; the limit counts what was
    fed since the last whole request instead."""
    limits = RespLimits(max_request_bytes=4096)
    parser = FastRequestParser(limits)
    chunks = [multibulk(b"PING") + b"*100000\r\n"] + [b"$1\r\nx\r\n" * 100] * 10
    commands, failed = run(parser, chunks, entry)
    assert commands == [[b"PING"]] and failed


@ENTRIES
def test_a_request_within_the_limit_passes(entry) -> None:
    limits = RespLimits(max_request_bytes=4096)
    request = multibulk(b"SET", b"k", b"v" * 3000)
    assert run(FastRequestParser(limits), [request[:100], request[100:]], entry) == (
        [[b"SET", b"k", b"v" * 3000]],
        False,
    )


@ENTRIES
def test_too_many_arguments_fail(entry) -> None:
    limits = RespLimits(max_arguments=3)
    commands, failed = run(FastRequestParser(limits), [multibulk(b"MGET", b"a", b"b", b"c")], entry)
    assert commands == [] and failed


@settings(max_examples=200, deadline=None)
@given(
    commands=st.lists(st.lists(st.binary(max_size=20), min_size=1, max_size=3), max_size=4),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    declared=st.sampled_from([b"99999999999", b"68157440"]),
    # A bulk header (hiredis keeps its bytes) or a multibulk one (hiredis takes it in and
    # holds no bytes, so the parser must look at the input's end, not only at what is held).
    header=st.sampled_from([b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$", b"*"]),
)
@ENTRIES
def test_an_absurd_declared_length_fails_as_soon_as_its_header_arrives(
    commands, cuts, declared, header, entry
) -> None:
    good = b"".join(multibulk(*command) for command in commands)
    stream = good + header + declared + b"\r\n"
    limits = RespLimits(max_request_bytes=64 * 1024 * 1024)
    parsed, failed = run(FastRequestParser(limits), split(stream, cuts), entry)
    assert (parsed, failed) == (commands, True)


@ENTRIES
def test_a_value_that_looks_like_a_header_is_not_refused(entry) -> None:
    value = b"x" * 100 + b"$99999999999\r\n"
    request = multibulk(b"SET", b"k", value)
    cut = request.index(b"$99999999999") + len(b"$99999999999\r\n")
    assert run(FastRequestParser(), [request[:cut], request[cut:]], entry) == (
        [[b"SET", b"k", value]],
        False,
    )
