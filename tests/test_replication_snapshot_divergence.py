"""A follower that installs a snapshot files its divergent tail in lost+found: exactly
the entries the leader's log does not hold, judged by the epoch starts the leader sends,
in the batch that clears its log and before it acknowledges."""

from __future__ import annotations

import struct

import pytest

from quorumdb.core.effects import Persist, Send
from quorumdb.core.replication.epoch_history import epoch_at, extended, in_leader_log
from quorumdb.core.replication.log_format import (
    EPOCH_STARTS_MAX,
    Entry,
    LogFormatError,
    Position,
    ReplicaState,
    load_log,
    log_keyspace,
    state_write,
)
from quorumdb.core.replication.lost_found import KEYSPACE as LOST_KEYSPACE
from quorumdb.core.replication.lost_found import decode_lost_write
from quorumdb.core.replication.messages import ReplicaSnapshot, ReplicaSnapshotAck
from quorumdb.core.replication.replica import PartitionReplica, ReplicaSet, ReplicationLimits
from test_core_node import DictStorage
from test_replication_replica import KEYSPACE, PARTITION, Group

# A log that keeps 10 entries for an absent follower: one away longer gets a snapshot.
SNAPSHOT_LIMITS = ReplicationLimits(
    write_timeout_ms=2_000, trim_batch_entries=4, log_entries_max=10, snapshot_chunk_keys=3
)
DIVERGENT = [(b"k1", b"\x00lost-overwrite"), (b"k9", b"\x00lost-new"), (b"k2", None)]


class SnapshotGroup(Group):
    def start(self, node_id: str) -> None:
        self.replicas[node_id] = PartitionReplica(
            node_id, KEYSPACE, PARTITION, self.storages[node_id], SNAPSHOT_LIMITS
        )


def lost_positions(group: Group, node_id: str) -> list[tuple[int, int, int]]:
    table = group.storages[node_id].data.get((LOST_KEYSPACE, 0), {})
    lost = [decode_lost_write(key, value) for key, value in sorted(table.items())]
    return [(write.epoch, write.sequence, write.change_index) for write in lost]


def old_leader_with_a_divergent_tail() -> tuple[SnapshotGroup, str]:
    """n0 leads epoch 1 (async): 5 writes every replica holds, then, cut off, 3 more
    it acknowledges alone. n1 or n2 takes over in epoch 2 and writes until its log
    starts past everything n0 holds. Returns the group (n0 still cut) and the leader."""
    group = SnapshotGroup()
    group.configure(ReplicaSet(1, "n0", ("n1", "n2"), "async"))
    for index in range(5):
        group.write("n0", index, b"k%d" % index, b"\x00v%d" % index)
    group.deliver()  # no tick: nobody trims, every log holds entries 1..5
    group.cut = {"n0"}
    for request_id, (key, record) in enumerate(DIVERGENT, start=10):
        group.write("n0", request_id, key, record)
        assert group.results[request_id].error is None  # async: acknowledged alone
    old = group.replicas["n0"]
    assert old.base.sequence == 0 and [local.entry.sequence for local in old.entries] == [
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
    ]
    leader = group.fail_over(2, ["n1", "n2"], "async")
    assert leader is not None
    for index in range(40):
        group.write(leader, 100 + index, b"n%02d" % (index % 7), b"\x00new%d" % index)
        group.deliver()
        group.tick(10)
    assert group.replicas[leader].base.sequence > old.last.sequence  # n0 is past the log
    return group, leader


def converge(group: Group) -> None:
    for _ in range(30):
        group.tick(100)


