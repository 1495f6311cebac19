"""Single-leader keyspaces on in-process nodes: replica sets from the metadata, writes
through the leader, answers that say how many followers held them."""

from __future__ import annotations

from collections.abc import Callable

from quorumdb.check.convergence import replica_digest
from quorumdb.core.cluster_metadata import command
from quorumdb.core.effects import Persist, Reply, Send
from quorumdb.core.errors import ErrorCode
from quorumdb.core.keyspace import KeyspaceConfig, KeyspaceConfigError
from quorumdb.core.messages import (
    Append,
    CreateKeyspace,
    Delete,
    ForwardReply,
    ForwardRequest,
    Get,
    Increment,
    Put,
)
from quorumdb.core.node import NodeLimits
from quorumdb.core.records import decode_record, encode_record
from quorumdb.core.replication.lost_found import KEYSPACE as LOST_KEYSPACE
from quorumdb.core.replication.lost_found import decode_lost_write
from quorumdb.core.replication.messages import PositionQuery, Replicate
from test_core_node import Cluster
from test_rebalance_core import join, metadata_change


def replicated(
    sync: str = "majority", replicas: int = 3, log_format: str = "row"
) -> KeyspaceConfig:
    return KeyspaceConfig("orders", "fixed:8", replicas, "single-leader", sync, log_format)


def create(cluster: Cluster, config: KeyspaceConfig) -> None:
    outcome = cluster.request("node0", CreateKeyspace(config))
    assert outcome.error is None, outcome


def stored(cluster: Cluster, node_id: str, key: bytes) -> bytes | None:
    node = cluster.nodes[node_id]
    partition = node.partition_map.keyspaces["orders"].layout.locate(key)
    raw = cluster.storages[node_id].get("orders", partition, key)
    return None if raw is None else decode_record(raw)[0]


def test_replication_settings_are_validated_and_spelled_canonically() -> None:
    assert replicated().canonical().to_dict() == {
        "name": "orders",
        "partitioning": "fixed:8",
        "replication_factor": 3,
        "replication": "single-leader",
        "sync": "majority",
        "log_format": "row",
        "deterministic": True,
    }
    assert KeyspaceConfig("plain").canonical().to_dict() == {
        "name": "plain",
        "partitioning": "fixed:64",
        "replication_factor": 1,
    }
    for config, expected in (
        (KeyspaceConfig("x", replication_factor=3), "single-leader"),
        (replicated(sync="quorum"), "sync must be one of"),
        (replicated(replicas=9), "between 1 and 7"),
        (KeyspaceConfig("x", replication="multi"), "replication must be one of"),
        (KeyspaceConfig("x", log_format="statement"), "needs replication 'single-leader'"),
        (replicated(log_format="binlog"), "log format must be one of"),
    ):
        try:
            config.canonical()
        except KeyspaceConfigError as error:
            assert expected in str(error), (config, error)
        else:
            raise AssertionError(f"{config} was accepted")


def test_more_replicas_than_members_is_refused_clearly() -> None:
    cluster = Cluster()
    cluster.settle()
    outcome = cluster.request("node0", CreateKeyspace(replicated(replicas=5)))
    assert outcome.error is not None and "5 replicas need 5 active members" in outcome.message


def test_writes_go_through_the_leader_and_reach_every_replica() -> None:
    cluster = Cluster()
    cluster.settle()
    create(cluster, replicated("all"))
    placement = cluster.nodes["node1"].partition_map.keyspaces["orders"]
    for partition in placement.partition_ids:
        epoch, nodes = placement.replica_sets[partition]
        assert epoch == 1 and sorted(nodes) == ["node0", "node1", "node2"]
        assert placement.owner(partition) == nodes[0]  # routing follows the leader
    keys = [b"order-%d" % index for index in range(40)]
    for index, key in enumerate(keys):
        outcome = cluster.request(f"node{index % 3}", Put("orders", key, b"v" + key))
        assert outcome.error is None and outcome.value is True, outcome
        assert outcome.acks == 2  # mode "all": both followers held it
        assert outcome.position is not None and outcome.position[0] == 1
    for node_id in ("node0", "node1", "node2"):
        for key in keys:
            assert stored(cluster, node_id, key) == b"v" + key, (node_id, key)
    counted = cluster.request("node2", Increment("orders", b"hits", 5))
    assert counted.value == 5 and counted.acks == 2
    assert cluster.request("node1", Delete("orders", keys[0])).value is True
    read = cluster.request("node0", Get("orders", keys[0]))
    assert read.error is None and read.value is None and read.acks == 2
    for node_id in ("node0", "node1", "node2"):
        assert stored(cluster, node_id, keys[0]) is None
        assert stored(cluster, node_id, b"hits") == b"5"


