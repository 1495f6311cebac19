"""Growing a cluster in process: a node joins, the controller plans, the operator approves,
partitions stream to the newcomer while clients keep writing, ownership switches per
transfer, and nothing acknowledged is lost or missed."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from quorumdb.core.cluster import founding_metadata, local_members
from quorumdb.core.cluster_metadata import command
from quorumdb.core.effects import Effect, Persist, Send
from quorumdb.core.messages import ChangeMetadata, Get, Put
from quorumdb.core.node import Node
from quorumdb.core.partitioning import layout_from_dict
from quorumdb.core.rebalancer import Rebalancer, plan_command
from quorumdb.core.records import encode_record
from quorumdb.core.transfer import TransferAck, TransferData, TransferKey, TransferOpen
from quorumdb.storage.interface import Write
from test_core_node import Cluster, DictStorage


def metadata_change(cluster: Cluster, node_id: str, proposal: bytes) -> dict[str, object]:
    outcome = cluster.request(node_id, ChangeMetadata(proposal))
    assert outcome.error is None, outcome
    result: dict[str, object] = json.loads(outcome.value)
    return result


def join(cluster: Cluster, index: int) -> str:
    member = local_members(index + 1, 7000)[index]
    node_id = member.node_id
    cluster.storages[node_id] = DictStorage()
    cluster.nodes[node_id] = Node(
        node_id,
        cluster.members,
        cluster.storages[node_id],
        cluster.limits,
        100 + index,
        rng=random.Random(index),
        founder=False,
    )
    added = metadata_change(cluster, "node1", command("add_member", member=member.to_dict()))
    assert added["ok"], added
    return node_id


def test_a_joining_node_gets_its_share_while_clients_write() -> None:
    seed = 11
    print(f"seed {seed}: replay with pytest tests/test_rebalance_core.py")
    cluster = Cluster(seed=seed)
    cluster.settle()
    rng = random.Random(seed)
    expected: dict[bytes, bytes] = {}
    filler = b"x" * 100
    for index in range(1_200):
        key = b"k%d" % index
        assert cluster.request(f"node{index % 3}", Put("default", key, filler)).ok
        expected[key] = filler
    # A slow copy (1 KiB/s per transfer), so many writes land while it runs.
    throttled = metadata_change(cluster, "node0", command("set_throttle", bytes_per_second=1024))
    assert throttled["ok"], throttled
    for _ in range(300):  # 6 s: every node publishes its partition sizes (every 5 s)
        cluster.tick()
    newcomer = join(cluster, 3)
    cluster.settle()
    assert newcomer in cluster.nodes["node0"].controller.raft.configuration.learners
    # Manual mode: the plan waits for the operator.
    for _ in range(100):
        cluster.tick()
    plan = cluster.nodes["node0"].controller.metadata.plan
    assert plan is not None and plan.state == "proposed", plan
    assert plan.transfers and {t.target_node for t in plan.transfers} == {newcomer}
    # Sizes spread on SWIM probes let the leader estimate what each transfer moves.
    estimated = sum(transfer.estimated_bytes for transfer in plan.transfers)
    print(f"plan estimates {estimated} bytes")
    assert 0 < estimated
    approved = metadata_change(
        cluster, "node2", command("plan_step", plan_id=plan.plan_id, action="approve")
    )
    assert approved["ok"], approved
    # Clients keep writing and reading through every node while partitions move.
    writes_during_copy = 0
    for step in range(4_000):
        cluster.tick()
        for _ in range(3):
            key = b"k%d" % rng.randrange(1_250)
            entry = f"node{rng.randrange(4)}"
            if rng.random() < 0.5:
                value = b"v%d" % step
                outcome = cluster.request(entry, Put("default", key, value))
                assert outcome.ok, (step, outcome)
                expected[key] = value
                writes_during_copy += 1
            else:
                outcome = cluster.request(entry, Get("default", key))
                assert outcome.ok and outcome.value == expected.get(key), (step, key, outcome)
        if cluster.nodes["node0"].controller.metadata.plan.state == "done":
            break
    print(f"{writes_during_copy} writes while the plan ran ({step} ticks of 20 ms)")
    assert step >= 50  # the throttle made the copy slow enough to overlap many writes
    metadata = cluster.nodes["node0"].controller.metadata
    assert metadata.plan is not None and metadata.plan.state == "done", metadata.plan
    cluster.settle()
    for node_id in cluster.nodes:
        for key, value in expected.items():
            assert cluster.request(node_id, Get("default", key)).value == value
    owners = cluster.nodes["node0"].partition_map.keyspaces["default"]
    shares = {node_id: 0 for node_id in cluster.nodes}
    for partition in owners.partition_ids:
        shares[owners.owner(partition)] += 1
    assert shares == {"node0": 16, "node1": 16, "node2": 16, "node3": 16}, shares
    # Every key lives on its owner only (the sources deleted what they handed over).
    for _ in range(100):
        cluster.tick()
    for key in expected:
        partition, owner = owners.owner_of_key(key)
        holders = {
            node_id
            for node_id, storage in cluster.storages.items()
            if storage.get("default", partition, key) is not None
        }
        assert holders == {owner}, (key, holders, owner)


def test_a_target_restarted_after_completing_a_transfer_keeps_its_keys() -> None:
    """Found by the rebalance simulation (seed 82): the target applied the sealed message
    and reported done; the switch committed and the source deleted its copy; the target
    crashed and restarted with metadata from before the switch (it had not applied it),
    took the transfer for unfinished, cleared its "leftovers" and lost the only copy."""
    members = local_members(3, 7000)
    metadata = founding_metadata(members[:2])
    applied = [
        metadata.apply(1, command("add_member", member=members[2].to_dict())),
        metadata.apply(2, plan_command(metadata, random.Random(1)) or b""),
        metadata.apply(3, command("plan_step", plan_id=1, action="approve")),
    ]
    assert all(json.loads(result)["ok"] for result in applied), applied
    plan = metadata.plan
    assert plan is not None
    index, transfer = next(
        (index, transfer)
        for index, transfer in enumerate(plan.transfers)
        if transfer.target_node == "node2"
    )
    storage = DictStorage()
    proposals: list[bytes] = []

    def tick(rebalancer: Rebalancer, now_ms: int) -> list[Effect]:
        effects = rebalancer.on_tick(
            now_ms, metadata, False, random.Random(0), _record(proposals), lambda *_: True
        )
        for effect in effects:
            if isinstance(effect, Persist):
                storage.apply(effect.writes)
        return effects

    first_life = Rebalancer("node2", 1, storage)
    tick(first_life, 0)  # clears leftovers (there are none)
    [key] = [
        effect.message.key
        for effect in tick(first_life, 1_000)
        if isinstance(effect, Send)
        and isinstance(effect.message, TransferOpen)
        and effect.message.key.transfer_index == index
    ]
    record = encode_record(b"only-copy")
    sealed = TransferData(key, 1, ((b"moved-key", record),), True, True)
    for effect in first_life.on_message(1_001, transfer.source_node, sealed, metadata):
        if isinstance(effect, Persist):
            storage.apply(effect.writes)
    assert storage.get("default", transfer.target_partition, b"moved-key") == record
    # A new life with the same (stale) metadata: the transfer still looks unfinished.
    second_life = Rebalancer("node2", 2, storage)
    proposals.clear()
    for now_ms in range(5_000, 8_000, 100):
        tick(second_life, now_ms)
    assert storage.get("default", transfer.target_partition, b"moved-key") == record
    reports = [json.loads(proposal) for proposal in proposals]
    ours = [report for report in reports if report["transfer"] == index]
    assert ours and all(report["state"] == "done" for report in ours), reports


def _record(proposals: list[bytes]) -> Callable[[bytes], list[Effect]]:
    def propose(proposal: bytes) -> list[Effect]:
        proposals.append(proposal)
        return []

    return propose


def test_a_source_restarted_after_sealing_keeps_holding_the_moving_keys() -> None:
    """Found by the rebalance simulation (seeds 17, 107, 112): the source sealed, the
    target applied the sealed message, then the source crashed; its new life had no
    session, served writes to the moving keys as their owner, and the switch (the
    target's done report committing) then lost them."""
    members = local_members(3, 7000)
    metadata = founding_metadata(members[:2])
    assert json.loads(metadata.apply(1, command("add_member", member=members[2].to_dict())))["ok"]
    assert json.loads(metadata.apply(2, plan_command(metadata, random.Random(1)) or b""))["ok"]
    assert json.loads(metadata.apply(3, command("plan_step", plan_id=1, action="approve")))["ok"]
    plan = metadata.plan
    assert plan is not None
    index, transfer = next(
        (index, transfer)
        for index, transfer in enumerate(plan.transfers)
        if transfer.source_node == "node0"
    )
    new_layout = layout_from_dict(plan.target_layouts["default"])
    moving_key = next(
        key
        for key in (b"k%d" % number for number in range(10_000))
        if new_layout.locate(key) == transfer.target_partition
    )
    storage = DictStorage()
    storage.apply((Write("default", transfer.source_partition, moving_key, encode_record(b"v")),))

    def tick(rebalancer: Rebalancer, now_ms: int) -> list[Effect]:
        effects = rebalancer.on_tick(
            now_ms, metadata, False, random.Random(0), _record([]), lambda *_: True
        )
        for effect in effects:
            if isinstance(effect, Persist):
                storage.apply(effect.writes)
        return effects

    first_life = Rebalancer("node0", 1, storage)
    key = TransferKey(plan.plan_id, index, 1)
    opened = TransferOpen(key, "default", transfer.source_partition, transfer.target_partition)
    first_life.on_message(0, "node2", opened, metadata)
    for now_ms in range(0, 2_000, 100):  # the target acknowledges everything at once
        for effect in tick(first_life, now_ms):
            if isinstance(effect, Send) and isinstance(effect.message, TransferData):
                first_life.on_message(
                    now_ms, "node2", TransferAck(key, effect.message.sequence), metadata
                )
    assert first_life.sealed_for("default", transfer.source_partition, moving_key)
    second_life = Rebalancer("node0", 2, storage)
    second_life.recall_seals()
    assert second_life.sealed_for("default", transfer.source_partition, moving_key)
    assert ("default", transfer.source_partition) in second_life.moving_out()
    tick(second_life, 3_000)  # still in force: still sealed
    assert second_life.sealed_for("default", transfer.source_partition, moving_key)
    done = command("transfer_progress", plan_id=1, transfer=index, state="done", copied_bytes=1)
    assert json.loads(metadata.apply(4, done))["ok"]
    tick(second_life, 3_100)  # switched: the seal is over, and its marker deleted
    assert not second_life.sealed_for("default", transfer.source_partition, moving_key)
    third_life = Rebalancer("node0", 3, storage)
    third_life.recall_seals()
    assert not third_life.recalled
