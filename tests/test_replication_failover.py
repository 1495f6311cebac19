"""The controller's failover rounds: a round that got a promise always ends in a new
epoch, even when the leader it replaces comes back."""

from __future__ import annotations

import json
from dataclasses import replace

from quorumdb.core.cluster import PartitionMap, local_members
from quorumdb.core.effects import Effect, Send
from quorumdb.core.keyspace import KeyspaceConfig
from quorumdb.core.replication.failover import FailoverCoordinator
from quorumdb.core.replication.log_format import Position
from quorumdb.core.replication.messages import PositionQuery, PositionReply, ReplicateReply
from quorumdb.core.replication.replicas import STEPPED_DOWN_REPORT_MS, Replicas
from test_core_node import DictStorage

NODES = ("node0", "node1", "node2")


def partition_map(epoch: int = 1) -> PartitionMap:
    config = KeyspaceConfig("orders", "fixed:1", 3, "single-leader", "majority")
    built = PartitionMap.build(1, local_members(3, 7000), (config,))
    placement = replace(built.keyspaces["orders"], replica_sets={0: (epoch, NODES)})
    return replace(built, keyspaces={"orders": placement})


class Proposals:
    def __init__(self) -> None:
        self.made: list[dict[str, object]] = []

    def __call__(self, proposal: bytes) -> list[Effect]:
        self.made.append(json.loads(proposal))
        return []


def tick(coordinator: FailoverCoordinator, now_ms: int, down: set[str], proposals: Proposals):
    return coordinator.on_tick(now_ms, True, partition_map(), frozenset(down), proposals)


def test_a_leader_back_before_any_promise_keeps_its_epoch() -> None:
    coordinator, proposals = FailoverCoordinator(), Proposals()
    asked = tick(coordinator, 0, {"node0"}, proposals)
    assert asked == [Send(n, PositionQuery("orders", 0, 2)) for n in ("node1", "node2")]
    for now_ms in range(100, 5_000, 100):
        tick(coordinator, now_ms, set(), proposals)  # back: the queries are still held
    assert proposals.made == []


def test_a_leader_back_after_a_promise_is_reelected_in_a_new_epoch() -> None:
    """node1 promised epoch 2 (it refuses node0's entries from now on); node0 comes back
    before node2 answers. Without a new epoch the partition would have no leader."""
    coordinator, proposals = FailoverCoordinator(), Proposals()
    tick(coordinator, 0, {"node0"}, proposals)
    coordinator.on_position_reply("node1", PositionReply("orders", 0, 2, Position(1, 7)))
    tick(coordinator, 100, set(), proposals)
    assert proposals.made == [
        {"op": "fail_over", "keyspace": "orders", "partition": 0, "expected_epoch": 1,
         "leader": "node0"}
    ]  # fmt: skip


def test_a_promise_heard_after_the_round_ended_reopens_it() -> None:
    """A query held by a lease is answered after the leader came back and the round
    was dropped: the promise still stands, so the partition still needs a new epoch."""
    coordinator, proposals = FailoverCoordinator(), Proposals()
    tick(coordinator, 0, {"node0"}, proposals)
    tick(coordinator, 100, set(), proposals)  # dropped: nobody had promised yet
    coordinator.on_position_reply("node2", PositionReply("orders", 0, 2, Position(1, 7)))
    tick(coordinator, 200, set(), proposals)
    assert [made["leader"] for made in proposals.made] == ["node0"]
    stale = coordinator.on_tick(300, True, partition_map(epoch=2), frozenset(), proposals)
    assert stale == [] and len(proposals.made) == 1  # epoch 2 reached: nothing more


def test_a_leader_that_stepped_down_tells_the_controller_leader() -> None:
    """The round that got a promise may have been run by a controller leader that lost
    its role since: the replica that leads by the map but promised a newer epoch says
    so (as a position answer), every half second, so the new controller re-elects."""
    config = KeyspaceConfig("orders", "fixed:1", 3, "single-leader", "majority")
    built = PartitionMap.build(1, local_members(3, 7000), (config,))
    placement = replace(built.keyspaces["orders"], replica_sets={0: (1, NODES)})
    replicas = Replicas("node0", DictStorage())
    replicas.sync(0, replace(built, keyspaces={"orders": placement}))
    assert replicas.stepped_down(0) == []  # leading its epoch: nothing to say
    refusal = ReplicateReply("orders", 0, 2, False, 0)  # node1 promised epoch 2
    replicas.on_message(10, "node1", refusal)
    replica = replicas.replica("orders", 0)
    assert replica is not None and not replica.is_leader
    assert replicas.stepped_down(20) == [PositionReply("orders", 0, 2, Position(0, 0))]
    assert replicas.stepped_down(20 + STEPPED_DOWN_REPORT_MS - 1) == []
    assert len(replicas.stepped_down(20 + STEPPED_DOWN_REPORT_MS)) == 1
