"""The request parser the server uses: hiredis directly, with checks after the fact.

`RespRequestParser` validates every header in Python before hiredis sees a byte, which
costs more than everything else a GET does. Real clients (redis-py, redis-cli,
redis-benchmark, every Redis library) only send multibulk requests, so this parser hands
bytes straight to hiredis and checks each parsed command instead: an array of byte
strings, within the argument limit, and no more than `max_request_bytes` held while a
request is incomplete. A connection whose input starts a command with anything but `*`
(an inline command typed into telnet or nc) switches, for good, to the exact parser.
"""

from __future__ import annotations

import hiredis

from quorumdb.api.resp_protocol import RespLimits, RespProtocolError, RespRequestParser

_ASTERISK = 42


class FastRequestParser:
    __slots__ = ("_reader", "_limits", "_exact", "_error", "_at_boundary")

    def __init__(self, limits: RespLimits | None = None) -> None:
        self._limits = limits if limits is not None else RespLimits()
        self._reader = hiredis.Reader()
        self._exact: RespRequestParser | None = None
        self._error: RespProtocolError | None = None
        self._at_boundary = True

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
        if self._at_boundary and data[0] != _ASTERISK:
            self._exact = RespRequestParser(self._limits)
            self._exact.feed(data)
            return
        self._at_boundary = False
        self._reader.feed(data)

    def next_command(self) -> list[bytes] | None:
        if self._exact is not None:
            return self._exact.next_command()
        if self._error is not None:
            raise self._error
        reader = self._reader
        while True:
            try:
                command = reader.gets()
            except hiredis.ProtocolError as error:
                raise self._fail(f"ERR Protocol error: {str(error).lower()}") from None
            if command is False:
                held = reader.len()
                if held > self._limits.max_request_bytes:
                    raise self._fail("ERR Protocol error: request too large")
                self._at_boundary = held == 0
                return None
            if type(command) is not list:
                raise self._fail("ERR Protocol error: expected an array of bulk strings")
            if not command:
                continue  # `*0`: Redis ignores it
            for argument in command:
                if type(argument) is not bytes:
                    raise self._fail("ERR Protocol error: expected an array of bulk strings")
            if len(command) > self._limits.max_arguments:
                raise self._fail("ERR Protocol error: invalid multibulk length")
            return command

    def _fail(self, message: str) -> RespProtocolError:
        self._error = RespProtocolError(message)
        return self._error
