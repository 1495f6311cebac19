"""The request parser the server uses: hiredis directly, with checks after the fact.

`RespRequestParser` validates every header in Python before hiredis sees a byte, which
costs more than everything else a GET does. Real clients (redis-py, redis-cli,
redis-benchmark, every Redis library) only send multibulk requests, so this parser hands
bytes straight to hiredis and checks each parsed command instead: an array of byte
strings, within the argument limit, and no more than `max_request_bytes` held while a
request is incomplete. A connection whose first byte is not `*` (an inline command typed
into telnet or nc) switches, for good, to the exact parser.

A request that ends a read with a header declaring a huge size (`$99999999999`) is
handed to the exact parser, so it is refused at the header as Redis does. What this
parser gives up: an inline command after multibulk ones on the same connection is a
protocol error.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from typing import Any

import hiredis

from quorumdb.api.resp_protocol import RespLimits, RespProtocolError, RespRequestParser

_ASTERISK = 42
# What hiredis returns once it holds no complete command: its default, False, would
# end a loop over `iter(gets, False)` at a request `:0` (0 == False) as well.
_NEED_MORE = object()
# What iterating `unchecked` raises on bytes that are not RESP at all.
DecodeError = hiredis.ProtocolError
RECENT_BYTES = 4096
CANDIDATE_STARTS_MAX = 64
# A header at the very end of the input that declares 8 digits or more (>= 10 MB): cheap
# to spot, and the only case where waiting for the bytes would hold a connection for long.
_SUSPICIOUS_HEADER = re.compile(rb"[*$][0-9-]{8,}\r\n\Z")


class FastRequestParser:
    __slots__ = (
        "_reader",
        "_limits",
        "_exact",
        "_error",
        "_fresh",
        "_recent_chunks",
        "_recent_bytes",
        "_unfinished_bytes",
        "_queue",
        "_gets",
        "_read_unchecked",
    )

    def __init__(self, limits: RespLimits | None = None) -> None:
        self._limits = limits if limits is not None else RespLimits()
        self._reader = hiredis.Reader(notEnoughData=_NEED_MORE)
        self._exact: RespRequestParser | None = None
        self._error: RespProtocolError | None = None
        self._fresh = True  # nothing fed yet
        # The last reads, at least RECENT_BYTES of them when there were, to judge a huge
        # declared length at the end of a read. Kept as the chunks received and joined
        # only when a request is left incomplete: copying 4 KiB on every read was about
        # a tenth of a pipelined GET's parsing.
        self._recent_chunks: deque[bytes] = deque()
        self._recent_bytes = 0
        # Bytes fed since a drain last returned a whole request: an upper bound (give or
        # take one read) of the unfinished request's size. hiredis's own buffer drops the
        # bytes of arguments it has parsed, so it cannot bound a request of many of them.
        self._unfinished_bytes = 0
        self._queue: deque[list[bytes]] = deque()  # drained but not yet taken one by one
        self._gets = self._reader.gets
        self._read_unchecked = False  # the last read went through hiredis's fast path

    @property
    def exact(self) -> bool:
        """True once the connection fell back to the header-by-header parser."""
        return self._exact is not None

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._exact is not None:
            self._exact.feed(data)
            return
        if not data:
            return
        if self._fresh and data[0] != _ASTERISK:
            self._exact = RespRequestParser(self._limits)
            self._exact.feed(data)
            return
        self._fresh = False
        self._reader.feed(data)
        self._unfinished_bytes += len(data)
        self._remember(data)

    def _remember(self, data: bytes) -> None:
        if len(data) > 4 * RECENT_BYTES:
            data = data[-RECENT_BYTES:]  # not a whole large read kept alive
        chunks = self._recent_chunks
        chunks.append(data)
        size = self._recent_bytes + len(data)
        if size > 2 * RECENT_BYTES:
            # Trimmed now and then, not on every read: small reads (one unpipelined
            # command) pay an append, and every ~100 reads one join of 8 KiB.
            while size - len(chunks[0]) >= RECENT_BYTES:
                size -= len(chunks.popleft())
        self._recent_bytes = size

    def _recent(self) -> bytes:
        chunks = self._recent_chunks
        recent = chunks[-1] if len(chunks) == 1 else b"".join(chunks)
        return recent[-RECENT_BYTES:]

    def drain(self) -> list[list[bytes]]:
        """Every complete command at once (one call per read instead of one per command).

        If the stream fails after some commands, those are returned and the next call
        raises, so replies still come in order before the error."""
        if self._exact is not None:
            return self._exact.commands()
        if self._queue:
            queued = list(self._queue)
            self._queue.clear()
            return queued
        if self._error is not None:
            raise self._error
        return self._drain_reader()

    def unchecked(self, data: bytes) -> Iterable[Any]:
        """Feed `data`; every complete command, as hiredis parsed it, for a consumer that
        checks each itself and so walks a pipeline once instead of twice (the parser's
        per-command checks were about a quarter of a pipelined GET's time).

        The consumer takes a command it recognizes as well formed as it is (a list of
        byte strings) and passes any other to `check`; it catches `DecodeError` around
        the loop and passes it to `decode_failed`; after the loop it calls `end_of_read`
        with whether it took any command. When the stream is not on hiredis's fast path,
        the commands come already checked."""
        if self._exact is not None or self._error is not None or self._queue or self._fresh:
            self.feed(data)
            commands = self.drain()  # judged what was left already (`_drain_reader`)
            self._read_unchecked = False  # so `end_of_read` only raises what it recorded
            return commands
        self._read_unchecked = True
        if data:
            self._reader.feed(data)
            self._unfinished_bytes += len(data)
            self._remember(data)
        return iter(self._gets, _NEED_MORE)

    def check(self, command: Any) -> list[bytes] | None:
        """`command` if it is a request; None for an empty one (nothing to answer);
        otherwise the stream fails and its error is raised."""
        if type(command) is not list:
            raise self._fail("ERR Protocol error: expected an array of bulk strings")
        if len(command) > self._limits.max_arguments:
            raise self._fail("ERR Protocol error: invalid multibulk length")
        for argument in command:
            if type(argument) is not bytes:
                raise self._fail("ERR Protocol error: expected an array of bulk strings")
        return command or None

    def decode_failed(self, error: Exception) -> RespProtocolError:
        """The stream's error for hiredis's `error`, recorded."""
        return self._fail(_redis_wording(str(error)))

    def end_of_read(self, took_command: bool) -> None:
        """After an `unchecked` loop ran out of complete commands: judge what is left, and
        raise the stream's error if it failed (every command before it was taken)."""
        if not self._read_unchecked or self._error is not None:
            self.raise_if_failed()
            return
        if took_command:
            self._unfinished_bytes = 0
        # `_check_held`'s first tests, cheaply: most reads end a whole request.
        last = self._recent_chunks[-1] if self._recent_chunks else b""
        if (
            self._reader.has_data()
            or len(last) < 3
            or 48 <= last[-3] <= 57  # b"0" to b"9": may end in a header
            or self._unfinished_bytes > self._limits.max_request_bytes
        ):
            self._check_held()
            if self._error is not None:
                raise self._error

    def _drain_reader(self) -> list[list[bytes]]:
        self._read_unchecked = True
        commands: list[list[bytes]] = []
        append = commands.append
        check = self.check
        command: Any = None
        try:
            for command in iter(self._gets, _NEED_MORE):
                if type(command) is list and len(command) == 2:
                    # GET and its kind, most of a pipeline: checked without a loop
                    if type(command[0]) is bytes and type(command[1]) is bytes:
                        append(command)
                        continue
                checked = check(command)
                if checked is not None:
                    append(checked)
        except DecodeError as error:
            self.decode_failed(error)
        except RespProtocolError:
            pass  # recorded; raised below or by the next call
        else:
            try:
                self.end_of_read(command is not None)
            except RespProtocolError:
                pass  # as above
        if not commands and self._error is not None:
            raise self._error
        return commands

    def _check_held(self) -> None:
        reader = self._reader
        if self._unfinished_bytes > self._limits.max_request_bytes:
            self._fail("ERR Protocol error: request too large")
            return
        if not reader.has_data():
            # hiredis holds no unparsed bytes: every request read was complete, or the
            # input ends with a multibulk header it has taken in (`*99999999\r\n`). Only
            # the latter has a digit before the final line end, and needs the check.
            last = self._recent_chunks[-1] if self._recent_chunks else b""
            if len(last) < 3:
                last = self._recent()
            if len(last) < 3 or not 48 <= last[-3] <= 57:  # b"0" to b"9"
                return
        try:
            if reader.len() > self._limits.max_request_bytes:
                raise self._fail("ERR Protocol error: request too large")
            recent = self._recent()
            if _SUSPICIOUS_HEADER.search(recent, len(recent) - 32):
                problem = _absurd_request(recent, self._limits)
                if problem is not None:
                    raise self._fail(problem)
        except RespProtocolError:
            pass  # recorded in self._error; raised by the next call

    def raise_if_failed(self) -> None:
        """Raise the stream's error, if it has one and every command before it was taken."""
        if self._exact is not None:
            self._exact.raise_if_failed()
        elif self._error is not None and not self._queue:
            raise self._error

    def next_command(self) -> list[bytes] | None:
        """The next complete command, or None when more input is needed."""
        if self._exact is not None:
            return self._exact.next_command()
        queue = self._queue
        if not queue:
            queue.extend(self.drain())
            if not queue:
                return None
        return queue.popleft()

    def _fail(self, message: str) -> RespProtocolError:
        self._error = RespProtocolError(message)
        return self._error


def _redis_wording(hiredis_message: str) -> str:
    lowered = hiredis_message.lower()
    if "multi-bulk" in lowered or "multibulk" in lowered:
        return "ERR Protocol error: invalid multibulk length"
    if "bulk" in lowered:
        return "ERR Protocol error: invalid bulk length"
    return f"ERR Protocol error: {lowered}"


def _absurd_request(recent: bytes, limits: RespLimits) -> str | None:
    """If the input ends inside a request whose headers declare more than the limits
    allow, the error for it. hiredis does not say where the unfinished request begins, so
    each `*` in the recent bytes, nearest first, is tried as its start; a start counts only
    if everything after it reads as well-formed headers and payloads."""
    start = len(recent)
    for _ in range(CANDIDATE_STARTS_MAX):
        start = recent.rfind(b"*", 0, start)
        if start < 0:
            return None
        problem = _limit_problem(recent, start, limits)
        if problem is not None:
            return problem
    return None


def _limit_problem(data: bytes, position: int, limits: RespLimits) -> str | None:
    """The limit broken by the request prefix at `position`, or None (also when the
    bytes there are not a well-formed request prefix at all)."""
    end = data.find(b"\r\n", position)
    count = data[position + 1 : end]
    if end < 0 or not count.isdigit():
        return None
    if int(count) > limits.max_arguments:
        return "ERR Protocol error: invalid multibulk length"
    declared = 0
    position = end + 2
    for _ in range(int(count)):
        if position == len(data):
            return None
        end = data.find(b"\r\n", position)
        length = data[position + 1 : end]
        if data[position] != 36 or end < 0 or not length.isdigit():  # 36: b"$"
            return None
        declared += int(length)
        if int(length) > limits.max_request_bytes or declared > limits.max_request_bytes:
            return "ERR Protocol error: invalid bulk length"
        position = end + 2 + int(length) + 2
        if position > len(data):
            return None  # inside a payload: the header that matters is this one, and fine
    return None
