"""The replication labs run and measure what they claim (small configurations)."""

from __future__ import annotations

from quorumdb.lab import async_failover, statement_divergence


def test_only_non_deterministic_statements_make_replicas_diverge() -> None:
    rows = {row.keyspace: row for row in statement_divergence.measure(operations=80, seed=3)}
    assert rows["rows"].partitions_diverged == 0
    assert rows["statements_deterministic"].partitions_diverged == 0
    assert rows["statements_raw"].partitions_diverged > 0
    assert rows["statements_raw"].keys_differing > 0


def test_a_leader_crash_loses_acknowledged_writes_only_in_async_and_files_them() -> None:
    for mode in ("majority", "semi"):
        row = async_failover.measure_one(mode, 1, 1)
        assert row.acknowledged > 0 and row.lost == 0, row
        assert row.failover_ms is not None and row.failover_ms < 3_000, row
    row = async_failover.measure_one("async", 1, 1)
    print(row)
    assert row.lost > 0 and row.in_lost_found == row.lost, row
