"""In-process tests of the peer transport (`runtime/transport.py`) on loopback.

Two or three `PeerTransport`s run on one event loop (asyncio and uvloop), each on its own
free 127.0.0.1 port. Nothing here starts a process; every transport is closed by the test.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvloop

from quorumdb.core.cluster import Member
from quorumdb.core.messages import ForwardReply, ForwardRequest, Get, Outcome, Put
from quorumdb.runtime.frame_codec import FrameDecoder, FrameError, encode_frame, encode_frames
from quorumdb.runtime.transport import HELLO, PeerTransport, TransportLimits
from quorumdb.runtime.wire import pack_message

WAIT_SECONDS = 5.0
LIMITS = TransportLimits(
    max_frame_bytes=1024 * 1024,
    backoff_initial_ms=50,
    backoff_max_ms=200,
    connect_timeout_ms=500,
)


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports that were free a moment ago (bound with port 0, then closed)."""
    probes = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.bind(("127.0.0.1", 0))
            probes.append(probe)
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def make_members(count: int) -> tuple[Member, ...]:
    return tuple(
        Member(f"node{index}", "127.0.0.1", peer_port=port, resp_port=0, http_port=0)
        for index, port in enumerate(free_ports(count))
    )


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    """Run a test coroutine to completion on a fresh loop of the chosen kind, with a bound."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(coroutine: Coroutine[Any, Any, None]) -> None:
        async def bounded() -> None:
            await asyncio.wait_for(coroutine, 30)

        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(bounded())

    return runner


class Peer:
    """A transport plus what it received and which peers it was told are unreachable."""

    def __init__(self, node_id: str, members: tuple[Member, ...], fail_on: object = None) -> None:
        self.node_id = node_id
        self.members = members
        self.fail_on = fail_on
        self.received: list[tuple[str, object]] = []
        self.unreachable: list[str] = []
        self.on_report: Callable[[str], None] | None = None  # runs inside each report
        self.transport: PeerTransport | None = None

    def _on_unreachable(self, peer: str) -> None:
        self.unreachable.append(peer)
        if self.on_report is not None:
            self.on_report(peer)

    def _on_message(self, source: str, message: object) -> None:
        if self.fail_on is not None and message == self.fail_on:
            raise KeyError("the handler failed on this message")
        self.received.append((source, message))

    async def start(self) -> PeerTransport:
        loop = asyncio.get_running_loop()
        self.transport = PeerTransport(
            self.node_id, self.members, self._on_message, self._on_unreachable, loop, LIMITS
        )
        await self.transport.start()
        return self.transport

    async def stop(self) -> None:
        transport = self.transport
        if transport is None:
            return
        self.transport = None
        transport.close()
        if transport.server is not None:
            await transport.server.wait_closed()
        await asyncio.sleep(0)  # let connection_lost callbacks run

    def messages_from(self, source: str) -> list[object]:
        return [message for origin, message in self.received if origin == source]


async def wait_until(condition: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.005)


async def started(*peers: Peer) -> None:
    for peer in peers:
        await peer.start()


async def stopped(*peers: Peer) -> None:
    for peer in peers:
        await peer.stop()


def with_peers(
    count: int, body: Callable[..., Awaitable[None]], **options: Any
) -> Coroutine[Any, Any, None]:
    async def scenario() -> None:
        members = make_members(count)
        peers = [Peer(member.node_id, members, **options) for member in members]
        await started(*peers)
        try:
            await body(*peers)
        finally:
            await stopped(*peers)

    return scenario()


# --- delivery and order ------------------------------------------------------------------


def test_messages_arrive_in_order_in_both_directions_between_three_nodes(run) -> None:
    async def body(a: Peer, b: Peer, c: Peer) -> None:
        assert a.transport and b.transport and c.transport
        count = 600
        for index in range(count):
            request = ForwardRequest(index, 1, Get("default", b"key:%d" % index))
            a.transport.send("node1", request)
            b.transport.send("node0", ForwardReply(index, Outcome(b"v%d" % index)))
            c.transport.send("node1", index)
            if index % 97 == 0:
                await asyncio.sleep(0)  # spread the sends over several turns
        await wait_until(lambda: len(b.received) == 2 * count, "b to receive everything")
        await wait_until(lambda: len(a.received) == count, "a to receive everything")
        from_a = b.messages_from("node0")
        assert [message.forward_id for message in from_a] == list(range(count))
        assert from_a[5] == ForwardRequest(5, 1, Get("default", b"key:5"))
        assert b.messages_from("node2") == list(range(count))
        replies = a.messages_from("node1")
        assert [reply.forward_id for reply in replies] == list(range(count))
        assert replies[7].outcome == Outcome(b"v7")
        assert a.transport.sent_message_count == count
        assert b.transport.received_message_count == 2 * count
        assert a.unreachable == b.unreachable == c.unreachable == []

    run(with_peers(3, body))


def test_everything_sent_in_one_turn_leaves_in_one_socket_write(run) -> None:
    async def body(a: Peer, b: Peer) -> None:
        assert a.transport
        a.transport.send("node1", "connect")
        await wait_until(lambda: len(b.received) == 1, "the first message")
        outbound = a.transport.outbound["node1"]
        writer = outbound.writer
        assert writer is not None
        writes: list[int] = []
        original_write = writer.write

        def counting_write(data: bytes) -> None:
            writes.append(len(data))
            original_write(data)

        writer.write = counting_write  # type: ignore[method-assign]
        batch = [Put("default", b"k%d" % index, b"x" * 20) for index in range(500)]
        for message in batch:  # one turn: no await between these sends
            a.transport.send("node1", message)
        await wait_until(lambda: len(b.received) == 501, "the batch")
        assert writes == [len(encode_frames([pack_message(m) for m in batch]))]
        assert b.messages_from("node0")[1:] == batch

        # The counting write does tell turns apart: two turns, two writes.
        a.transport.send("node1", "turn 1")
        await asyncio.sleep(0.01)
        a.transport.send("node1", "turn 2")
        await wait_until(lambda: len(b.received) == 503, "two more messages")
        assert len(writes) == 3

    run(with_peers(2, body))


# --- peers going away and coming back ----------------------------------------------------


def test_peer_restart_is_reported_and_nothing_sent_afterwards_vanishes(run) -> None:
    """The receiving transport stops (its connections close) and comes back on the same
    port before the sender writes again: the sender must notice the closed connection and
    report it, and the next message must arrive over a new one, not be written into the
    dead socket and silently lost."""

    async def body(a: Peer, b: Peer) -> None:
        assert a.transport
        a.transport.send("node1", "before")
        await wait_until(lambda: b.received == [("node0", "before")], "the first message")
        await b.stop()
        await wait_until(lambda: a.unreachable == ["node1"], "node1 reported unreachable")
        restarted = Peer("node1", b.members)
        await restarted.start()
        try:
            for index in range(3):
                a.transport.send("node1", f"after {index}")
                await asyncio.sleep(0)
            expected = [("node0", f"after {index}") for index in range(3)]
            await wait_until(lambda: restarted.received == expected, "messages after restart")
            assert a.unreachable == ["node1"]
        finally:
            await restarted.stop()

    run(with_peers(2, body))


def test_unreachable_peer_backoff_grows_to_the_cap_then_messages_flow_again(run) -> None:
    async def body(a: Peer, b: Peer) -> None:
        assert a.transport
        outbound = a.transport.outbound["node1"]
        a.transport.send("node1", "hello")
        await wait_until(lambda: len(b.received) == 1, "the first message")
        await b.stop()
        await wait_until(lambda: len(a.unreachable) == 1, "the lost connection reported")
        assert outbound.backoff_ms == LIMITS.backoff_initial_ms

        # The report of a failed attempt runs while its backoff has just begun: a message
        # sent then must fail fast (reported again) without starting another attempt.
        probed: list[bool] = []

        def probe_during_backoff(peer: str) -> None:
            if len(probed) < len(backoffs) + 1:
                probed.append(outbound.backing_off and outbound.connecting)
                a.transport.send("node1", "during backoff")

        a.on_report = probe_during_backoff
        backoffs: list[int] = []
        for attempt in range(5):
            await wait_until(lambda: not outbound.connecting, "the previous attempt to end")
            reported = len(a.unreachable)
            a.transport.send("node1", f"lost {attempt}")
            await wait_until(lambda r=reported: len(a.unreachable) == r + 2, "two reports")
            await wait_until(lambda: not outbound.connecting, "the backoff to end")
            backoffs.append(outbound.backoff_ms)
        a.on_report = None
        assert probed == [True] * 5
        initial, cap = LIMITS.backoff_initial_ms, LIMITS.backoff_max_ms
        assert backoffs == [2 * initial, 4 * initial, cap, cap, cap], backoffs
        assert set(a.unreachable) == {"node1"}

        restarted = Peer("node1", b.members)
        await restarted.start()
        try:
            await wait_until(lambda: not outbound.connecting, "the last backoff to end")
            for index in range(50):
                a.transport.send("node1", index)
            expected = [("node0", index) for index in range(50)]
            await wait_until(lambda: restarted.received == expected, "messages after restart")
            assert outbound.backoff_ms == initial  # reset by the successful connection
        finally:
            await restarted.stop()

    run(with_peers(2, body))


def test_never_started_peer_is_reported_unreachable_and_messages_are_dropped(run) -> None:
    async def scenario() -> None:
        members = make_members(2)
        a = Peer("node0", members)
        await a.start()
        try:
            assert a.transport
            for index in range(10):
                a.transport.send("node1", index)
            await wait_until(lambda: a.unreachable[:1] == ["node1"], "node1 unreachable")
            outbound = a.transport.outbound["node1"]
            await wait_until(lambda: not outbound.connecting, "the backoff to end")
            assert outbound.queue == []
        finally:
            await a.stop()

    run(scenario())


def test_a_peer_that_starts_later_gets_our_replies_once_it_connects_to_us(run) -> None:
    """node1 starts after node0 tried to reach it: node0 is backing off. When node1
    connects and speaks, node0's answers to it must be delivered, not failed fast."""

    async def scenario() -> None:
        members = make_members(2)
        a, b = Peer("node0", members), Peer("node1", members)
        await a.start()
        try:
            assert a.transport
            a.transport.send("node1", "too early")
            await wait_until(lambda: a.unreachable[:1] == ["node1"], "node1 unreachable")
            outbound = a.transport.outbound["node1"]
            assert outbound.backing_off
            await b.start()
            assert b.transport
            b.transport.send("node0", "request")
            await wait_until(lambda: a.messages_from("node1") == ["request"], "b's request")
            assert not outbound.backing_off  # b's hello proved it alive
            a.transport.send("node1", "reply")
            await wait_until(lambda: b.messages_from("node0") == ["reply"], "the reply")
        finally:
            await stopped(a, b)

    run(scenario())


