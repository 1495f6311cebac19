"""The range-scan driver (`runtime/range_scan_driver.py`) over real layouts: keys placed by
the layout in partitions that answer `ScanPartition` as a node does, so routing, paging
and merging are checked together, including a key-range layout of many ranges (splits
are not yet made by running clusters)."""

from __future__ import annotations

import asyncio
import random

import pytest

from quorumdb.core.cluster import KeyspacePlacement, PartitionMap
from quorumdb.core.errors import ErrorCode
from quorumdb.core.keyspace import KeyspaceConfig
from quorumdb.core.messages import Operation, Outcome, ScanPage, ScanPartition, failure
from quorumdb.core.partitioning import Layout, parse_partitioning, split
from quorumdb.core.range_scan import RangePage
from quorumdb.runtime.range_scan_driver import range_scan_page

MEMBERS = {"node0": 1, "node1": 1, "node2": 1}


class NoRandomness:
    def random(self) -> float:
        raise AssertionError("initial layouts draw no random numbers")

    def shuffle(self, x: object) -> None:
        raise AssertionError("initial layouts draw no random numbers")


def range_layout(split_keys: list[bytes]) -> Layout:
    """One range cut at every split key (each split gives the upper half a fresh id)."""
    layout = parse_partitioning("range").initial_layout(MEMBERS, NoRandomness())
    for key in sorted(split_keys):
        layout = split(layout, layout.locate(key), key)  # type: ignore[arg-type]
    return layout


class FakeCluster:
    """Partitions as dicts placed by a layout; `call` answers like `Node._scan`."""

    def __init__(self, name: str, spec: str, layout: Layout | None = None) -> None:
        config = KeyspaceConfig(name, spec)
        layout = layout or parse_partitioning(spec).initial_layout(MEMBERS, NoRandomness())
        self.partition_map = PartitionMap(1, (), {name: KeyspacePlacement(config, layout)})
        self.layout = layout
        self.tables: dict[int, dict[bytes, bytes]] = {p: {} for p in layout.partition_ids}
        self.asked: list[int] = []
        self.keys_read = 0
        self.failing: set[int] = set()

    def put(self, key: bytes, value: bytes) -> None:
        self.tables[self.layout.locate(key)][key] = value

    async def call(self, operation: Operation) -> Outcome:
        assert isinstance(operation, ScanPartition)
        self.asked.append(operation.partition)
        if operation.partition in self.failing:
            return failure(ErrorCode.UNAVAILABLE, f"owner of {operation.partition} unreachable")
        end = operation.end
        rows = sorted(
            (key, b"" if operation.keys_only else value)
            for key, value in self.tables[operation.partition].items()
            if key >= operation.start and (end is None or key < end)
        )[: operation.limit + 1]
        next_start = rows[operation.limit][0] if len(rows) > operation.limit else None
        self.keys_read += min(len(rows), operation.limit)
        return Outcome(ScanPage(tuple(rows[: operation.limit]), next_start))

    def page(
        self, name: str, start: bytes, end: bytes | None, limit: int, keys_only: bool = False
    ) -> Outcome:
        coroutine = range_scan_page(
            self.call, self.partition_map, name, start, end, limit, keys_only, 10_000
        )
        return asyncio.run(coroutine)

    def scan_all(self, name: str, start: bytes, end: bytes | None, limit: int) -> list[bytes]:
        keys: list[bytes] = []
        position = start
        while True:
            outcome = self.page(name, position, end, limit)
            assert outcome.ok, outcome
            page = outcome.value
            assert isinstance(page, RangePage)
            keys.extend(key for key, _ in page.items)
            if page.resume is None:
                return keys
            position = page.resume


