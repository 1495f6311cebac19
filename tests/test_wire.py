"""The node-to-node message codec (`runtime/wire.py`): every record survives the trip with
its types, and a payload that is not a message only ever raises WireError."""

from __future__ import annotations

import random

import msgpack
import pytest

from quorumdb.core.controller.raft_configuration import Configuration
from quorumdb.core.controller.raft_log import EntryKind, LogEntry, Snapshot
from quorumdb.core.controller.raft_messages import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    RequestVote,
    RequestVoteReply,
)
from quorumdb.core.errors import ErrorCode
from quorumdb.core.keyspace import KeyspaceConfig
from quorumdb.core.membership import (
    Ack,
    Fact,
    Gossip,
    Join,
    JoinReply,
    MemberState,
    MemberUpdate,
    Nack,
    Ping,
    PingRequest,
)
from quorumdb.core.messages import (
    Append,
    ChangeMetadata,
    CountPartition,
    CreateKeyspace,
    Delete,
    ForwardReply,
    ForwardRequest,
    Get,
    Increment,
    Outcome,
    Put,
    PutCondition,
    ScanPage,
    ScanPartition,
)
from quorumdb.core.replication.log_format import Change, Entry, Position
from quorumdb.core.replication.messages import (
    LeaderSuspicion,
    PositionQuery,
    PositionReply,
    ReplicaSnapshot,
    ReplicaSnapshotAck,
    Replicate,
    ReplicateReply,
)
from quorumdb.core.transfer import (
    TransferAbort,
    TransferAck,
    TransferData,
    TransferKey,
    TransferOpen,
)
from quorumdb.runtime.wire import WireError, pack_message, unpack_message

MESSAGES: list[object] = [
    ForwardRequest(1, 2, Get("default", b"k"), 3),
    ForwardRequest(1, 2, Put("ks", b"k", b"v"), 3),
    ForwardRequest(
        4, 5, Put("ks", b"k", b"\x00v", PutCondition.IF_ABSENT, 2**62, True, True), 2**60
    ),
    ForwardRequest(1, 2, Put("ks", b"k", b"", PutCondition.IF_PRESENT)),
    ForwardRequest(1, 2, Delete("ks", b"k")),
    ForwardRequest(1, 2, Increment("ks", b"k", -(2**63))),
    ForwardRequest(1, 2, Append("ks", b"k", b"tail")),
    ForwardRequest(1, 2, ScanPartition("ks", 7, b"", 100, True)),
    ForwardRequest(1, 2, ScanPartition("ks", 7, b"a", 100, False, b"\x00end")),
    ForwardRequest(1, 2, CountPartition("ks", 0)),
    ForwardRequest(1, 2, CreateKeyspace(KeyspaceConfig("new", "fixed:8", 1))),
    ForwardReply(1, Outcome(b"value"), 9),
    ForwardReply(1, Outcome(None)),
    ForwardReply(1, Outcome(True)),
    ForwardReply(1, Outcome(False, message="not-applied")),
    ForwardReply(1, Outcome(-5)),
    ForwardReply(1, Outcome(None, ErrorCode.MOVED, "owner is node2")),
    ForwardReply(1, Outcome(ScanPage(((b"a", b"1"), (b"b", b"")), b"c"))),
    ForwardReply(1, Outcome(ScanPage((), None))),
    ForwardRequest(3, 4, CreateKeyspace(KeyspaceConfig("x", "ring:vnodes=16", 1))),
    RequestVote(3, 10, 2, True),
    RequestVoteReply(3, False, True),
    AppendEntries(
        4,
        9,
        3,
        (
            LogEntry(10, 4, EntryKind.NOOP),
            LogEntry(11, 4, EntryKind.COMMAND, b'{"op": "x"}'),
            LogEntry(
                12,
                4,
                EntryKind.CONFIGURATION,
                configuration=Configuration(frozenset({"a", "b"}), frozenset({"c"})),
            ),
        ),
        8,
        5,
    ),
    AppendEntries(4, 0, 0, (), 0),
    AppendEntriesReply(4, False, 0, 12, 10, 3, 5),
    InstallSnapshot(5, Snapshot(40, 4, Configuration(frozenset({"a"})), b"\x00state")),
    InstallSnapshotReply(5, 40),
    TransferOpen(TransferKey(3, 1, 77), "ks", 4, 9),
    Ping(
        7,
        "127.0.0.1:7200",
        3,
        (
            MemberUpdate("node1", "127.0.0.1:7201", MemberState.SUSPECT, 4, ("node0", "node2")),
            MemberUpdate("node2", "127.0.0.1:7202", MemberState.ALIVE, 0),
        ),
        (Fact("map-version", 12, b""),),
    ),
    Ack(7, "node1", "127.0.0.1:7201", 5),
    PingRequest(8, "node2", "127.0.0.1:7200", 3),
    Nack(8, "node2", "127.0.0.1:7201", 5, (), (Fact("x", 1, b"\x00"),)),
    Gossip("127.0.0.1:7200", 3, (MemberUpdate("node3", "h:1", MemberState.LEFT, 2),)),
    Join("127.0.0.1:7203", 1),
    JoinReply("127.0.0.1:7200", 3, (MemberUpdate("node0", "h:0", MemberState.DOWN, 9),)),
    TransferData(TransferKey(3, 1, 77), 5, ((b"a", b"\x00v"), (b"b", None)), True, False),
    TransferAck(TransferKey(3, 1, 77), 5),
    TransferAbort(TransferKey(3, 1, 77), "restarted"),
    ForwardRequest(1, 2, ChangeMetadata(b'{"op": "set_weight"}')),
    ForwardReply(1, Outcome(True, acks=2, position=(3, 17))),
    ForwardRequest(
        1, 2, CreateKeyspace(KeyspaceConfig("r", "fixed:8", 3, "single-leader", "semi"))
    ),
    Replicate(
        "orders",
        3,
        2,
        Position(1, 9),
        (
            Entry(2, 10, (Change(b"a", b"\x00v"), Change(b"b", None))),
            Entry(2, 11, ()),
        ),
        Position(2, 11),
        4,
    ),
    Replicate("orders", 3, 2, Position(2, 11), (), Position(2, 11), 11, 1_700_000_000_123),
    ReplicateReply("orders", 3, 2, False, 0, 1, 7, 1_700_000_000_123),
    PositionQuery("orders", 3, 5),
    PositionReply("orders", 3, 5, Position(4, 120)),
    LeaderSuspicion("orders", 3, 4),
    ReplicaSnapshot(
        "orders",
        3,
        4,
        7,
        2,
        ((b"a", b"\x00v"), (b"b", b"\x00w")),
        False,
        Position(3, 900),
        (Position(1, 1), Position(3, 412)),
    ),
    ReplicaSnapshot("orders", 3, 4, 8, 0, (), True, Position(4, 5), ()),
    ReplicaSnapshotAck("orders", 3, 4, 7, 2),
    "a plain string",
    42,
]