def test_a_follower_refuses_to_act_as_leader() -> None:
    cluster = Cluster()
    cluster.settle()
    create(cluster, replicated())
    node = cluster.nodes["node0"]
    placement = node.partition_map.keyspaces["orders"]
    key = next(
        b"k%d" % index
        for index in range(100)
        if placement.owner(placement.layout.locate(b"k%d" % index)) != "node0"
    )
    partition = placement.layout.locate(key)
    replies = node._execute_replicated(  # as if misrouted here
        cluster.now_ms, Put("orders", key, b"x"), lambda outcome: outcome
    )
    (outcome,) = replies
    assert outcome.error is ErrorCode.MOVED, outcome
    assert f"does not lead partition {partition}" in outcome.message
    assert stored(cluster, "node0", key) is None


class FaultyCluster(Cluster):
    """Nodes that can be killed (their messages vanish) and links that drop messages."""

    def __init__(self, **arguments: object) -> None:
        self.drop: Callable[[str, str, object], bool] = lambda source, target, message: False
        super().__init__(**arguments)  # type: ignore[arg-type]

    def run(self, node_id: str, effects: list) -> None:  # type: ignore[type-arg]
        kept = [
            effect
            for effect in effects
            if not (
                isinstance(effect, Send) and self.drop(node_id, effect.destination, effect.message)
            )
        ]
        super().run(node_id, kept)

    def kill(self, node_id: str) -> None:
        del self.nodes[node_id]

    def revive(self, node_id: str) -> None:
        self.nodes[node_id] = self.start(node_id)


def leader_of(cluster: Cluster, viewer: str, key: bytes) -> tuple[int, str, int]:
    placement = cluster.nodes[viewer].partition_map.keyspaces["orders"]
    partition = placement.layout.locate(key)
    epoch, nodes = placement.replica_sets[partition]
    return partition, nodes[0], epoch


def tick_until(cluster: Cluster, condition: Callable[[], bool], seconds: float) -> float:
    for step in range(int(seconds * 50)):
        if condition():
            return step / 50
        cluster.tick()
    raise AssertionError(f"not within {seconds} virtual seconds")


def test_a_dead_leader_is_failed_over_and_rejoins_as_a_follower() -> None:
    seed = 3
    print(f"seed {seed}: replay with pytest tests/test_replication_node.py -k dead_leader")
    cluster = FaultyCluster(seed=seed)
    controller_leader = cluster.settle()
    create(cluster, replicated("majority"))
    keys = [b"order-%d" % index for index in range(30)]
    for key in keys:
        assert cluster.request("node0", Put("orders", key, b"before")).acks is not None
    # Kill a node that leads partitions but is not the controller leader.
    victim = next(n for n in ("node0", "node1", "node2") if n != controller_leader)
    survivor = next(n for n in ("node0", "node1", "node2") if n not in (victim,))
    victim_keys = [key for key in keys if leader_of(cluster, survivor, key)[1] == victim]
    assert victim_keys
    cluster.kill(victim)

    def failed_over() -> bool:
        return all(leader_of(cluster, survivor, key)[1] != victim for key in victim_keys)

    seconds = tick_until(cluster, failed_over, 30.0)
    print(f"failed over {len(victim_keys)} keys' partitions in {seconds:.1f} virtual s")
    for key in victim_keys:
        partition, leader, epoch = leader_of(cluster, survivor, key)
        assert epoch == 2 and leader != victim
        assert cluster.request(survivor, Get("orders", key)).value == b"before"
        outcome = cluster.request(survivor, Put("orders", key, b"after"))
        assert outcome.error is None and outcome.acks == 1, outcome  # the dead one is behind
        assert outcome.position == (2, outcome.position[1])
    cluster.revive(victim)
    tick_until(
        cluster,
        lambda: all(stored(cluster, victim, key) == b"after" for key in victim_keys),
        20.0,
    )
    node = cluster.nodes[victim]
    for key in victim_keys:
        partition, leader, _ = leader_of(cluster, victim, key)
        replica = node.replication.replica("orders", partition)
        assert replica is not None and not replica.is_leader and replica.promised_epoch == 2