# --- a peer speaking garbage -------------------------------------------------------------


def _frame_with_bad_checksum(obj: object) -> bytes:
    frame = bytearray(encode_frame(obj))
    frame[4] ^= 0xFF
    return bytes(frame)


def _hello(node_id: object) -> bytes:
    return encode_frame([HELLO, node_id])


GARBAGE_CASES = {
    "oversized length": struct.pack(">II", 0xFFFF_FFFF, 0) + b"xxxx",
    "bad checksum": _frame_with_bad_checksum([HELLO, "node0"]),
    "not a hello": encode_frame("hi there"),
    "hello of an unknown node": _hello("node9"),
    "hello with a wrong protocol": encode_frame(["quorumdb-peer-0", "node0"]),
    "hello with an unhashable id": encode_frame([HELLO, ["node0"]]),
    "hello claiming the receiver's own id": _hello("node1") + encode_frame(pack_message(1)),
    "hello then undecodable message": _hello("node0") + encode_frame(b"\xc1\xc1"),
    "hello then a payload that is not bytes": _hello("node0") + encode_frame(12),
    "hello then an unknown extension": _hello("node0") + encode_frame(b"\xd4\x63\x00"),
    "hello then a message the handler fails on": _hello("node0")
    + encode_frame(pack_message("poison")),
}