@pytest.mark.parametrize("restart_leader", [False, True], ids=["running", "restarted"])
def test_an_old_leader_that_gets_a_snapshot_files_exactly_its_divergent_tail(
    restart_leader: bool,
) -> None:
    group, leader = old_leader_with_a_divergent_tail()
    if restart_leader:  # the epoch starts of the trimmed log come back from storage
        group.start(leader)
        group.inform_all()
    group.cut = set()  # n0 comes back, learns epoch 2 and is past the leader's log
    group.inform_all()
    converge(group)
    assert group.replicas[leader].snapshots_sent >= 1
    # Entries 6..8 of epoch 1 were never on the new leader (it holds epoch 2 there);
    # entries 1..5 of epoch 1 are in its log and come back through the snapshot.
    assert group.lost("n0") == DIVERGENT
    assert lost_positions(group, "n0") == [(1, 6, 0), (1, 7, 0), (1, 8, 0)]
    assert group.replicas["n0"].lost_count == 3
    assert group.lost("n1") == group.lost("n2") == []
    assert group.data("n0") == group.data("n1") == group.data("n2")
    assert group.data("n0")[b"k1"] == b"\x00v1" and b"k9" not in group.data("n0")
    assert group.replicas["n0"].last == group.replicas[leader].last
    # Every log now starts past both epochs' first entries, and remembers them: n0
    # took the leader's from the snapshot.
    for node_id in ("n0", "n1", "n2"):
        state = load_log(group.storages[node_id], KEYSPACE, PARTITION).state
        assert state.base.sequence > 6
        assert state.epoch_starts == (Position(1, 1), Position(2, 6))


def test_a_follower_whose_log_the_leader_holds_files_nothing() -> None:
    """n0 (the old leader) and n2 hold entries 1..5 of epoch 1, all in the new leader's
    log, which has since dropped them: both get snapshots, neither files anything."""
    group = SnapshotGroup()
    group.configure(ReplicaSet(1, "n0", ("n1", "n2"), "async"))
    for index in range(5):
        group.write("n0", index, b"k%d" % index, b"\x00v%d" % index)
    group.deliver()
    group.cut = {"n0", "n2"}  # the leader crashes, n2 is away
    assert group.fail_over(2, ["n1"], "async") == "n1"
    for index in range(40):
        group.write("n1", 100 + index, b"n%02d" % (index % 7), b"\x00new%d" % index)
        group.deliver()
        group.tick(10)
    assert group.replicas["n1"].base.sequence > 5
    for node_id in ("n0", "n2"):
        assert len(group.replicas[node_id].entries) == 5  # a tail the snapshot replaces
    group.cut = set()
    group.inform_all()
    converge(group)
    assert group.replicas["n1"].snapshots_sent >= 2
    for node_id in ("n0", "n1", "n2"):
        assert group.lost(node_id) == []
        assert group.replicas[node_id].lost_count == 0
    assert group.data("n0") == group.data("n1") == group.data("n2")
    assert group.data("n0")[b"k4"] == b"\x00v4"


def take_snapshot_chunk(group: Group, destination: str) -> tuple[str, ReplicaSnapshot]:
    """Run the group until a snapshot chunk is on its way to `destination`; take it
    out of the network undelivered."""
    for _ in range(500):
        for index, (source, target, message) in enumerate(group.in_flight):
            if target == destination and isinstance(message, ReplicaSnapshot):
                del group.in_flight[index]
                return source, message
        if group.in_flight:
            group.deliver(rounds=1)
            continue
        group.now_ms += 50
        for node_id, replica in group.replicas.items():
            if node_id not in group.cut:
                group.run(node_id, replica.on_tick(group.local(node_id)))
    raise AssertionError(f"no snapshot chunk was sent to {destination}")


