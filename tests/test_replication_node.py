"""Single-leader keyspaces on in-process nodes: replica sets from the metadata, writes
through the leader, answers that say how many followers held them."""

from __future__ import annotations

from collections.abc import Callable

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
from quorumdb.core.records import decode_record, encode_record
from quorumdb.core.replication.lost_found import KEYSPACE as LOST_KEYSPACE
from quorumdb.core.replication.lost_found import decode_lost_write
from quorumdb.core.replication.messages import PositionQuery, Replicate
from test_core_node import Cluster


def replicated(sync: str = "majority", replicas: int = 3) -> KeyspaceConfig:
    return KeyspaceConfig("orders", "fixed:8", replicas, "single-leader", sync)


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
    assert cluster.request(survivor, Get("orders", key)).value == b"replicated"
    cluster.revive(victim)
    tick_until(cluster, lambda: stored(cluster, victim, key) == b"replicated", 20.0)
    table = cluster.storages[victim].data.get((LOST_KEYSPACE, 0), {})
    found = [decode_lost_write(k, v) for k, v in table.items()]
    assert [(w.key, w.record) for w in found] == [(key, encode_record(b"acknowledged-then-lost"))]


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
