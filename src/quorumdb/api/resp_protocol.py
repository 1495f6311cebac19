"""RESP2 request parsing and reply encoding, without I/O.

`RespRequestParser` splits the work in two: `hiredis.Reader` buffers multibulk requests and
extracts their arguments in C, while a thin Python scanner walks only the `*<n>` and `$<len>`
headers, skipping payloads arithmetically. The scanner is what makes the parser safe for a
server: hiredis accepts any RESP reply type and waits patiently for a declared 1 TB string,
whereas a request must be an array of bulk strings and its size must be refused before it is
buffered. Knowing every command boundary also lets inline commands (telnet) be split off
without ever disturbing a partially buffered multibulk.

Errors are reported in stream order, as Redis does: commands completed before the bad input are
still returned by `next_command()`, which then raises the `RespProtocolError` on every later
call, so the server replies to them, sends the error and closes the connection.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import hiredis

MEBIBYTE = 1024 * 1024
BUFFER_SLACK_BYTES = 16 * MEBIBYTE
"""Default headroom of `max_buffered_bytes` over one maximal request: room for the reads that
complete a large request together with the start of the next commands."""

HEADER_LINE_LIMIT = 20
"""Bytes of a `*<n>` or `$<len>` line before its CRLF: room for any 64-bit size."""

RESP_TYPE_BYTES = frozenset(b"$+-:_,#!=(%~>|")
"""First bytes of RESP2/RESP3 values other than arrays: never the start of an inline command."""

ASTERISK = 42
DOLLAR = 36

CRLF = b"\r\n"
OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NULL_BULK = b"$-1\r\n"
NULL_ARRAY = b"*-1\r\n"
EMPTY_ARRAY = b"*0\r\n"
ZERO = b":0\r\n"
ONE = b":1\r\n"


class RespProtocolError(Exception):
    """Invalid or oversized client input; the message is the error reply without its '-'."""


@dataclass(frozen=True, slots=True)
class RespLimits:
    """Per-connection bounds that keep one client from exhausting the server's memory."""

    max_request_bytes: int = 512 * MEBIBYTE
    """Wire size of one command with all its arguments (Redis allows 512 MiB strings)."""
    max_arguments: int = 1_048_576
    max_inline_bytes: int = 64 * 1024
    max_buffered_bytes: int | None = None
    """Input held by the parser and not yet returned; None means max_request_bytes plus
    BUFFER_SLACK_BYTES."""

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_arguments", "max_inline_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.max_buffered_bytes is None:
            buffered = self.max_request_bytes + BUFFER_SLACK_BYTES
            object.__setattr__(self, "max_buffered_bytes", buffered)
        elif self.max_buffered_bytes < max(self.max_request_bytes, self.max_inline_bytes):
            raise ValueError("max_buffered_bytes must hold one maximal request")


