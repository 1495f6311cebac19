"""Replica convergence and the shared replica digest."""

from __future__ import annotations

import hashlib

import pytest

from quorumdb.check.convergence import check_convergence, replica_digest
from quorumdb.check.history import ReplicaRecord


def replica(node: str, partition: int, contents: dict[str, str]) -> ReplicaRecord:
    return ReplicaRecord(node, "default", partition, replica_digest(contents.items()), (1, 9))


def test_the_digest_ignores_order_and_is_fixed() -> None:
    forward = replica_digest([("a", "1"), ("b", "2")])
    assert forward == replica_digest([(b"b", b"2"), (b"a", b"1")])
    assert len(forward) == 64
    # The documented encoding, written out: drivers elsewhere must produce exactly this.
    encoded = b"\x00\x00\x00\x01a\x00\x00\x00\x011\x00\x00\x00\x01b\x00\x00\x00\x012"
    assert forward == hashlib.blake2b(encoded, digest_size=32).hexdigest()


def test_the_digest_separates_keys_from_values() -> None:
    assert replica_digest([("ab", "c")]) != replica_digest([("a", "bc")])
    assert replica_digest([("a", "1")]) != replica_digest([("a", "2")])
    with pytest.raises(ValueError):
        replica_digest([("a", "1"), (b"a", b"2")])


def test_equal_replicas_pass_and_single_ones_are_counted() -> None:
    records = [
        replica("node0", 0, {"k": "v"}),
        replica("node1", 0, {"k": "v"}),
        replica("node2", 1, {}),
    ]
    report = check_convergence(records)
    assert (report.judged, report.single_replica, report.violations) == (2, 1, [])


def test_diverged_replicas_are_reported_with_their_nodes() -> None:
    records = [
        replica("node0", 0, {"k": "v"}),
        replica("node2", 0, {"k": "v", "lost": "x"}),
        replica("node1", 0, {"k": "v"}),
        replica("node0", 1, {"j": "w"}),
    ]
    report = check_convergence(records)
    [violation] = report.violations
    assert (violation.keyspace, violation.partition) == ("default", 0)
    assert [record.node for record in violation.replicas] == ["node0", "node1", "node2"]
    assert "partition 0: digests differ" in str(violation) and "@[1, 9]" in str(violation)