def test_an_async_leaders_unreplicated_writes_land_in_lost_and_found() -> None:
    seed = 4
    print(f"seed {seed}: replay with pytest tests/test_replication_node.py -k lost_and_found")
    cluster = FaultyCluster(seed=seed)
    controller_leader = cluster.settle()
    create(cluster, replicated("async"))
    victim = next(n for n in ("node0", "node1", "node2") if n != controller_leader)
    survivor = controller_leader
    key = next(
        b"k%d" % index
        for index in range(200)
        if leader_of(cluster, survivor, b"k%d" % index)[1] == victim
    )
    assert cluster.request(survivor, Put("orders", key, b"replicated")).error is None
    # The victim's replication stream is cut: it still acknowledges (async), alone.
    cluster.drop = lambda source, target, message: (
        source == victim and isinstance(message, Replicate)
    )
    lost = cluster.request(survivor, Put("orders", key, b"acknowledged-then-lost"))
    assert lost.error is None and lost.acks == 0
    cluster.kill(victim)
    cluster.drop = lambda source, target, message: False
    tick_until(cluster, lambda: leader_of(cluster, survivor, key)[1] != victim, 30.0)
    # The new leader cannot hold a lease while a follower is down (an async failover
    # needs one answer, so the lease needs every grant): linearizable reads wait, then
    # fail; an eventual read at the leader answers.
    refused = cluster.request(survivor, Get("orders", key))
    assert refused.error is ErrorCode.UNAVAILABLE and "lease" in refused.message
    _, new_leader, _ = leader_of(cluster, survivor, key)
    assert cluster.request(new_leader, Get("orders", key, "eventual")).value == b"replicated"
    cluster.revive(victim)
    tick_until(cluster, lambda: stored(cluster, victim, key) == b"replicated", 20.0)
    assert cluster.request(survivor, Get("orders", key)).value == b"replicated"
    table = cluster.storages[victim].data.get((LOST_KEYSPACE, 0), {})
    found = [decode_lost_write(k, v) for k, v in table.items()]
    assert [(w.key, w.record) for w in found] == [(key, encode_record(b"acknowledged-then-lost"))]


def follower_setup(sync: str = "majority") -> tuple[FaultyCluster, bytes, str, str]:
    """A cluster with a replicated keyspace, a key, its leader and one of its followers."""
    cluster = FaultyCluster(seed=7)
    cluster.settle()
    create(cluster, replicated(sync))
    key = b"session-key"
    _, leader, _ = leader_of(cluster, "node0", key)
    follower = next(n for n in ("node0", "node1", "node2") if n != leader)
    assert cluster.request(leader, Put("orders", key, b"v1")).error is None
    for _ in range(10):
        cluster.tick()
    return cluster, key, leader, follower


def test_eventual_reads_are_served_by_a_follower_with_its_position() -> None:
    cluster, key, leader, follower = follower_setup()
    cluster.drop = lambda source, target, message: (
        source == leader and target == follower and isinstance(message, Replicate)
    )
    written = cluster.request(leader, Put("orders", key, b"v2"))
    assert written.error is None and written.acks == 1
    stale = cluster.request(follower, Get("orders", key, "eventual"))
    assert stale.value == b"v1" and stale.position is not None
    assert stale.position < written.position  # type: ignore[operator]
    fresh = cluster.request(follower, Get("orders", key))  # linearizable: via the leader
    assert fresh.value == b"v2"


def test_a_session_read_waits_for_its_position_then_falls_back_to_the_leader() -> None:
    cluster, key, leader, follower = follower_setup()
    cluster.drop = lambda source, target, message: (
        source == leader and target == follower and isinstance(message, Replicate)
    )
    written = cluster.request(leader, Put("orders", key, b"v2"))
    session = Get("orders", key, "session", written.position)
    start_ms = cluster.now_ms
    answered = cluster.request(follower, session)
    # The follower could not catch up (its link is cut): after session_wait_ms the read
    # went to the leader, which has the session's write.
    assert answered.value == b"v2", answered
    assert cluster.now_ms - start_ms >= cluster.nodes[follower].limits.session_wait_ms
    # With replication flowing, the follower itself serves the session's next read.
    cluster.drop = lambda source, target, message: False
    written = cluster.request(leader, Put("orders", key, b"v3"))
    for _ in range(5):
        cluster.tick()
    served = cluster.request(follower, Get("orders", key, "session", written.position))
    assert served.value == b"v3" and served.position >= written.position  # type: ignore[operator]
    sent_to_leader = [
        m for s, t, m in cluster.sent[-20:] if s == follower and isinstance(m, ForwardRequest)
    ]
    assert not sent_to_leader  # answered locally