class RespRequestParser:
    """Turns a client's byte stream into commands (lists of byte-string arguments).

    Call `feed()` with whatever the socket produced, then `next_command()` until it returns
    None. A multibulk header with `*0` is skipped, as Redis does.
    """

    __slots__ = (
        "_reader",
        "_max_request_bytes",
        "_max_arguments",
        "_max_inline_bytes",
        "_max_buffered_bytes",
        "_carry",
        "_inline",
        "_skip",
        "_arguments_left",
        "_in_command",
        "_command_received",
        "_ready",
        "_queue",
        "_buffered",
        "_error",
    )

    def __init__(self, limits: RespLimits | None = None) -> None:
        limits = limits if limits is not None else RespLimits()
        self._reader = hiredis.Reader()
        self._max_request_bytes = limits.max_request_bytes
        self._max_arguments = limits.max_arguments
        self._max_inline_bytes = limits.max_inline_bytes
        self._max_buffered_bytes = (
            limits.max_buffered_bytes
            if limits.max_buffered_bytes is not None
            else limits.max_request_bytes + BUFFER_SLACK_BYTES
        )
        # Scanner state. `_carry` is an unfinished header line not yet given to hiredis;
        # `_inline` an unfinished inline line (None when not inside one).
        self._carry = b""
        self._inline: bytearray | None = None
        self._skip = 0  # bytes of the current bulk payload (and its CRLF) still to come
        self._arguments_left = 0  # bulk headers of the current multibulk still to come
        self._in_command = False  # inside a multibulk, its header seen
        self._command_received = 0  # bytes of the current multibulk in earlier feeds
        # Output order: `_ready` commands complete inside hiredis come first, then `_queue`,
        # whose entries are inline commands or counts of further hiredis commands.
        self._ready = 0
        self._queue: deque[int | list[bytes]] = deque()
        self._buffered = 0  # upper bound of the input held since the parser was last drained
        self._error: RespProtocolError | None = None

    def feed(self, data: bytes) -> None:
        """Accept more input. Raises only if the stream already failed; a new error is
        reported by `next_command()` once the commands before it have been returned."""
        if self._error is not None:
            raise self._error
        if not data:
            return
        self._buffered += len(data)
        if self._buffered > self._max_buffered_bytes:
            self._error = RespProtocolError("ERR Protocol error: too much unprocessed input")
            return
        if type(data) is not bytes:
            data = bytes(data)
        if self._carry:
            data = self._carry + data
            self._carry = b""
        self._scan(data)

    def next_command(self) -> list[bytes] | None:
        """The next complete command, or None when more input is needed."""
        if self._ready:
            self._ready -= 1
            try:
                return self._reader.gets()  # type: ignore[no-any-return]
            except hiredis.ProtocolError as error:
                # Malformed numbers such as `$01` that the scanner leaves to hiredis.
                self._ready = 0
                self._queue.clear()
                self._error = RespProtocolError(f"ERR Protocol error: {str(error).lower()}")
                raise self._error from None
        return self._next_after_ready()

    def raise_if_failed(self) -> None:
        """Raise the stream's error, if it has one and every command before it was taken."""
        if self._error is not None and not self._ready and not self._queue:
            raise self._error

    def commands(self) -> list[list[bytes]]:
        """Every complete command. If the stream failed after some of them, they are returned
        and the error is raised by the next call."""
        result: list[list[bytes]] = []
        try:
            while (command := self.next_command()) is not None:
                result.append(command)
        except RespProtocolError:
            if not result:
                raise
        return result

    def _next_after_ready(self) -> list[bytes] | None:
        queue = self._queue
        if queue:
            head = queue.popleft()
            if type(head) is not int:
                return head  # type: ignore[return-value]
            self._ready = head
            return self.next_command()
        if self._error is not None:
            raise self._error
        # Drained: what remains held is only the unfinished request.
        inline = self._inline
        self._buffered = (
            self._command_received + len(self._carry) + (len(inline) if inline is not None else 0)
        )
        return None

    def _commit(self, count: int) -> None:
        """Record `count` more multibulk commands, complete inside hiredis, in output order."""
        queue = self._queue
        if not queue:
            self._ready += count
        elif type(queue[-1]) is int:
            queue[-1] += count
        else:
            queue.append(count)

    def _scan(self, data: bytes) -> None:
        """Validate the headers of `data`, hand multibulk bytes to hiredis and split off inline
        commands. Local variables keep the per-header cost down: this is the hot path."""
        reader_feed = self._reader.feed
        find = data.find
        size = len(data)
        max_request_bytes = self._max_request_bytes
        arguments_left = self._arguments_left
        in_command = self._in_command
        # Positions are relative to `data`: a command begun in an earlier feed starts before 0,
        # and `position` lies past the end while a payload is still arriving.
        command_start = -self._command_received
        position = self._skip
        fed_from = 0  # data[fed_from:] holds the multibulk input not yet given to hiredis
        completed_at = 0  # end of the last complete command
        ready = 0
        try:
            if self._inline is not None:
                position = fed_from = completed_at = self._continue_inline(data)
            while True:
                if in_command:
                    while arguments_left and position < size:
                        if data[position] != DOLLAR:
                            raise RespProtocolError(
                                f"ERR Protocol error: expected '$', got '{chr(data[position])}'"
                            )
                        end = find(CRLF, position)
                        if end < 0:
                            break
                        if end - position > HEADER_LINE_LIMIT:
                            raise RespProtocolError("ERR Protocol error: invalid bulk length")
                        # int() tolerates forms hiredis rejects (" 1", "01"): those fail in
                        # hiredis, once the command is complete.
                        length = int(data[position + 1 : end])
                        if length < 0:
                            raise RespProtocolError("ERR Protocol error: invalid bulk length")
                        position = end + length + 4
                        if position - command_start > max_request_bytes:
                            raise RespProtocolError("ERR Protocol error: request too large")
                        arguments_left -= 1
                    if arguments_left or position > size:
                        break
                    in_command = False
                    ready += 1
                    completed_at = position
                if position >= size:
                    break
                first = data[position]
                if first == ASTERISK:
                    end = find(CRLF, position)
                    if end < 0:
                        break
                    if end - position > HEADER_LINE_LIMIT:
                        raise RespProtocolError("ERR Protocol error: invalid multibulk length")
                    count = int(data[position + 1 : end])
                    if count > 0:
                        if count > self._max_arguments:
                            raise RespProtocolError("ERR Protocol error: invalid multibulk length")
                        in_command = True
                        arguments_left = count
                        command_start = position
                    elif count == 0:
                        # Redis ignores `*0`. Keep it from hiredis, which would return [].
                        if position > fed_from:
                            reader_feed(data, fed_from, position - fed_from)
                        fed_from = completed_at = end + 2
                    else:  # `*-1`, a null array
                        raise RespProtocolError("ERR Protocol error: invalid multibulk length")
                    position = end + 2
                    continue
                if first in RESP_TYPE_BYTES:
                    raise RespProtocolError(f"ERR Protocol error: expected '*', got '{chr(first)}'")
                # Inline command: only reached at a command boundary, so hiredis holds no part
                # of a multibulk and the line can be taken out of the stream.
                if position > fed_from:
                    reader_feed(data, fed_from, position - fed_from)
                    fed_from = position
                if ready:
                    self._commit(ready)
                    ready = 0
                position = fed_from = completed_at = self._start_inline(data, position)
            if position < size:
                # An unfinished header line: kept until its CRLF arrives.
                if size - position > HEADER_LINE_LIMIT + 1:
                    raise RespProtocolError("ERR Protocol error: too big count string")
                self._carry = data[position:]
        except (RespProtocolError, ValueError) as failure:
            if isinstance(failure, RespProtocolError):
                error = failure
            else:  # int() refused a header
                kind = "bulk" if in_command else "multibulk"
                error = RespProtocolError(f"ERR Protocol error: invalid {kind} length")
            # Deliver what was complete before the error, then the error.
            if completed_at > fed_from:
                reader_feed(data, fed_from, completed_at - fed_from)
            if ready:
                self._commit(ready)
            self._error = error
            return
        fed_until = min(position, size)
        if fed_until > fed_from:
            reader_feed(data, fed_from, fed_until - fed_from)
        if ready:
            self._commit(ready)
        self._skip = position - size if position > size else 0
        self._arguments_left = arguments_left
        self._in_command = in_command
        self._command_received = fed_until - command_start if in_command else 0

    def _start_inline(self, data: bytes, position: int) -> int:
        """Take the inline line starting at `position`; return where scanning resumes."""
        newline = data.find(b"\n", position)
        if newline < 0:
            # One byte of slack: a final CR is stripped once the LF arrives.
            if len(data) - position > self._max_inline_bytes + 1:
                raise RespProtocolError("ERR Protocol error: too big inline request")
            self._inline = bytearray(data[position:])
            return len(data)
        self._finish_inline(data[position:newline])
        return newline + 1

    def _continue_inline(self, data: bytes) -> int:
        """Extend the unfinished inline line with `data`; return where scanning resumes."""
        inline = self._inline
        assert inline is not None
        newline = data.find(b"\n")
        end = len(data) if newline < 0 else newline
        if len(inline) + end > self._max_inline_bytes + 1:
            raise RespProtocolError("ERR Protocol error: too big inline request")
        inline += data[:end]
        if newline < 0:
            return end
        self._inline = None
        self._finish_inline(bytes(inline))
        return newline + 1

    def _finish_inline(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self._max_inline_bytes:
            raise RespProtocolError("ERR Protocol error: too big inline request")
        arguments = split_inline(line)
        if arguments:
            self._queue.append(arguments)


INLINE_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
WHITESPACE = frozenset(b" \t\r\n\x0b\x0c")
DOUBLE_QUOTE = 34
SINGLE_QUOTE = 39
BACKSLASH = 92


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command into arguments, with redis-cli style quoting:
    "double quotes" understand \\n, \\r, \\t, \\xHH and \\" escapes, 'single quotes' only \\'."""
    if b'"' not in line and b"'" not in line:
        return line.split()
    arguments: list[bytes] = []
    position = 0
    size = len(line)
    while True:
        while position < size and line[position] in WHITESPACE:
            position += 1
        if position >= size:
            return arguments
        argument = bytearray()
        quote = 0
        while position < size:
            byte = line[position]
            if not quote:
                if byte in WHITESPACE:
                    break
                if byte == DOUBLE_QUOTE or byte == SINGLE_QUOTE:
                    quote = byte
                else:
                    argument.append(byte)
                position += 1
                continue
            if byte == quote:
                # A closing quote must end the argument.
                position += 1
                if position < size and line[position] not in WHITESPACE:
                    raise RespProtocolError("ERR Protocol error: unbalanced quotes in request")
                quote = 0
                break
            if byte == BACKSLASH and position + 1 < size:
                escaped = line[position + 1]
                if quote == SINGLE_QUOTE:
                    if escaped == SINGLE_QUOTE:
                        argument.append(SINGLE_QUOTE)
                        position += 2
                        continue
                elif (
                    escaped == ord("x")
                    and position + 3 < size
                    and line[position + 2] in HEX_DIGITS
                    and line[position + 3] in HEX_DIGITS
                ):
                    argument.append(int(line[position + 2 : position + 4], 16))
                    position += 4
                    continue
                else:
                    argument.append(INLINE_ESCAPES.get(escaped, escaped))
                    position += 2
                    continue
            argument.append(byte)
            position += 1
        if quote:
            raise RespProtocolError("ERR Protocol error: unbalanced quotes in request")
        arguments.append(bytes(argument))


def _line_text(text: str) -> bytes:
    """Status and error replies are single lines: CR/LF would corrupt the stream, so they
    become spaces, as in Redis."""
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return text.encode("utf-8", "replace")


def encode_simple(text: str) -> bytes:
    """A status reply such as `+OK`."""
    return b"+%b\r\n" % _line_text(text)


def encode_error(text: str) -> bytes:
    """An error reply; `text` starts with the error code, e.g. "ERR unknown command 'FOO'"."""
    return b"-%b\r\n" % _line_text(text)


def encode_integer(number: int) -> bytes:
    return b":%d\r\n" % number


def encode_bulk(value: bytes | None) -> bytes:
    """A binary-safe string reply; None is the null bulk string."""
    if value is None:
        return NULL_BULK
    return b"$%d\r\n%b\r\n" % (len(value), value)


def encode_null_array() -> bytes:
    return NULL_ARRAY


ArrayItem = bytes | None | int | list["ArrayItem"]


def encode_array(items: list[ArrayItem]) -> bytes:
    """An array reply of bulk strings, nulls, integers and nested arrays."""
    parts: list[bytes] = []
    _encode_array_into(items, parts)
    return b"".join(parts)


def _encode_array_into(items: list[ArrayItem], parts: list[bytes]) -> None:
    append = parts.append
    append(b"*%d\r\n" % len(items))
    for item in items:
        if type(item) is bytes:
            append(b"$%d\r\n%b\r\n" % (len(item), item))
        elif item is None:
            append(NULL_BULK)
        elif isinstance(item, int):
            append(b":%d\r\n" % item)
        elif isinstance(item, list | tuple):
            _encode_array_into(item, parts)
        elif isinstance(item, bytearray | memoryview):
            append(b"$%d\r\n%b\r\n" % (len(item), item))
        else:
            raise TypeError(f"cannot encode {type(item).__name__} in a RESP array")
