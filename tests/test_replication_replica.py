"""One partition's replicas driven by hand: modes, acknowledgements, fencing, divergent
tails undone into lost+found, restarts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from quorumdb.core.effects import Effect, Persist, Send
from quorumdb.core.replication.log_format import Position, load_log
from quorumdb.core.replication.lost_found import KEYSPACE as LOST_KEYSPACE
from quorumdb.core.replication.lost_found import decode_lost_write
from quorumdb.core.replication.messages import (
    PositionQuery,
    PositionReply,
    ReplicaSnapshot,
    ReplicaSnapshotAck,
    Replicate,
    ReplicateReply,
)
from quorumdb.core.replication.replica import (
    PartitionReplica,
    ReplicaSet,
    ReplicationLimits,
    WriteResult,
)
from quorumdb.storage.interface import Write
from test_core_node import DictStorage

KEYSPACE = "orders"
PARTITION = 3
LIMITS = ReplicationLimits(write_timeout_ms=2_000, trim_batch_entries=4)


@dataclass
class Group:
    """Replicas of one partition on nodes n0..n(k-1), with a network the test controls."""

    count: int = 3
    seed: int = 1
    storages: dict[str, DictStorage] = field(default_factory=dict)
    replicas: dict[str, PartitionReplica] = field(default_factory=dict)
    in_flight: list[tuple[str, str, object]] = field(default_factory=list)
    cut: set[str] = field(default_factory=set)  # nodes whose messages are dropped
    results: dict[int, WriteResult] = field(default_factory=dict)
    now_ms: int = 0
    controller_inbox: list[PositionReply] = field(default_factory=list)
    # Each node's clock runs at this rate against real (test) time: 1.01 is 1 % fast.
    clock_rates: dict[str, float] = field(default_factory=dict)
    replica_set: ReplicaSet | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        for index in range(self.count):
            node_id = f"n{index}"
            self.storages[node_id] = DictStorage()
            self.start(node_id)

    def local(self, node_id: str) -> int:
        """What `node_id`'s clock reads now."""
        return int(self.now_ms * self.clock_rates.get(node_id, 1.0))

    def start(self, node_id: str) -> None:
        self.replicas[node_id] = PartitionReplica(
            node_id, KEYSPACE, PARTITION, self.storages[node_id], LIMITS
        )

    def configure(self, replica_set: ReplicaSet) -> None:
        self.replica_set = replica_set
        for node_id, replica in self.replicas.items():
            self.run(node_id, replica.configure(self.local(node_id), replica_set))

    def run(self, node_id: str, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Persist):
                self.storages[node_id].apply(effect.writes)
            elif isinstance(effect, Send):
                self.in_flight.append((node_id, effect.destination, effect.message))

    def deliver(self, shuffle: bool = False, rounds: int = 50) -> None:
        for _ in range(rounds):
            if not self.in_flight:
                return
            batch, self.in_flight = self.in_flight, []
            if shuffle:
                self.rng.shuffle(batch)
            for source, destination, message in batch:
                if source in self.cut or destination in self.cut:
                    continue
                if destination == "controller":
                    assert isinstance(message, PositionReply)
                    self.controller_inbox.append(message)
                    continue
                replica = self.replicas[destination]
                if isinstance(message, Replicate):
                    effects = replica.on_replicate(self.local(destination), source, message)
                elif isinstance(message, ReplicateReply):
                    effects = replica.on_reply(self.local(destination), source, message)
                elif isinstance(message, ReplicaSnapshot):
                    effects = replica.on_snapshot(self.local(destination), source, message)
                elif isinstance(message, ReplicaSnapshotAck):
                    effects = replica.on_snapshot_ack(self.local(destination), source, message)
                else:
                    assert isinstance(message, PositionQuery)
                    effects = replica.on_position_query(self.local(destination), source, message)
                self.run(destination, effects)

    def tick(self, elapsed_ms: int = 50) -> None:
        self.now_ms += elapsed_ms
        for node_id, replica in self.replicas.items():
            if node_id not in self.cut:
                self.run(node_id, replica.on_tick(self.local(node_id)))
        self.deliver()

    def write(self, node_id: str, request_id: int, key: bytes, record: bytes | None) -> None:
        def complete(result: WriteResult) -> list[Effect]:
            self.results[request_id] = result
            return []

        replica = self.replicas[node_id]
        assert replica.is_leader
        writes = (Write(KEYSPACE, PARTITION, key, record),)
        self.run(node_id, replica.append(self.local(node_id), writes, complete))

    def data(self, node_id: str) -> dict[bytes, bytes]:
        return dict(self.storages[node_id].data.get((KEYSPACE, PARTITION), {}))

    def lost(self, node_id: str) -> list[tuple[bytes, bytes | None]]:
        table = self.storages[node_id].data.get((LOST_KEYSPACE, 0), {})
        lost = [decode_lost_write(key, value) for key, value in sorted(table.items())]
        return [(write.key, write.record) for write in lost]

    def fail_over(
        self, new_epoch: int, candidates: list[str], mode: str, informed: list[str] | None = None
    ) -> str | None:
        """What the controller does: fence the epoch on the replicas it can reach, take
        the most up-to-date one, make it the leader of the new epoch. Replicas answer once
        the lease they granted the current leader has run out (a live leader that keeps
        its followers is not replaced: None). Only `informed` nodes (default: the
        candidates) learn the new replica set now; the rest get it from `inform_all`, as
        metadata reaches nodes at different times."""
        self.controller_inbox = []
        for node_id in candidates:
            query = PositionQuery(KEYSPACE, PARTITION, new_epoch)
            replica = self.replicas[node_id]
            self.run(node_id, replica.on_position_query(self.local(node_id), "controller", query))
        self.deliver()
        for _ in range(2 * LIMITS.lease_ms // 50):
            if len(self.controller_inbox) == len(candidates):
                break
            self.tick(50)
        if len(self.controller_inbox) < len(candidates):
            return None
        best = max(self.controller_inbox, key=lambda reply: reply.last)
        leader = next(n for n in candidates if self.replicas[n].last == best.last)
        others = tuple(n for n in sorted(self.replicas) if n != leader)
        self.replica_set = ReplicaSet(new_epoch, leader, others, mode)
        for node_id in candidates if informed is None else informed:
            replica = self.replicas[node_id]
            self.run(node_id, replica.configure(self.local(node_id), self.replica_set))
        return leader

    def inform_all(self) -> None:
        assert self.replica_set is not None
        self.configure(self.replica_set)


def assert_logs_persisted(group: Group) -> None:
    """What each replica would reload is its log in memory: the records (one per
    message on a follower) survive trims and undos that cut through them."""
    for node_id, replica in group.replicas.items():
        persisted = load_log(group.storages[node_id], KEYSPACE, PARTITION)
        assert persisted.state.base == replica.base, node_id
        assert list(persisted.entries) == replica.entries, node_id


def majority_group(mode: str = "majority") -> Group:
    group = Group()
    group.configure(ReplicaSet(1, "n0", ("n1", "n2"), mode))
    return group


def test_majority_answers_with_one_follower_and_every_replica_converges() -> None:
    group = majority_group()
    group.cut = {"n2"}
    group.write("n0", 1, b"a", b"\x00one")
    assert 1 not in group.results  # persisted on the leader, not yet on any follower
    group.deliver()
    assert group.results[1] == WriteResult(Position(1, 1), 1)
    group.cut = set()
    group.tick(400)  # past the retransmit interval: n2 is caught up
    group.write("n0", 2, b"b", b"\x00two")
    group.deliver()
    # Answered on the first follower's acknowledgement; the second follows at once.
    assert group.results[2].follower_acks == 1
    assert group.replicas["n0"].follower_matches() == {"n1": 2, "n2": 2}
    assert (
        group.data("n0")
        == group.data("n1")
        == group.data("n2")
        == {
            b"a": b"\x00one",
            b"b": b"\x00two",
        }
    )


def test_all_waits_for_every_follower_and_times_out_as_an_unknown_outcome() -> None:
    group = majority_group("all")
    group.cut = {"n2"}
    group.write("n0", 1, b"a", b"\x00one")
    group.deliver()
    assert 1 not in group.results
    for _ in range(40):
        group.tick(50)
    result = group.results[1]
    assert result.error is not None and "within the write timeout" in result.error
    assert result.follower_acks == 1  # the reply says what it got
    group.cut = set()
    group.tick(400)
    assert group.data("n2") == {b"a": b"\x00one"}  # still replicated afterwards


def test_async_answers_at_once_and_semi_moves_the_sync_role_off_a_down_follower() -> None:
    group = majority_group("async")
    group.cut = {"n1", "n2"}
    group.write("n0", 1, b"a", b"\x00one")
    assert group.results[1] == WriteResult(Position(1, 1), 0)
    semi = majority_group("semi")
    semi.cut = {"n1"}
    assert semi.replicas["n0"].sync_follower() == "n1"
    semi.write("n0", 1, b"a", b"\x00one")
    semi.deliver()
    assert 1 not in semi.results  # n2 holds it, but n1 is the synchronous follower
    semi.replicas["n0"].unavailable = frozenset({"n1"})  # the detector calls n1 down
    semi.tick(10)
    assert semi.replicas["n0"].sync_follower() == "n2"
    assert semi.results[1].error is None and semi.results[1].follower_acks == 1


def test_an_old_async_leader_undoes_its_unreplicated_tail_into_lost_and_found() -> None:
    group = majority_group("async")
    for index in range(3):
        group.write("n0", index, b"k%d" % index, b"\x00v%d" % index)
    group.deliver()
    group.cut = {"n0"}  # n0 keeps writing, alone: async acknowledges anyway
    group.write("n0", 10, b"k1", b"\x00lost-overwrite")
    group.write("n0", 11, b"k9", b"\x00lost-new")
    assert group.results[10].error is None and group.results[11].error is None
    leader = group.fail_over(2, ["n1", "n2"], "async")
    assert leader in ("n1", "n2")
    assert group.now_ms >= LIMITS.lease_ms  # the followers waited out their grants
    group.write(leader, 20, b"k5", b"\x00after-failover")
    group.deliver()
    group.cut = set()  # n0 comes back, learns epoch 2 and becomes a follower
    group.inform_all()
    group.tick(400)
    group.deliver()
    assert group.replicas["n0"].promised_epoch == 2 and not group.replicas["n0"].is_leader
    expected = {b"k0": b"\x00v0", b"k1": b"\x00v1", b"k2": b"\x00v2", b"k5": b"\x00after-failover"}
    assert group.data("n0") == group.data("n1") == group.data("n2") == expected
    # Both acknowledged-then-discarded writes are kept, newest first, on the old leader.
    assert group.lost("n0") == [(b"k1", b"\x00lost-overwrite"), (b"k9", b"\x00lost-new")]
    assert group.replicas["n0"].lost_count == 2
    assert group.replicas["n0"].last == group.replicas[leader].last
    assert_logs_persisted(group)


def test_a_fenced_old_leader_gets_no_acknowledgement_and_fails_its_waiting_writes() -> None:
    group = majority_group("majority")
    group.write("n0", 1, b"a", b"\x00one")
    group.deliver()
    # The followers lose the leader for longer than a lease; the controller fences
    # epoch 2 on both before it reconfigures; the old leader's link comes back.
    group.cut = {"n0"}
    group.tick(LIMITS.lease_ms + 50)
    for node_id in ("n1", "n2"):
        query = PositionQuery(KEYSPACE, PARTITION, 2)
        replica = group.replicas[node_id]
        group.run(node_id, replica.on_position_query(group.now_ms, "controller", query))
        assert replica.promised_epoch == 2  # answered at once: the grant had run out
    group.cut = set()
    group.write("n0", 2, b"a", b"\x00split-brain")
    group.deliver()
    result = group.results[2]
    assert result.error is not None and "newer leader" in result.error
    assert not group.replicas["n0"].is_leader
    assert group.data("n1") == group.data("n2") == {b"a": b"\x00one"}
    # The promise is durable: a restarted follower still refuses epoch 1.
    group.start("n1")
    assert group.replicas["n1"].promised_epoch == 2


def test_a_restarted_replica_reloads_its_log_and_trims_the_common_prefix() -> None:
    group = majority_group()
    for index in range(10):
        group.write("n0", index, b"k%d" % index, b"\x00v%d" % index)
        group.deliver()
    group.tick(50)
    leader = group.replicas["n0"]
    assert leader.base.sequence >= 8  # trimmed in batches of 4 once every follower had it
    group.tick(150)  # a heartbeat tells the followers where to trim
    follower = group.replicas["n1"]
    assert follower.base.sequence >= 8
    persisted = load_log(group.storages["n1"], KEYSPACE, PARTITION)
    assert persisted.state.base == follower.base
    assert [local.entry.sequence for local in persisted.entries] == [
        local.entry.sequence for local in follower.entries
    ]
    group.start("n1")
    group.configure(ReplicaSet(1, "n0", ("n1", "n2"), "majority"))
    group.write("n0", 99, b"late", b"\x00x")
    group.deliver()
    assert group.results[99].error is None
    assert group.replicas["n0"].follower_matches()["n1"] == 11
    assert group.data("n1") == group.data("n0")


def test_random_loss_reordering_and_failovers_lose_no_majority_acknowledged_write() -> None:
    """Majority mode under a seeded schedule of cuts, reordering and failovers: every
    acknowledged write survives in the final state, and every replica converges."""
    for seed in range(1, 31):
        print(f"seed {seed}: replay with pytest tests/test_replication_replica.py -k random")
        group = Group(seed=seed)
        rng = random.Random(seed)
        group.configure(ReplicaSet(1, "n0", ("n1", "n2"), "majority"))
        leader, epoch = "n0", 1
        acknowledged: dict[bytes, int] = {}  # key -> the newest acknowledged request id
        pending: dict[int, bytes] = {}
        request_id = 0
        for _step in range(300):
            roll = rng.random()
            if roll < 0.5 and group.replicas[leader].is_leader:
                request_id += 1
                key = b"k%d" % rng.randrange(8)
                record = b"\x00s%d-%d" % (seed, request_id)
                pending[request_id] = key
                group.write(leader, request_id, key, record)
            elif roll < 0.6:
                group.cut = {rng.choice(list(group.replicas))} if rng.random() < 0.7 else set()
            elif roll < 0.65 and len(group.cut) <= 1:
                # Sometimes a false suspicion: the leader is reachable by its followers
                # but the controller fails it over anyway, and it hears late.
                reachable = [n for n in group.replicas if n not in group.cut | {leader}]
                if len(reachable) >= 2:
                    epoch += 1  # promised by some even when the failover gives up
                    leader = group.fail_over(epoch, reachable, "majority") or leader
            elif roll < 0.68:
                group.inform_all()
            elif roll < 0.8:
                group.deliver(shuffle=True, rounds=1)
            else:
                group.tick(rng.choice((10, 50, 200)))
                assert_logs_persisted(group)
            for done in [rid for rid in pending if rid in group.results]:
                key = pending.pop(done)
                if group.results[done].error is None:
                    acknowledged[key] = max(done, acknowledged.get(key, 0))
        group.cut = set()
        group.inform_all()
        # A failover given up half-way leaves promises of an epoch nobody leads; the
        # controller keeps trying until one completes (here: after healing).
        for _attempt in range(10):
            if any(replica.is_leader for replica in group.replicas.values()):
                break
            epoch += 1
            group.fail_over(epoch, sorted(group.replicas), "majority")
            group.inform_all()
        assert any(replica.is_leader for replica in group.replicas.values()), seed
        for _ in range(20):
            group.tick(200)
        assert_logs_persisted(group)
        finals = {node_id: group.data(node_id) for node_id in group.replicas}
        assert finals["n0"] == finals["n1"] == finals["n2"], seed
        assert acknowledged, seed
        for key, newest in acknowledged.items():
            # The newest acknowledged write of a key, or a later one, is what stays.
            final = finals["n0"].get(key)
            assert final is not None, (seed, key)
            assert int(final.rsplit(b"-", 1)[1]) >= newest, (seed, key, final, newest)


def test_a_cut_off_leader_stops_reading_before_a_successor_can_be_chosen() -> None:
    group = majority_group("majority")
    group.write("n0", 1, b"a", b"\x00one")
    group.deliver()
    group.tick(150)  # heartbeats: both followers grant the leader a lease
    reads: list[WriteResult] = []

    def read(result: WriteResult) -> list[Effect]:
        reads.append(result)
        return []

    leader = group.replicas["n0"]
    group.run("n0", leader.when_replicated(group.now_ms, read))
    assert reads and reads[0].error is None  # answered at once, under the lease
    lease_end_ms = leader.lease_end_ms()
    assert lease_end_ms is not None and lease_end_ms > group.now_ms
    group.cut = {"n0"}  # the leader is cut off; nothing renews its lease
    successor = group.fail_over(2, ["n1", "n2"], "majority", informed=["n1", "n2"])
    assert successor is not None
    elected_ms = group.now_ms
    print(f"lease ended at {lease_end_ms} ms, successor chosen at {elected_ms} ms")
    assert elected_ms >= lease_end_ms  # the followers held their answers until then
    # The old leader, still believing it leads epoch 1, refuses to answer reads now.
    reads.clear()
    group.run("n0", leader.when_replicated(group.now_ms, read))
    assert not reads
    group.cut = set()
    group.run("n0", leader.on_tick(group.now_ms + LIMITS.write_timeout_ms))
    assert reads and reads[0].error is not None


def test_a_read_of_an_empty_log_is_at_the_origin_in_every_epoch() -> None:
    """Before anything is logged, a read answers at (0, 0), as a follower's read does, not
    at (epoch, 0): a later leader may take over an entry of an older epoch (a write
    never acknowledged), and the read's position must not rank above it (the simulator's
    session checkers compared such positions and reported reads going back)."""
    group = majority_group("majority")
    group.tick(150)
    reads: list[WriteResult] = []

    def read(result: WriteResult) -> list[Effect]:
        reads.append(result)
        return []

    group.run("n0", group.replicas["n0"].when_replicated(group.local("n0"), read))
    group.cut = {"n0"}
    successor = group.fail_over(2, ["n1", "n2"], "majority")
    assert successor is not None
    group.cut = set()
    group.inform_all()
    group.tick(150)  # the successor's followers grant it a lease
    new_leader = group.replicas[successor]
    group.run(successor, new_leader.when_replicated(group.local(successor), read))
    assert [result.error for result in reads] == [None, None]
    assert [result.position for result in reads] == [Position(0, 0), Position(0, 0)]


def test_a_restarted_follower_waits_a_lease_before_promising_a_successor() -> None:
    group = majority_group("majority")
    group.tick(150)
    group.start("n1")  # it may have granted a lease just before it went down
    group.configure(ReplicaSet(1, "n0", ("n1", "n2"), "majority"))
    query = PositionQuery(KEYSPACE, PARTITION, 2)
    replica = group.replicas["n1"]
    group.run("n1", replica.on_position_query(group.now_ms, "controller", query))
    assert replica.promised_epoch == 1
    group.cut = {"n0"}
    group.tick(LIMITS.lease_ms)
    assert replica.promised_epoch == 2


def test_a_follower_past_the_log_catches_up_from_a_snapshot_while_writes_continue() -> None:
    limits = ReplicationLimits(trim_batch_entries=4, log_entries_max=10, snapshot_chunk_keys=3)
    group = Group()
    for node_id in group.replicas:
        group.replicas[node_id] = PartitionReplica(
            node_id, KEYSPACE, PARTITION, group.storages[node_id], limits
        )
    group.configure(ReplicaSet(1, "n0", ("n1", "n2"), "majority"))
    group.cut = {"n2"}  # away for longer than the log keeps
    for index in range(60):
        group.write("n0", index, b"k%02d" % (index % 25), b"\x00v%d" % index)
        group.deliver()
        group.tick(10)
    leader = group.replicas["n0"]
    assert leader.base.sequence > 10  # n2's entries are gone from the log
    group.cut = set()
    request_id = 100
    for step in range(120):  # writes land between the chunks, on keys already copied
        if step < 12:  # and stop before the copy ends: nothing later overwrites them
            request_id += 1
            group.write("n0", request_id, b"k%02d" % (step % 4), b"\x00w%d" % request_id)
        group.now_ms += 20
        for node_id, replica in group.replicas.items():
            group.run(node_id, replica.on_tick(group.now_ms))
        group.deliver(rounds=1)
    for _ in range(20):
        group.tick(100)
    assert leader.snapshots_sent >= 1
    assert group.data("n2") == group.data("n0") == group.data("n1")
    assert group.replicas["n2"].last == leader.last
    assert leader.follower_matches()["n2"] == leader.last.sequence


def test_during_a_move_a_write_needs_the_current_and_the_future_followers() -> None:
    group = Group(count=4)
    # n3 is catching up to replace n2: the set after the move is n0, n1, n3.
    group.configure(ReplicaSet(1, "n0", ("n1", "n2"), "majority", learner="n3", removing="n2"))
    group.cut = {"n1", "n3"}
    group.write("n0", 1, b"a", b"\x00one")
    group.deliver()
    # n2 holds it: a majority of the current set, but n2 is on its way out and neither
    # n1 nor n3 holds it, so losing n0 now would lose it: no acknowledgement yet.
    assert 1 not in group.results
    group.cut = {"n1"}
    group.tick(400)
    result = group.results[1]
    assert result.error is None and result.follower_acks == 1  # n2 (n3 is not counted)
    assert group.replicas["n0"].learner_caught_up()
    assert group.data("n3") == {b"a": b"\x00one"}


def _deposed_leader_read_after_failover(leader_rate: float, follower_rate: float) -> bytes | None:
    """Cut the leader off, fail over, write through the successor, then read on the old
    leader (its clock at `leader_rate`, the followers' at `follower_rate`): the value it
    answers, or None if it refuses (its lease has run out)."""
    group = Group(clock_rates={"n0": leader_rate, "n1": follower_rate, "n2": follower_rate})
    group.configure(ReplicaSet(1, "n0", ("n1", "n2"), "majority"))
    group.write("n0", 1, b"a", b"\x00old")
    group.deliver()
    group.tick(150)  # heartbeats: both followers grant a lease
    group.cut = {"n0"}
    successor = group.fail_over(2, ["n1", "n2"], "majority", informed=["n1", "n2"])
    assert successor is not None
    group.write(successor, 2, b"a", b"\x00new")
    group.deliver()
    assert group.results[2].error is None  # acknowledged by the new leader
    answers: list[WriteResult] = []

    def read(result: WriteResult) -> list[Effect]:
        answers.append(result)
        return []

    old = group.replicas["n0"]
    group.run("n0", old.when_replicated(group.local("n0"), read))
    if not answers or answers[0].error is not None:
        return None
    return group.data("n0")[b"a"]


def test_clock_drift_within_the_bound_keeps_a_deposed_leader_from_stale_reads() -> None:
    # 1 % apart in rate: the assumed bound (`max_clock_drift`).
    assert _deposed_leader_read_after_failover(0.995, 1.005) is None


def test_clock_drift_beyond_the_bound_lets_a_deposed_leader_read_stale() -> None:
    """What the docs say breaks beyond the bound: followers whose clocks run fast give
    up their grants early (in real time), a successor is chosen and acknowledges a
    write, and the old leader, whose slow clock says its lease still holds, answers a
    read with the value from before."""
    assert _deposed_leader_read_after_failover(0.7, 1.3) == b"\x00old"


def read(group: Group, node_id: str) -> WriteResult | None:
    """A linearizable read at `node_id`: its result once answered (None: still waiting)."""
    answers: list[WriteResult] = []

    def complete(result: WriteResult) -> list[Effect]:
        answers.append(result)
        return []

    replica = group.replicas[node_id]
    group.run(node_id, replica.when_replicated(group.local(node_id), complete))
    group.deliver()
    return answers[0] if answers else None


def test_a_read_never_shows_an_older_epochs_entry_a_later_failover_undoes() -> None:
    """Raft's "Figure 8": n0 (epoch 3) replicates its epoch-1 entry (1, 2) to n2, a
    majority. n1 holds (2, 2), never acknowledged. Were (1, 2) readable now, a failover
    to n1 (whose (2, 2) beats n2's (1, 2)) would undo what the read saw. The read waits
    for an entry of epoch 3 behind it instead; once that is held, no later leader can
    lack (1, 2)."""
    group = majority_group("majority")
    group.write("n0", 1, b"x", b"\x00one")
    group.tick(150)  # (1, 1) everywhere
    group.cut = {"n0"}
    group.write("n0", 2, b"y", b"\x00two")  # (1, 2) on n0 only: never acknowledged
    assert group.fail_over(2, ["n1", "n2"], "majority", informed=["n1", "n2"]) == "n1"
    group.cut = {"n0", "n2"}
    group.write("n1", 3, b"z", b"\x00three")  # (2, 2) on n1 only: never acknowledged
    group.cut = {"n1"}
    assert group.fail_over(3, ["n0", "n2"], "majority", informed=["n0", "n2"]) == "n0"
    group.tick(150)  # n0 replicates (1, 2) to n2
    seen = read(group, "n0")
    assert seen is not None and seen.error is None
    assert seen.position.epoch == 3  # served behind n0's own entry, not at (1, 2)
    assert group.replicas["n2"].last == seen.position  # which a majority holds
    assert group.data("n0").get(b"y") == b"\x00two"  # the read shows y
    group.cut = {"n0"}
    fourth = group.fail_over(4, ["n1", "n2"], "majority", informed=["n1", "n2"])
    assert fourth == "n2"  # (3, 3) beats n1's (2, 2): y survives
    assert group.data("n2").get(b"y") == b"\x00two"


def test_a_leader_with_an_entry_of_its_epoch_reads_without_logging_another() -> None:
    group = majority_group("majority")
    group.write("n0", 1, b"x", b"\x00one")
    group.tick(150)  # held everywhere, and the followers grant n0 a lease
    before = group.replicas["n0"].last
    seen = read(group, "n0")
    assert seen is not None and seen.error is None and seen.position == before
    assert group.replicas["n0"].last == before  # no empty entry: epoch 1 has one