def test_bounded_staleness_reads_leave_a_follower_that_lost_the_leader() -> None:
    cluster, key, leader, follower = follower_setup()
    near = cluster.request(follower, Get("orders", key, "bounded", max_lag_ms=1_000))
    assert near.value == b"v1"
    cluster.drop = lambda source, target, message: (
        source == leader and target == follower and isinstance(message, Replicate)
    )
    assert cluster.request(leader, Put("orders", key, b"v2")).error is None
    for _ in range(100):  # 2 virtual seconds without hearing from the leader
        cluster.tick()
    bounded = cluster.request(follower, Get("orders", key, "bounded", max_lag_ms=1_000))
    assert bounded.value == b"v2"  # too stale here: served by the leader
    assert cluster.request(follower, Get("orders", key, "eventual")).value == b"v1"
    bad = cluster.request(follower, Get("orders", key, "sometimes"))
    assert bad.error is ErrorCode.INVALID_ARGUMENT and "consistency must be" in bad.message


def test_a_write_may_ask_for_another_mode_than_its_keyspace() -> None:
    cluster, key, leader, follower = follower_setup("majority")
    others = [n for n in ("node0", "node1", "node2") if n != leader]
    cluster.drop = lambda source, target, message: (
        source == leader and isinstance(message, Replicate)
    )
    quick = cluster.request(leader, Put("orders", key, b"fast", sync="async"))
    assert quick.error is None and quick.acks == 0
    cluster.drop = lambda source, target, message: (
        source == leader and target == others[0] and isinstance(message, Replicate)
    )
    careful = cluster.request(leader, Put("orders", key, b"all", sync="all"))
    assert careful.error is ErrorCode.TIMEOUT and careful.acks == 1, careful
    bad = cluster.request(leader, Put("orders", key, b"x", sync="quorum"))
    assert bad.error is ErrorCode.INVALID_ARGUMENT


def digests(cluster: Cluster, keyspace: str) -> dict[int, set[str]]:
    """partition -> the distinct digests of its replicas' live contents."""
    placement = cluster.nodes["node0"].partition_map.keyspaces[keyspace]
    result: dict[int, set[str]] = {}
    for partition, (_, nodes) in placement.replica_sets.items():
        for node_id in nodes:
            table = cluster.storages[node_id].data.get((keyspace, partition), {})
            live = [(key, decode_record(raw)[0]) for key, raw in table.items()]
            result.setdefault(partition, set()).add(replica_digest(live))
    return result


def test_statement_replication_diverges_only_when_not_deterministic() -> None:
    cluster = Cluster(seed=12)
    cluster.settle()
    for name, deterministic in (("exact", True), ("loose", False)):
        config = KeyspaceConfig(
            name, "fixed:4", 3, "single-leader", "all", "statement", deterministic
        )
        assert cluster.request("node0", CreateKeyspace(config)).error is None
        for index in range(12):
            key = b"k%d" % index
            assert cluster.request("node1", Put(name, key, b"", generate="random-id")).ok
            assert cluster.request("node2", Increment(name, b"n%d" % index, index)).ok
            assert cluster.request("node0", Append(name, b"a%d" % index, b"x")).ok
        assert cluster.request("node0", Delete(name, b"k0")).value is True
    exact, loose = digests(cluster, "exact"), digests(cluster, "loose")
    assert all(len(found) == 1 for found in exact.values()), exact
    diverged = [partition for partition, found in loose.items() if len(found) > 1]
    print(
        f"statement-based, not deterministic: {len(diverged)} of {len(loose)} partitions diverged"
    )
    assert diverged  # every replica drew its own random id
    # Increments and appends replicate exactly as statements: only the ids differ.
    for node_id in ("node0", "node1", "node2"):
        placement = cluster.nodes[node_id].partition_map.keyspaces["loose"]
        for index in range(12):
            key = b"n%d" % index
            partition = placement.layout.locate(key)
            raw = cluster.storages[node_id].get("loose", partition, key)
            if raw is not None:
                assert decode_record(raw)[0] == str(index).encode()


