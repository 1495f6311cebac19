"""TCP between nodes: checksummed msgpack frames, batched per peer, reconnecting with backoff.

Every message to one peer issued during an event-loop turn goes out in one write.
A peer that sends garbage (bad checksum, oversized frame, undecodable message) is
disconnected and logged; the node keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

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


class _Inbound(asyncio.Protocol):
    def __init__(self, owner: PeerTransport) -> None:
        self.owner = owner
        self.decoder = FrameDecoder(owner.limits.max_frame_bytes)
        self.peer: str | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.owner.inbound.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.inbound.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
            for frame in frames:
                self._on_frame(frame)
        except (FrameError, WireError, TypeError, ValueError) as error:
            self._reject(f"malformed traffic: {error}")

    def _on_frame(self, frame: object) -> None:
        if self.peer is None:
            if (
                not isinstance(frame, list | tuple)
                or len(frame) != 2
                or frame[0] != HELLO
                or frame[1] not in self.owner.members
            ):
                raise ValueError(f"bad hello {frame!r:.80}")
            self.peer = frame[1]
            return
        if not isinstance(frame, bytes):
            raise ValueError("frame payload is not a packed message")
        self.owner.deliver(self.peer, unpack_message(frame))

    def _reject(self, reason: str) -> None:
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
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.owner.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if not self.queue:
            return
        writer = self.writer
        if writer is None or writer.is_closing():
            self.writer = None
            if not self.connecting:
                self.connecting = True
                self.owner.loop.create_task(self._connect())
            return
        batch, self.queue = self.queue, []
        writer.write(encode_frames(batch, self.owner.limits.max_frame_bytes))

    async def _connect(self) -> None:
        limits = self.owner.limits
        try:
            connection = asyncio.open_connection(self.member.host, self.member.peer_port)
            _, writer = await asyncio.wait_for(connection, limits.connect_timeout_ms / 1000)
        except (TimeoutError, OSError) as error:
            LOG.debug("cannot reach %s: %s", self.member.node_id, error)
            self.queue = []
            self.backing_off = True
            self.owner.unreachable(self.member.node_id)
            # Stay in `connecting` through the backoff: messages sent meanwhile fail
            # fast (see enqueue) instead of each starting a new connection attempt.
            await asyncio.sleep(self.backoff_ms / 1000)
            self.backoff_ms = min(self.backoff_ms * 2, limits.backoff_max_ms)
            self.connecting = False
            self.backing_off = False
            return
        self.connecting = False
        self.backoff_ms = limits.backoff_initial_ms
        writer.write(encode_frames([[HELLO, self.owner.node_id]]))
        self.writer = writer
        self.flush()

    def close(self) -> None:
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
        self.sent_message_count = 0
        self.received_message_count = 0
        self.rejected_connection_count = 0

    async def start(self) -> None:
        member = self.members[self.node_id]
        self.server = await self.loop.create_server(
            lambda: _Inbound(self), member.host, member.peer_port, reuse_address=True
        )

    def send(self, destination: str, message: object) -> None:
        self.sent_message_count += 1
        self.outbound[destination].enqueue(pack_message(message))

    def deliver(self, source: str, message: object) -> None:
        self.received_message_count += 1
        self.on_message(source, message)

    def unreachable(self, peer: str) -> None:
        """Reported on a later turn so the node is never re-entered mid-effects."""
        self.loop.call_soon(self.on_unreachable, peer)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for outbound in self.outbound.values():
            outbound.close()
        for inbound in list(self.inbound):
            if inbound.transport is not None:
                inbound.transport.close()