@pytest.mark.parametrize("message", MESSAGES, ids=repr)
def test_round_trip_keeps_values_and_types(message: object) -> None:
    decoded = unpack_message(pack_message(message))
    assert decoded == message
    assert repr(decoded) == repr(message)  # bytes stay bytes, bools stay bools, enums enums


def test_unregistered_types_are_not_encoded() -> None:
    with pytest.raises(TypeError):
        pack_message(object())


GARBAGE = {
    "undecodable": b"\xc1",
    "truncated": pack_message(MESSAGES[1])[:-1],
    "trailing bytes": pack_message(MESSAGES[1]) + b"\x00",
    "an extension type": b"\xd4\x63\x00",
    "an empty array": msgpack.packb([]),
    "unknown tag": msgpack.packb([99, 1]),
    "negative tag": msgpack.packb([-1, 1]),
    "tag that is not an int": msgpack.packb(["Get", "ks", b"k"]),
    "tag that is a bool": msgpack.packb([True, "ks", b"k"]),
    "too many fields": msgpack.packb([0, "ks", b"k", 1]),
    "too few fields": msgpack.packb([10, 1]),
    "a scalar where a record belongs": msgpack.packb([10, 1, 2, "op", 3]),
    "an unknown tag nested": msgpack.packb([10, 1, 2, [77], 3]),
    "bad enum value": msgpack.packb([1, "ks", b"k", b"v", "sometimes", None, False, False]),
    "bad error code": msgpack.packb([11, 1, [9, None, "nonsense", ""], 0]),
    "keyspaces that are not a list": msgpack.packb([13, 1, 5]),
    "a map as a record": msgpack.packb({"tag": 0}),
    # Tag 40 is ReplicaSnapshot: without its epoch starts (the older layout), with
    # epoch starts that are not a list, or with more than a replica keeps.
    "a snapshot chunk without epoch starts": msgpack.packb(
        [40, "ks", 1, 2, 3, 0, [], True, [2, 9]]
    ),
    "a snapshot chunk with a scalar for epoch starts": msgpack.packb(
        [40, "ks", 1, 2, 3, 0, [], True, [2, 9], 5]
    ),
    "a snapshot chunk with too many epoch starts": msgpack.packb(
        [40, "ks", 1, 2, 3, 0, [], True, [2, 9], [[1, 1]] * 1_025]
    ),
}


@pytest.mark.parametrize("payload", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_raises_only_wire_error(payload: bytes) -> None:
    with pytest.raises(WireError):
        unpack_message(payload)


def test_random_mutations_raise_only_wire_error() -> None:
    """Flipped and cut bytes of real messages decode to something or raise WireError:
    never any other exception, which would escape the transport's error handling."""
    rng = random.Random(11)
    payloads = [pack_message(message) for message in MESSAGES]
    for _ in range(20_000):
        payload = bytearray(rng.choice(payloads))
        for _ in range(rng.randint(1, 3)):
            payload[rng.randrange(len(payload))] = rng.randrange(256)
        if rng.random() < 0.2:
            del payload[rng.randrange(len(payload)) :]
        try:
            unpack_message(bytes(payload))
        except WireError:
            pass