def replica_counts(cluster: Cluster, viewer: str) -> dict[str, int]:
    placement = cluster.nodes[viewer].partition_map.keyspaces["orders"]
    counts: dict[str, int] = {}
    for _, nodes in placement.replica_sets.values():
        for node_id in nodes:
            counts[node_id] = counts.get(node_id, 0) + 1
    return counts


def test_replicas_spread_to_a_joining_node_and_leave_a_decommissioned_one() -> None:
    seed = 21
    print(f"seed {seed}: replay with pytest tests/test_replication_node.py -k spread")
    cluster = FaultyCluster(seed=seed, limits=NodeLimits(automatic_replica_moves=True))
    cluster.settle()
    automatic = command("set_rebalance_mode", mode="automatic")
    assert metadata_change(cluster, "node0", automatic)["ok"]
    create(cluster, KeyspaceConfig("orders", "fixed:6", 2, "single-leader", "majority"))
    expected: dict[bytes, bytes] = {}
    for index in range(60):
        key = b"order-%d" % index
        assert cluster.request(f"node{index % 3}", Put("orders", key, b"v%d" % index)).ok
        expected[key] = b"v%d" % index
    assert replica_counts(cluster, "node0") == {"node0": 4, "node1": 4, "node2": 4}
    newcomer = join(cluster, 3)

    def balanced() -> bool:
        counts = replica_counts(cluster, "node1")
        return len(counts) == 4 and max(counts.values()) - min(counts.values()) <= 1

    tick_until(cluster, balanced, 30.0)
    print("after the join:", replica_counts(cluster, "node1"))
    for index in range(60, 90):  # writes keep flowing while followers move
        key = b"order-%d" % (index % 60)
        assert cluster.request("node2", Put("orders", key, b"w%d" % index)).ok
        expected[key] = b"w%d" % index
    for _ in range(100):
        cluster.tick()
    placement = cluster.nodes["node1"].partition_map.keyspaces["orders"]
    for key, value in expected.items():
        partition = placement.layout.locate(key)
        for node_id in placement.replica_sets[partition][1]:
            assert stored(cluster, node_id, key) == value, (node_id, key)
    # Decommission node0: its followers move, its partitions are handed over, it leaves.
    leaving = command("set_member_state", node_id="node0", state="leaving")
    assert metadata_change(cluster, "node1", leaving)["ok"]

    def left() -> bool:
        member = cluster.nodes["node1"].controller.metadata.members["node0"]
        return member.state == "left" and "node0" not in replica_counts(cluster, "node1")

    tick_until(cluster, left, 60.0)
    print("after the decommission:", replica_counts(cluster, "node1"))
    for _ in range(50):  # the retired copies are swept away
        cluster.tick()
    leftovers = [
        key
        for (keyspace, _), table in cluster.storages["node0"].data.items()
        if keyspace == "orders"
        for key in table
    ]
    assert not leftovers
    for key, value in expected.items():
        assert cluster.request(newcomer, Get("orders", key)).value == value, key


def test_a_restarted_node_never_serves_a_replicated_keyspace_unreplicated() -> None:
    cluster = FaultyCluster(seed=3)
    cluster.settle()
    create(cluster, replicated("majority"))
    cluster.kill("node1")
    cluster.revive("node1")  # no tick yet: its replicas are not configured
    for index in range(20):
        outcome = cluster.request("node1", Put("orders", b"k%d" % index, b"x"))
        assert outcome.error is not None or outcome.position is not None, outcome


def test_expired_keys_are_swept_through_the_log_on_every_replica() -> None:
    cluster = Cluster(seed=8)
    cluster.settle()
    create(cluster, replicated("majority"))
    keys = [b"session-%d" % index for index in range(10)]
    for key in keys:
        expiring = Put("orders", key, b"token", expire_at_ms=cluster.now_ms + 200)
        assert cluster.request("node0", expiring).ok
    assert cluster.request("node0", Put("orders", b"kept", b"forever")).ok
    for _ in range(200):  # 4 virtual seconds: the sweeps walk every partition
        cluster.tick()
    for node_id in ("node0", "node1", "node2"):
        for key in keys:
            assert stored(cluster, node_id, key) is None, (node_id, key)
        assert stored(cluster, node_id, b"kept") == b"forever"


