"""Lab: what a leader crash costs in each replication mode, measured in the simulator.

A 3-node simulated cluster, one partition with 3 replicas, link latency L each way;
each cell sums several crashes (`--runs`, 3), each its own seed.
A client keeps 16 writes in flight, each to a new key, through a node that is not the
leader (so it never dies with it). After 1 s the leader crashes (power loss: whatever
it had not synced is gone too); the client carries on; 3 s later the old leader
restarts and rejoins as a follower. Then every acknowledged key is read back.

- lost: acknowledged writes the cluster no longer has (only `async` may lose any: the
  leader acknowledges before any follower has the write);
- in lost+found: how many of those the nodes filed when they undid them;
- failover: from the crash to the first write acknowledged by the new leader.

A write the crashed leader had acknowledged but not yet sent to anyone is gone from
every surviving copy, so nothing can file it: lost+found accounts for what a replica
undoes, i.e. what reached the old leader's disk and came back with it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

DESCRIPTION = (
    "a leader crash in async, semi and majority modes: acknowledged writes lost, how many"
    " lost+found holds, and the failover time, by replication latency"
)

MODES = ("async", "semi", "majority")
LATENCIES_MS = (1, 5, 20)
IN_FLIGHT = 16
CRASH_AFTER_MS = 1_000
RESTART_AFTER_MS = 3_000
SETTLE_MS = 3_000


@dataclass(frozen=True, slots=True)
class Row:
    mode: str
    latency_ms: int
    acknowledged: int
    lost: int
    in_lost_found: int
    failover_ms: int | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="crashes per cell (3)")


def measure_one(mode: str, latency_ms: int, seed: int) -> Row:
    from quorumdb.core.keyspace import KeyspaceConfig
    from quorumdb.core.messages import CreateKeyspace, Get, Put
    from quorumdb.core.replication.lost_found import KEYSPACE as LOST_KEYSPACE
    from quorumdb.core.replication.lost_found import decode_lost_write
    from quorumdb.lab.sim_cluster import LabCluster

    lab = LabCluster(seed, 3, latency_ms=latency_ms)
    lab.wait_for_controller()
    config = KeyspaceConfig("t", "fixed:1", 3, "single-leader", mode)
    if lab.request("node0", CreateKeyspace(config)).error is not None:
        raise RuntimeError("could not create the keyspace")
    lab.run_for(500)

    def leader() -> tuple[str, int]:
        for sim in lab.cluster.nodes.values():
            if sim.node is not None:
                epoch, nodes = sim.node.partition_map.keyspaces["t"].replica_sets[0]
                return nodes[0], epoch
        raise RuntimeError("no node is up")

    old_leader, old_epoch = leader()
    entry = next(node_id for node_id in sorted(lab.cluster.nodes) if node_id != old_leader)
    pending: dict[int, bytes] = {}
    acknowledged: list[bytes] = []
    failover_ms: int | None = None
    crashed_at = restarted_at = None
    start = lab.now_ms
    number = 0
    while lab.now_ms - start < CRASH_AFTER_MS + RESTART_AFTER_MS + SETTLE_MS:
        elapsed = lab.now_ms - start
        if crashed_at is None and elapsed >= CRASH_AFTER_MS:
            crashed_at = lab.now_ms
            lab.cluster.crash(old_leader)
        if restarted_at is None and elapsed >= CRASH_AFTER_MS + RESTART_AFTER_MS:
            restarted_at = lab.now_ms
            lab.cluster.restart(old_leader)
        while len(pending) < IN_FLIGHT and elapsed < CRASH_AFTER_MS + RESTART_AFTER_MS:
            number += 1
            key = b"w-%d" % number
            pending[lab.submit(entry, Put("t", key, key))] = key
        lab.run_for(2)
        for request_id in [rid for rid in pending if rid in lab.answers.outcomes]:
            outcome = lab.answers.outcomes.pop(request_id)
            key = pending.pop(request_id)
            if outcome.error is None:
                acknowledged.append(key)
                epoch = outcome.position[0] if outcome.position else 0
                if crashed_at is not None and failover_ms is None and epoch > old_epoch:
                    failover_ms = lab.now_ms - crashed_at
    lab.run_for(SETTLE_MS)
    survivors = {key for key in acknowledged if _present(lab, entry, key, Get)}
    lost = [key for key in acknowledged if key not in survivors]
    filed: set[bytes] = set()
    for sim in lab.cluster.nodes.values():
        for storage_key, value in sim.disk.scan(LOST_KEYSPACE, 0, b"", None, 10_000_000):
            if not storage_key.startswith(b"t\x00"):
                continue
            filed.add(decode_lost_write(storage_key, value).key)
    accounted = sum(1 for key in lost if key in filed)
    return Row(mode, latency_ms, len(acknowledged), len(lost), accounted, failover_ms)


def _present(lab: object, node_id: str, key: bytes, get: type) -> bool:
    from quorumdb.lab.sim_cluster import LabCluster

    assert isinstance(lab, LabCluster)
    for _ in range(5):
        outcome = lab.request(node_id, get("t", key))
        if outcome.error is None:
            return outcome.value is not None
        lab.run_for(500)
    raise RuntimeError(f"could not read {key!r} back: {outcome.message}")


def measure(seed: int, runs: int = 3) -> list[Row]:
    """Each cell summed over `runs` crashes (seeds seed, seed + 1, ...); the failover is
    their median."""
    rows: list[Row] = []
    for latency_ms in LATENCIES_MS:
        for mode in MODES:
            cells = [measure_one(mode, latency_ms, seed + run) for run in range(runs)]
            failovers = sorted(c.failover_ms for c in cells if c.failover_ms is not None)
            rows.append(
                Row(
                    mode,
                    latency_ms,
                    sum(c.acknowledged for c in cells),
                    sum(c.lost for c in cells),
                    sum(c.in_lost_found for c in cells),
                    failovers[len(failovers) // 2] if failovers else None,
                )
            )
    return rows


def run(args: argparse.Namespace) -> int:
    rows = measure(args.seed, args.runs)
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
        return 0
    print(
        f"{'mode':<9} {'latency ms':>10} {'acknowledged':>12} {'lost':>6}"
        f" {'in lost+found':>14} {'failover ms':>12}"
    )
    for row in rows:
        failover = "-" if row.failover_ms is None else str(row.failover_ms)
        print(
            f"{row.mode:<9} {row.latency_ms:>10} {row.acknowledged:>12} {row.lost:>6}"
            f" {row.in_lost_found:>14} {failover:>12}"
        )
    return 0