async def _send_raw(port: int, data: bytes, wait_seconds: float = 2.0) -> bytes | None:
    """Send `data` on a new connection; what came back once the other side closed it, or
    None if it was still open after `wait_seconds`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        try:
            return await asyncio.wait_for(reader.read(), wait_seconds)
        except (ConnectionResetError, BrokenPipeError):
            return b""
        except TimeoutError:
            return None
    finally:
        writer.close()


def _must_be_rejected(data: bytes) -> bool:
    """Whether a receiver must drop a connection that sent `data`: a framing error, or any
    complete frame other than one valid hello from node0 (random bytes never carry a good
    checksum, so nothing after the hello can be a valid message)."""
    try:
        frames = FrameDecoder(LIMITS.max_frame_bytes).feed(data)
    except FrameError:
        return True
    return frames not in ([], [[HELLO, "node0"]])


def test_garbage_peers_are_disconnected_and_counted_while_real_peers_keep_working(run) -> None:
    async def body(a: Peer, b: Peer) -> None:
        assert a.transport and b.transport
        port = b.members[1].peer_port
        a.transport.send("node1", "before")
        await wait_until(lambda: len(b.received) == 1, "the first message")
        for number, (case, data) in enumerate(GARBAGE_CASES.items(), start=1):
            answer = await _send_raw(port, data)
            assert answer == b"", f"{case}: connection not closed by the receiver"
            await wait_until(
                lambda number=number: b.transport.rejected_connection_count == number,
                f"{case} counted as rejected",
            )
            a.transport.send("node1", f"after {case}")
            await wait_until(lambda number=number: len(b.received) == 1 + number, case)
        # Only the real peer's messages were delivered, in order, and it never broke.
        assert [message for _, message in b.received] == ["before"] + [
            f"after {case}" for case in GARBAGE_CASES
        ]
        assert {source for source, _ in b.received} == {"node0"}
        assert a.unreachable == []
        assert len(b.transport.inbound) == 1

    run(with_peers(2, body, fail_on="poison"))


def test_random_bytes_from_a_stranger_never_reach_the_node(run) -> None:
    seed = int(os.environ.get("QUORUMDB_FUZZ_SEED", random.randrange(2**32)))
    print(f"transport fuzz seed {seed} (replay with QUORUMDB_FUZZ_SEED={seed})")
    chooser = random.Random(seed)
    rounds = 20

    async def body(a: Peer, b: Peer) -> None:
        assert a.transport and b.transport
        port = b.members[1].peer_port
        rejected = 0
        for round_number in range(rounds):
            data = chooser.randbytes(chooser.randrange(1, 200))
            if chooser.random() < 0.5:  # a valid hello first, then garbage
                data = _hello("node0") + data
            context = f"seed {seed} round {round_number} data {data!r}"
            if _must_be_rejected(data):
                rejected += 1
                assert await _send_raw(port, data) == b"", f"{context}: not disconnected"
            else:  # an unfinished frame: the receiver waits for the rest
                assert await _send_raw(port, data, 0.2) is None, f"{context}: answered"
            assert b.transport.rejected_connection_count == rejected, context
            a.transport.send("node1", round_number)
            await wait_until(lambda n=round_number: len(b.received) == n + 1, "a real message")
        assert rejected > rounds // 2, f"seed {seed}: only {rejected} rejected"
        assert [message for _, message in b.received] == list(range(rounds))
        assert a.unreachable == []

    run(with_peers(2, body))