def test_a_position_query_a_node_sends_itself_is_answered_inside_the_node() -> None:
    """The controller leader is a follower of the partition it fails over: it asks
    itself, holds the query while the lease it granted the old leader runs, then
    answers on a tick. A runtime has no connection to itself (nor has the simulator's
    network a link), so that answer must loop back inside the node, not be sent."""
    seed = 3
    print(f"seed {seed}: replay with pytest tests/test_replication_node.py -k sends_itself")
    cluster = FaultyCluster(seed=seed)
    controller_leader = cluster.settle()
    create(cluster, replicated("majority"))
    victim = next(n for n in ("node0", "node1", "node2") if n != controller_leader)
    key = next(
        b"k%d" % index
        for index in range(200)
        if leader_of(cluster, controller_leader, b"k%d" % index)[1] == victim
    )
    partition, _, epoch = leader_of(cluster, controller_leader, key)
    node = cluster.nodes[controller_leader]
    query = PositionQuery("orders", partition, epoch + 1)
    held = node.on_message(cluster.now_ms, controller_leader, query)
    assert held == []  # the victim's last heartbeat granted a lease: the answer waits
    cluster.kill(victim)
    cluster.sent.clear()
    for _ in range(150):  # 3 virtual seconds: past the lease
        cluster.tick()
    to_itself = [type(m).__name__ for source, target, m in cluster.sent if source == target]
    assert to_itself == []


def test_a_restarted_leader_never_writes_around_the_log_before_its_first_tick() -> None:
    """A node configures its replicas on its first tick; a request arriving before it
    must not take the path of unreplicated keyspaces (data written with no log entry
    and answered at once: a write the followers never see)."""
    seed = 3
    print(f"seed {seed}: replay with pytest tests/test_replication_node.py -k first_tick")
    cluster = FaultyCluster(seed=seed)
    cluster.settle()
    create(cluster, replicated("majority"))
    key = b"k1"
    _, leader, _ = leader_of(cluster, "node0", key)
    assert cluster.request(leader, Put("orders", key, b"before")).error is None
    cluster.kill(leader)
    cluster.revive(leader)
    node = cluster.nodes[leader]
    effects = node.on_client_request(cluster.now_ms, 99, Put("orders", key, b"around"))
    for effect in effects:
        if isinstance(effect, Persist):
            assert {write.keyspace for write in effect.writes} != {"orders"}, effect
        if isinstance(effect, Reply):
            outcome = effect.outcome
            assert outcome.error is not None or outcome.position is not None, outcome
    assert stored(cluster, leader, key) == b"before"


def test_parked_writes_to_one_key_see_each_other() -> None:
    """Forwards routed by a map newer than the leader's wait for it; when it comes they
    must not all run on the storage of before: two appends would both build on the old
    value (both answered length 8, one acknowledged append lost; replication
    simulation, seed 10087, mode all)."""
    seed = 3
    print(f"seed {seed}: replay with pytest tests/test_replication_node.py -k parked_writes")
    cluster = FaultyCluster(seed=seed)
    cluster.settle()
    create(cluster, replicated("all"))
    key = b"log-1"
    _, leader, _ = leader_of(cluster, "node0", key)
    source = next(n for n in ("node0", "node1", "node2") if n != leader)
    node = cluster.nodes[leader]
    newer = node.partition_map.version + 1
    for forward_id in (901, 902):
        request = ForwardRequest(forward_id, newer, Append("orders", key, b"1.1;"), 1)
        assert node.on_message(cluster.now_ms, source, request) == []  # parked
    cluster.sent.clear()
    assert cluster.request("node0", CreateKeyspace(KeyspaceConfig("other"))).error is None
    for _ in range(10):
        cluster.tick()  # one parked write per key per call: the second on a later tick
    answers = sorted(
        message.outcome.value
        for sender, _, message in cluster.sent
        if sender == leader and isinstance(message, ForwardReply) and message.forward_id > 900
    )
    assert answers == [4, 8]
    assert stored(cluster, leader, key) == b"1.1;1.1;"
