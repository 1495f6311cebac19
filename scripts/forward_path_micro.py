"""Microseconds of Python per forwarded request, node to node, without sockets.

Two `Node`s on in-memory disks (`SimDisk`): every operation is sent by node0 to a key
that node1 owns, and the whole round trip runs in process, as the runtimes would:

    node0.on_client_request -> pack_message -> encode_frames -> FrameDecoder.feed
    -> unpack_message -> node1.on_message (persist applied) -> ForwardReply back the
    same way -> node0.on_message -> Reply

Half GETs, half SETs of 16-byte keys and 3-byte values (the `quorumdb bench` mix). It
prints the round trip and each stage alone, so a change shows where it moved the cost.

    python scripts/forward_path_micro.py [--requests 50000] [--repeat 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import time
from collections.abc import Callable

from quorumdb.core.cluster import Member
from quorumdb.core.effects import Effect, Persist, Reply, Send
from quorumdb.core.messages import ForwardReply, ForwardRequest, Get, Operation, Outcome, Put
from quorumdb.core.node import Node
from quorumdb.runtime.frame_codec import FrameDecoder, encode_frames
from quorumdb.runtime.wire import pack_message, unpack_message
from quorumdb.storage.sim_disk import SimDisk

MEMBERS = tuple(Member(f"node{i}", "127.0.0.1", 19000 + i, 0, 0) for i in range(2))


def make_nodes() -> tuple[Node, Node, SimDisk]:
    disk1 = SimDisk()
    return Node("node0", MEMBERS, SimDisk()), Node("node1", MEMBERS, disk1), disk1


def remote_operations(node0: Node, count: int) -> list[Operation]:
    """Alternating SET and GET of keys node1 owns (a GET reads the key just set)."""
    placement = node0.partition_map.keyspaces["default"]
    operations: list[Operation] = []
    index = 0
    while len(operations) < count:
        key = b"key:%012d" % index
        index += 1
        if placement.owners[placement.strategy.locate(key)] != "node1":
            continue
        operations.append(Put("default", key, b"xxx"))
        operations.append(Get("default", key))
    return operations[:count]


def _sends(effects: list[Effect], disk: SimDisk) -> list[Send]:
    sends = []
    for effect in effects:
        if type(effect) is Persist:
            disk.apply(effect.writes)
        elif type(effect) is Send:
            sends.append(effect)
    return sends


def _without_gc(body: Callable[[], object]) -> float:
    """Seconds `body` takes with the cyclic collector paused: the lists of 100k messages
    held here make its passes long and erratic, which would swamp the code's own cost."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        body()
        return time.perf_counter() - started
    finally:
        gc.enable()


def round_trip(requests: int) -> float:
    """Microseconds per forwarded request, the whole trip."""
    node0, node1, disk1 = make_nodes()
    operations = remote_operations(node0, requests)
    decoder0, decoder1 = FrameDecoder(), FrameDecoder()

    def trips() -> None:
        for request_id, operation in enumerate(operations, 1):
            trip(request_id, operation)

    def trip(request_id: int, operation: Operation) -> None:
        (send,) = node0.on_client_request(0, request_id, operation)
        for message in decoder1.feed(encode_frames([pack_message(send.message)])):
            received = unpack_message(message)  # type: ignore[arg-type]
            for back in _sends(node1.on_message(0, "node0", received), disk1):  # type: ignore[arg-type]
                for frame in decoder0.feed(encode_frames([pack_message(back.message)])):
                    reply = unpack_message(frame)  # type: ignore[arg-type]
                    (answer,) = node0.on_message(0, "node1", reply)  # type: ignore[arg-type]
                    assert type(answer) is Reply and answer.request_id == request_id

    return _without_gc(trips) / len(operations) * 1e6


def stages(requests: int) -> dict[str, float]:
    """Microseconds per message of each stage alone."""
    node0, node1, disk1 = make_nodes()
    operations = remote_operations(node0, requests)
    forwards = [
        ForwardRequest(index, 1, operation, 12345) for index, operation in enumerate(operations)
    ]
    replies = [
        ForwardReply(index, Outcome(b"xxx" if index % 2 else True), 12345)
        for index in range(len(operations))
    ]
    packed = [pack_message(m) for m in forwards + replies]
    frames = encode_frames(packed)

    def timed(body: Callable[[], object], count: int) -> float:
        return _without_gc(body) / count * 1e6

    total = len(packed)
    results = {
        "pack ForwardRequest": timed(lambda: [pack_message(m) for m in forwards], len(forwards)),
        "pack ForwardReply": timed(lambda: [pack_message(m) for m in replies], len(replies)),
        "unpack (both kinds)": timed(lambda: [unpack_message(p) for p in packed], total),
        "frames encode": timed(lambda: encode_frames(packed), total),
        "frames decode": timed(lambda: FrameDecoder().feed(frames), total),
        "node0.on_client_request": timed(
            lambda: [node0.on_client_request(0, i, op) for i, op in enumerate(operations)],
            len(operations),
        ),
    }
    node_forwards = [ForwardRequest(i + 1, 1, op, 0) for i, op in enumerate(operations)]
    results["node1.on_message(request)"] = timed(
        lambda: [_sends(node1.on_message(0, "node0", m), disk1) for m in node_forwards],
        len(node_forwards),
    )
    node_replies = [ForwardReply(i + 1, Outcome(True), 0) for i in range(len(operations))]
    results["node0.on_message(reply)"] = timed(
        lambda: [node0.on_message(0, "node1", m) for m in node_replies], len(node_replies)
    )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(round_trip, args.requests)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return 0
    trips = [round_trip(args.requests) for _ in range(args.repeat)]
    runs = [stages(args.requests) for _ in range(args.repeat)]
    print(f"round trip (median of {args.repeat}): {statistics.median(trips):6.2f} us/request")
    for name in runs[0]:
        print(f"  {name:28} {statistics.median(run[name] for run in runs):6.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
