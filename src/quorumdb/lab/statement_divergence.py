"""Lab: statement-based replication and its non-determinism, measured.

Three replicated keyspaces (3 replicas, `all` mode so every replica has every write
when it is answered) take the same workload on a simulated 3-node cluster whose clocks
stand apart (0, +37 and -52 ms): puts of a value made by the server (its clock, or a
random id), increments, appends and plain puts. Then a digest of every replica of every
partition is compared (check/convergence.py, the same checker histories use):

- row-based: replicas ship the resulting records; they cannot diverge;
- statement-based, deterministic: the leader rewrites server time and random ids into
  literals before logging; they do not diverge either;
- statement-based, not deterministic: every replica runs `put-with-server-time` with
  its own clock and `put-with-random-id` with its own generator: they diverge, and the
  checker says where. Increments and appends replicate exactly as statements.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

DESCRIPTION = (
    "statement-based replication: replicas diverge on server time and random ids unless"
    " the leader rewrites them into literals (deterministic); row-based never diverges"
)

CONFIGS = (
    ("rows", "row", True),
    ("statements_deterministic", "statement", True),
    ("statements_raw", "statement", False),
)
CLOCK_OFFSETS_MS = (0, 37, -52)


@dataclass(frozen=True, slots=True)
class Row:
    keyspace: str
    log_format: str
    deterministic: bool
    operations: int
    partitions: int
    partitions_diverged: int
    keys_differing: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--operations", type=int, default=300, help="per keyspace (300)")
    parser.add_argument("--seed", type=int, default=1)


def measure(operations: int, seed: int) -> list[Row]:
    import random

    from quorumdb.core.keyspace import KeyspaceConfig
    from quorumdb.core.messages import Append, CreateKeyspace, Increment, Operation, Put
    from quorumdb.lab.sim_cluster import LabCluster

    lab = LabCluster(seed, 3, latency_ms=1, clock_offsets_ms=CLOCK_OFFSETS_MS)
    lab.wait_for_controller()
    rng = random.Random(seed)
    rows: list[Row] = []
    for name, log_format, deterministic in CONFIGS:
        config = KeyspaceConfig(
            name, "fixed:4", 3, "single-leader", "all", log_format, deterministic
        )
        created = lab.request("node0", CreateKeyspace(config))
        if created.error is not None:
            raise RuntimeError(f"creating {name}: {created.message}")
        for number in range(operations):
            key = b"k%d" % rng.randrange(40)
            roll = rng.random()
            operation: Operation
            if roll < 0.3:
                operation = Put(name, key, b"", generate="server-time")
            elif roll < 0.5:
                operation = Put(name, key, b"", generate="random-id")
            elif roll < 0.7:
                operation = Increment(name, b"counter-%d" % rng.randrange(8), rng.randrange(1, 9))
            elif roll < 0.85:
                operation = Append(name, b"log-%d" % rng.randrange(8), b"x%d," % number)
            else:
                operation = Put(name, key, b"plain-%d" % number)
            outcome = lab.request(f"node{rng.randrange(3)}", operation)
            if outcome.error is not None:
                raise RuntimeError(f"{name}: {operation} failed: {outcome.message}")
            lab.run_for(rng.randrange(1, 20))  # the clocks move on between writes
        lab.run_for(2_000)
        rows.append(_compare(lab, name, log_format, deterministic, operations))
    return rows


def _compare(lab: object, name: str, log_format: str, deterministic: bool, count: int) -> Row:
    from quorumdb.check.convergence import replica_digest
    from quorumdb.core.records import decode_record
    from quorumdb.lab.sim_cluster import LabCluster

    assert isinstance(lab, LabCluster)
    nodes = {node_id: sim.node for node_id, sim in lab.cluster.nodes.items()}
    any_node = next(node for node in nodes.values() if node is not None)
    placement = any_node.partition_map.keyspaces[name]
    diverged = 0
    differing: set[bytes] = set()
    for partition, (_, replicas) in placement.replica_sets.items():
        contents: list[dict[bytes, bytes]] = []
        for node_id in replicas:
            disk = lab.cluster.nodes[node_id].disk
            rows = disk.scan(name, partition, b"", None, 1_000_000)
            contents.append({key: decode_record(raw)[0] for key, raw in rows})
        if len({replica_digest(content.items()) for content in contents}) > 1:
            diverged += 1
            keys = set().union(*contents)
            differing |= {key for key in keys if len({c.get(key) for c in contents}) > 1}
    return Row(
        name,
        log_format,
        deterministic,
        count,
        len(placement.replica_sets),
        diverged,
        len(differing),
    )


def run(args: argparse.Namespace) -> int:
    rows = measure(args.operations, args.seed)
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
        return 0
    header = (
        f"{'keyspace':<26} {'log':<10} {'deterministic':<14} {'operations':>10}"
        f" {'partitions':>10} {'diverged':>9} {'keys differing':>15}"
    )
    print(header)
    for row in rows:
        print(
            f"{row.keyspace:<26} {row.log_format:<10} {str(row.deterministic):<14}"
            f" {row.operations:>10} {row.partitions:>10} {row.partitions_diverged:>9}"
            f" {row.keys_differing:>15}"
        )
    return 0