def test_a_range_layout_of_many_ranges_is_walked_in_key_order() -> None:
    layout = range_layout([b"key:%04d" % n for n in range(50, 1000, 50)])
    cluster = FakeCluster("ranges", "range", layout)
    assert len(layout.partition_ids) == 20
    keys = [b"key:%04d" % n for n in range(1000)]
    for key in random.Random(3).sample(keys, len(keys)):
        cluster.put(key, key.upper())
    for limit in (1, 7, 100, 5000):
        assert cluster.scan_all("ranges", b"", None, limit) == keys
    # A sub-range asks only the ranges covering it, in order.
    cluster.asked.clear()
    outcome = cluster.page("ranges", b"key:0120", b"key:0260", 1000)
    page = outcome.value
    assert isinstance(page, RangePage)
    assert [key for key, _ in page.items] == keys[120:260]
    assert page.items[0] == (b"key:0120", b"KEY:0120")
    assert cluster.asked == list(
        layout.partitions_for_range(b"key:0120", b"key:0260").partition_ids
    )
    assert len(cluster.asked) == 4 and page.partition_requests == 4


def test_a_hash_layout_is_merged_in_key_order() -> None:
    for spec in ("fixed:16", "ring:vnodes=8", "per-node:4", "mod-n"):
        cluster = FakeCluster("hashed", spec)
        keys = sorted(b"user:%d" % n for n in range(700))
        for key in keys:
            cluster.put(key, b"v")
        assert cluster.scan_all("hashed", b"", None, 9) == keys, spec
        assert cluster.scan_all("hashed", b"user:2", b"user:4", 50) == [
            key for key in keys if b"user:2" <= key < b"user:4"
        ], spec


def test_a_hash_tagged_range_asks_one_partition() -> None:
    cluster = FakeCluster("posts", "fixed:16")
    for user in (6, 7, 8):
        for post in range(300):
            cluster.put(b"{user:%d}:post:%03d" % (user, post), b"v")
    cluster.asked.clear()
    keys = cluster.scan_all("posts", b"{user:7}:post:000", b"{user:7}:post:999", 40)
    assert keys == [b"{user:7}:post:%03d" % post for post in range(300)]
    assert set(cluster.asked) == {cluster.layout.locate(b"{user:7}")}
    assert len(cluster.asked) == 8  # one request per page of 40


def test_keys_only_and_errors_pass_through() -> None:
    cluster = FakeCluster("hashed", "fixed:4")
    for n in range(20):
        cluster.put(b"k%02d" % n, b"value")
    page = cluster.page("hashed", b"", None, 5, keys_only=True).value
    assert isinstance(page, RangePage)
    assert page.items == tuple((b"k%02d" % n, b"") for n in range(5))
    cluster.failing.add(2)
    failed = cluster.page("hashed", b"", None, 5)
    assert failed.error is ErrorCode.UNAVAILABLE and "unreachable" in failed.message
    unknown = cluster.page("missing", b"", None, 5)
    assert unknown.error is ErrorCode.UNKNOWN_KEYSPACE
    backwards = cluster.page("hashed", b"b", b"a", 5)
    assert backwards.error is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("spec", "requests_max_per_page"),
    [("mod-n", 3), ("per-node:8", 27), ("fixed:16", 16), ("fixed:64", 64), ("ring", 460)],
)
def test_what_a_page_of_a_hash_layout_costs(spec: str, requests_max_per_page: int) -> None:
    """The figures of docs/partitioning.md, "Range scans": every partition once per page
    (rarely a second request to one holding more than twice its share of the page), and
    about twice the page's keys read."""
    cluster = FakeCluster("hashed", spec)
    partition_count = len(cluster.layout.partition_ids)
    for number in range(20_000):
        cluster.put(b"user:%06d" % number, b"v")
    for limit in (10, 100, 1000):
        position: bytes | None = b""
        for _ in range(5):
            cluster.keys_read = 0
            assert position is not None
            page = cluster.page("hashed", position, None, limit).value
            assert isinstance(page, RangePage) and len(page.items) == limit
            assert partition_count <= page.partition_requests <= requests_max_per_page
            assert cluster.keys_read <= 2.6 * limit + 2 * partition_count
            position = page.resume