def test_the_filing_is_durable_with_the_cleared_log_before_the_acknowledgement() -> None:
    group, _ = old_leader_with_a_divergent_tail()
    group.cut = set()
    group.inform_all()
    source, chunk = take_snapshot_chunk(group, "n0")
    assert chunk.chunk == 0
    effects = group.replicas["n0"].on_snapshot(group.local("n0"), source, chunk)
    filing = [
        index
        for index, effect in enumerate(effects)
        if isinstance(effect, Persist)
        and any(write.keyspace == LOST_KEYSPACE for write in effect.writes)
    ]
    assert len(filing) == 1
    batch = effects[filing[0]]
    assert isinstance(batch, Persist)
    log_deletes = {
        write.key
        for write in batch.writes
        if write.keyspace == log_keyspace(KEYSPACE) and write.value is None
    }
    assert len(log_deletes) == 8  # the whole log goes in the batch that files its tail
    acks = [
        index
        for index, effect in enumerate(effects)
        if isinstance(effect, Send) and isinstance(effect.message, ReplicaSnapshotAck)
    ]
    assert acks and filing[0] < acks[0]  # persisted before the acknowledgement leaves
    # A crash once the batches are durable, before the acknowledgement is sent: the
    # restarted replica holds the filing and no log, and files nothing twice.
    for effect in effects:
        if isinstance(effect, Persist):
            group.storages["n0"].apply(effect.writes)
    group.start("n0")
    assert group.replicas["n0"].entries == []
    group.inform_all()
    converge(group)
    assert group.lost("n0") == DIVERGENT
    assert group.replicas["n0"].lost_count == 0  # the restarted replica filed nothing
    assert group.data("n0") == group.data("n1") == group.data("n2")


# --- epoch starts -------------------------------------------------------------------------


def entries(*positions: tuple[int, int]) -> list[Entry]:
    return [Entry(epoch, sequence, ()) for epoch, sequence in positions]


def test_epoch_starts_name_the_first_entry_of_each_epoch() -> None:
    starts = extended((), entries((1, 1), (1, 2), (3, 3), (3, 4), (4, 5)))
    assert starts == (Position(1, 1), Position(3, 3), Position(4, 5))
    assert extended(starts, entries((4, 6), (6, 7))) == (*starts, Position(6, 7))
    assert [epoch_at(starts, sequence) for sequence in range(7)] == [None, 1, 1, 3, 3, 4, 4]
    many = extended((), entries(*((epoch, epoch) for epoch in range(1, 2_000))))
    assert len(many) == EPOCH_STARTS_MAX and many[-1] == Position(1_999, 1_999)
    assert epoch_at(many, 100) is None  # forgotten: below the oldest start kept


def test_an_entry_is_in_the_leader_log_when_the_leader_has_its_epoch_there() -> None:
    starts = (Position(1, 1), Position(2, 6))
    base = Position(2, 45)
    assert in_leader_log(Position(1, 5), starts, base, 3)
    assert not in_leader_log(Position(1, 6), starts, base, 3)
    assert in_leader_log(Position(2, 45), starts, base, 3)
    # Past the base the leader logs entries of its own epoch only.
    assert in_leader_log(Position(3, 46), starts, base, 3)
    assert not in_leader_log(Position(2, 46), starts, base, 3)
    # Nothing known below the first start: the entry cannot be shown to be held.
    assert not in_leader_log(Position(1, 3), (Position(2, 6),), base, 3)


def test_the_replica_state_keeps_its_epoch_starts_and_reads_the_older_layout() -> None:
    storage = DictStorage()
    state = ReplicaState(4, Position(3, 900), (Position(1, 1), Position(3, 412)))
    storage.apply([state_write(KEYSPACE, PARTITION, state)])
    assert load_log(storage, KEYSPACE, PARTITION).state == state
    # A state written before epoch starts were kept: promised epoch and base alone.
    older = state_write(KEYSPACE, PARTITION, state)._replace(value=struct.pack(">QQQ", 4, 3, 900))
    storage.apply([older])
    assert load_log(storage, KEYSPACE, PARTITION).state == ReplicaState(4, Position(3, 900))
    replica = PartitionReplica("n0", KEYSPACE, PARTITION, storage)
    assert replica.epoch_starts == (Position(3, 900),)  # known: the base's epoch
    broken = older._replace(value=struct.pack(">QQQI", 4, 3, 900, 2) + b"\x00" * 16)
    storage.apply([broken])
    with pytest.raises(LogFormatError):
        load_log(storage, KEYSPACE, PARTITION)
