"""A bare asyncio RESP server over a dict: the ceiling for any Python server here.

    python scripts/bare_resp_server.py PORT [--ready-replies]

GET and SET only (anything else answers +OK), parsed with hiredis on uvloop: no limits,
no error handling, no metrics, no keyspaces, no durability. It is not part of quorumdb;
`scripts/benchmark.py --sections ceiling` runs it beside Redis and quorumdb to show how
much of the gap to Redis is Python and asyncio themselves rather than quorumdb's work.
`--ready-replies` stores each value as its encoded GET reply (as quorumdb's reply cache
keeps hot keys'), so a GET is a dict lookup and nothing else.
"""

from __future__ import annotations

import asyncio
import sys

import hiredis
import uvloop

STORE: dict[bytes, bytes] = {}
READY_REPLIES = "--ready-replies" in sys.argv


class BareProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        replies = []
        while (command := reader.gets()) is not False:
            name = command[0].upper()
            if name == b"GET":
                value = STORE.get(command[1])
                if value is None:
                    replies.append(b"$-1\r\n")
                elif READY_REPLIES:
                    replies.append(value)
                else:
                    replies.append(b"$%d\r\n%b\r\n" % (len(value), value))
            elif name == b"SET":
                value = command[2]
                STORE[command[1]] = (
                    b"$%d\r\n%b\r\n" % (len(value), value) if READY_REPLIES else value
                )
                replies.append(b"+OK\r\n")
            else:
                replies.append(b"+OK\r\n")
        self.transport.write(b"".join(replies))


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(BareProtocol, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
