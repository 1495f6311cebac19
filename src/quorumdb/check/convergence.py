"""Replica convergence: after healing, all replicas of a partition hold the same data.

Rule: the history's `replica` records (one per node and partition, taken after the
cluster healed) are grouped by (keyspace, partition); within a group every digest
must be equal. A group with one replica is judged trivially and counted apart.

Digests come from `replica_digest`, which every driver (simulator or real
processes) must use: BLAKE2b (32 bytes) over the replica's live key/value pairs in
key order, each as 4-byte big-endian key length, key, 4-byte big-endian value
length, value. Equal digests mean equal contents; positions are only reported.

Limits: only what was recorded is compared. A replica missing from the records is
not noticed, and contents outside the digest (expiry times, tombstones, sibling
metadata) are not compared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from quorumdb.check.history import ReplicaRecord

DIGEST_SIZE_BYTES = 32


def _as_bytes(item: bytes | str) -> bytes:
    return item.encode() if isinstance(item, str) else item


def replica_digest(items: Iterable[tuple[bytes | str, bytes | str]]) -> str:
    """Hex digest of a replica's live (key, value) pairs; strings count as UTF-8."""
    pairs = sorted((_as_bytes(key), _as_bytes(value)) for key, value in items)
    hasher = hashlib.blake2b(digest_size=DIGEST_SIZE_BYTES)
    previous: bytes | None = None
    for key, value in pairs:
        if key == previous:
            raise ValueError(f"key {key!r} appears twice in one replica")
        previous = key
        hasher.update(len(key).to_bytes(4, "big") + key)
        hasher.update(len(value).to_bytes(4, "big") + value)
    return hasher.hexdigest()


@dataclass(frozen=True, slots=True)
class DivergentPartition:
    keyspace: str
    partition: int
    replicas: tuple[ReplicaRecord, ...]

    def __str__(self) -> str:
        shown = ", ".join(
            f"{record.node}={record.digest[:12]}"
            + ("" if record.position is None else f"@{list(record.position)}")
            for record in self.replicas
        )
        return f"keyspace {self.keyspace!r} partition {self.partition}: digests differ: {shown}"


@dataclass(slots=True)
class ConvergenceReport:
    judged: int = 0  # (keyspace, partition) groups
    single_replica: int = 0  # of those, groups with one replica
    violations: list[DivergentPartition] = field(default_factory=list)


def check_convergence(replicas: Sequence[ReplicaRecord]) -> ConvergenceReport:
    groups: dict[tuple[str, int], list[ReplicaRecord]] = {}
    for record in replicas:
        groups.setdefault((record.keyspace, record.partition), []).append(record)
    report = ConvergenceReport()
    for (keyspace, partition), records in sorted(groups.items()):
        report.judged += 1
        if len(records) == 1:
            report.single_replica += 1
        if len({record.digest for record in records}) > 1:
            ordered = tuple(sorted(records, key=lambda record: record.node))
            report.violations.append(DivergentPartition(keyspace, partition, ordered))
    return report
