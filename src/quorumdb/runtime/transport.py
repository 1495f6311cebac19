"""TCP between nodes: checksummed msgpack frames, batched per peer, reconnecting with backoff.

Every message to one peer issued during an event-loop turn goes out in one write.
A peer that sends garbage (bad checksum, oversized frame, undecodable message) is
disconnected and logged; the node keeps serving everyone else.

An outbound connection is only ever written to, so a task watches its read side: the
peer closing it (a crash or a restart) is noticed at once and reported through
`on_unreachable`, instead of the next batch vanishing into a half-closed socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from quorumdb.core.cluster import Member
from quorumdb.runtime.frame_codec import FrameDecoder, FrameError, encode_frames
from quorumdb.runtime.wire import WireError, pack_message, unpack_message

LOG = logging.getLogger(__name__)
HELLO = "quorumdb-peer-1"


@dataclass(frozen=True, slots=True)
class TransportLimits:
    max_frame_bytes: int = 80 * 1024 * 1024
    backoff_initial_ms: int = 50
    backoff_max_ms: int = 2_000
    max_queued_messages: int = 100_000
    connect_timeout_ms: int = 1_000
    hello_timeout_ms: int = 5_000


class _Inbound(asyncio.Protocol):
    def __init__(self, owner: PeerTransport) -> None:
        self.owner = owner
        self.decoder = FrameDecoder(owner.limits.max_frame_bytes)
        self.peer: str | None = None
        self.transport: asyncio.Transport | None = None
        self.rejected = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.owner.inbound.add(self)
        # A stranger that connects and never introduces itself does not keep the socket.
        self.owner.loop.call_later(self.owner.limits.hello_timeout_ms / 1000, self._hello_due)

    def _hello_due(self) -> None:
        if self.peer is None and not self.rejected and self.transport is not None:
            self._reject("no hello in time")

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.inbound.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.rejected:
            return
        try:
            frames = self.decoder.feed(data)
            for frame in frames:
                self._on_frame(frame)
        except (FrameError, WireError, TypeError, ValueError) as error:
            self._reject(f"malformed traffic: {error}")
        except Exception as error:
            # A well-framed message whose fields make the node fail (a record of the right
            # type holding values of the wrong types): still the peer's traffic, and it must
            # not escape into the event loop, which would drop the connection uncounted.
            LOG.exception("handling a message from peer %s failed", self.peer)
            self._reject(f"message could not be handled: {error!r:.200}")

    def _on_frame(self, frame: object) -> None:
        if self.rejected:
            return
        if self.peer is None:
            if (
                not isinstance(frame, list | tuple)
                or len(frame) != 2
                or frame[0] != HELLO
                or not isinstance(frame[1], str)
                or frame[1] not in self.owner.members
                or frame[1] == self.owner.node_id
            ):
                raise ValueError(f"bad hello {frame!r:.80}")
            self.peer = frame[1]
            self.owner.outbound[frame[1]].peer_alive()
            return
        if not isinstance(frame, bytes):
            raise ValueError("frame payload is not a packed message")
        self.owner.deliver(self.peer, unpack_message(frame))

    def _reject(self, reason: str) -> None:
        if self.rejected:
            return
        self.rejected = True
        peername = self.transport.get_extra_info("peername") if self.transport else None
        LOG.warning("disconnecting peer %s (%s): %s", self.peer, peername, reason)
        self.owner.rejected_connection_count += 1
        if self.transport is not None:
            self.transport.abort()


class _Outbound:
    """One connection to one peer, with a queue that survives reconnects."""

    def __init__(self, owner: PeerTransport, member: Member) -> None:
        self.owner = owner
        self.member = member
        self.queue: list[bytes] = []
        self.writer: asyncio.StreamWriter | None = None
        self.connecting = False
        self.backoff_ms = owner.limits.backoff_initial_ms
        self.flush_scheduled = False
        self.backing_off = False

    def enqueue(self, payload: bytes) -> None:
        if self.backing_off:
            self.owner.unreachable(self.member.node_id)
            return
        if len(self.queue) >= self.owner.limits.max_queued_messages:
            LOG.warning("queue to %s is full; dropping a message", self.member.node_id)
            return
        self.queue.append(payload)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.owner.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if not self.queue or self.owner.closed:
            return
        writer = self.writer
        if writer is None or writer.is_closing():
            self.writer = None
            if not self.connecting:
                self.connecting = True
                self.owner.spawn(self._connect())
            return
        batch, self.queue = self.queue, []
        writer.write(encode_frames(batch, self.owner.limits.max_frame_bytes))

    async def _connect(self) -> None:
        limits = self.owner.limits
        try:
            connection = asyncio.open_connection(self.member.host, self.member.peer_port)
            reader, writer = await asyncio.wait_for(connection, limits.connect_timeout_ms / 1000)
        except (TimeoutError, OSError) as error:
            LOG.debug("cannot reach %s: %s", self.member.node_id, error)
            self.queue = []
            self.backing_off = True
            self.owner.unreachable(self.member.node_id)
            # Stay in `connecting` through the backoff: messages sent meanwhile fail
            # fast (see enqueue) instead of each starting a new connection attempt.
            try:
                await asyncio.sleep(self.backoff_ms / 1000)
            finally:
                self.backoff_ms = min(self.backoff_ms * 2, limits.backoff_max_ms)
                self.connecting = False
                self.backing_off = False
            if self.queue:
                self._schedule_flush()  # queued after the peer proved alive (see peer_alive)
            return
        self.connecting = False
        if self.owner.closed:
            writer.close()
            return
        self.backoff_ms = limits.backoff_initial_ms
        writer.write(encode_frames([[HELLO, self.owner.node_id]]))
        self.writer = writer
        self.owner.spawn(self._watch(reader, writer))
        self.flush()

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Wait for the end of the connection: peers never write on it, so any end of
        the read side (EOF, reset, or a write error that closed the transport) means the
        peer is gone and whatever was written since it went may be lost."""
        try:
            while await reader.read(64 * 1024):
                pass
        except Exception as error:  # a reset or a broken pipe: the connection is over
            LOG.debug("connection to %s broke: %r", self.member.node_id, error)
        if self.writer is not writer:
            return  # closed by us, or already replaced by a newer connection
        self.writer = None
        writer.close()
        if self.owner.closed:
            return
        LOG.info("connection to peer %s lost", self.member.node_id)
        self.owner.unreachable(self.member.node_id)
        if self.queue:
            self._schedule_flush()  # reconnect for what was queued meanwhile

    def peer_alive(self) -> None:
        """The peer just connected to us, so it is up: stop failing messages to it fast
        (a node that started after us would otherwise lose our replies to it until the
        backoff ends) and queue them for the connection the backoff's end will make."""
        self.backing_off = False
        self.backoff_ms = self.owner.limits.backoff_initial_ms

    def close(self) -> None:
        self.queue = []
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class PeerTransport:
    def __init__(
        self,
        node_id: str,
        members: tuple[Member, ...],
        on_message: Callable[[str, object], None],
        on_unreachable: Callable[[str], None],
        loop: asyncio.AbstractEventLoop,
        limits: TransportLimits | None = None,
    ) -> None:
        self.node_id = node_id
        self.members = {member.node_id: member for member in members}
        self.on_message = on_message
        self.on_unreachable = on_unreachable
        self.loop = loop
        self.limits = limits or TransportLimits()
        self.inbound: set[_Inbound] = set()
        self.outbound = {
            member.node_id: _Outbound(self, member)
            for member in members
            if member.node_id != node_id
        }
        self.server: asyncio.AbstractServer | None = None
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent_message_count = 0
        self.received_message_count = 0
        self.rejected_connection_count = 0

    async def start(self) -> None:
        member = self.members[self.node_id]
        self.server = await self.loop.create_server(
            lambda: _Inbound(self), member.host, member.peer_port, reuse_address=True
        )

    def update_members(self, members: tuple[Member, ...]) -> None:
        """Follow the cluster's member list (a node joined, left, or moved ports): new
        peers get a connection, peers that are gone lose theirs."""
        wanted = {member.node_id: member for member in members}
        wanted.setdefault(self.node_id, self.members[self.node_id])
        for node_id, outbound in list(self.outbound.items()):
            if wanted.get(node_id) != self.members.get(node_id):
                outbound.close()
                del self.outbound[node_id]
        for node_id, member in wanted.items():
            if node_id != self.node_id and node_id not in self.outbound:
                self.outbound[node_id] = _Outbound(self, member)
        self.members = wanted

    def send(self, destination: str, message: object) -> None:
        if self.closed:
            return  # e.g. a reply released by the final fsync while the node stops
        outbound = self.outbound.get(destination)
        if outbound is None:
            self.unreachable(destination)  # not (or no longer) a member
            return
        self.sent_message_count += 1
        outbound.enqueue(pack_message(message))

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a connection task, kept so that `close()` can cancel it."""
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def deliver(self, source: str, message: object) -> None:
        self.received_message_count += 1
        self.on_message(source, message)

    def unreachable(self, peer: str) -> None:
        """Reported on a later turn so the node is never re-entered mid-effects."""
        self.loop.call_soon(self._report_unreachable, peer)

    def _report_unreachable(self, peer: str) -> None:
        if not self.closed:
            self.on_unreachable(peer)

    def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        if self.server is not None:
            self.server.close()
        for outbound in self.outbound.values():
            outbound.close()
        for inbound in list(self.inbound):
            if inbound.transport is not None:
                inbound.transport.close()
