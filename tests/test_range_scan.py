"""The pure range-scan machine (`core/range_scan.py`) against a sorted-dict model: across
pages of any size, every live key in [start, end) appears exactly once and in order,
however the keys are spread over partitions, whether the route is ordered or hashed."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumdb.core.partitioning import ScanRoute
from quorumdb.core.range_scan import (
    BOUND_BYTES_MAX,
    RangePage,
    RangeScan,
    RangeScanError,
    check_range,
    decode_token,
    encode_token,
    fan_out_page_limit,
    page_start,
)

EXPIRED = b"<expired>"  # a stored row the partition does not return (expired or hidden)


class Partitions:
    """Partitions as sorted dicts, answering pages as `Node._scan` does: `limit + 1` rows
    read, rows that are not live skipped, `next_start` the first row not returned."""

    def __init__(self, rows: dict[int, dict[bytes, bytes]]) -> None:
        self.rows = {partition: dict(sorted(table.items())) for partition, table in rows.items()}
        self.pages_served = 0

    def page(
        self, partition: int, start: bytes, end: bytes | None, limit: int
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        self.pages_served += 1
        table = self.rows[partition]
        rows = [
            (key, value)
            for key, value in table.items()
            if key >= start and (end is None or key < end)
        ][: limit + 1]
        next_start = rows[limit][0] if len(rows) > limit else None
        return [row for row in rows[:limit] if row[1] != EXPIRED], next_start

    def live_keys(self, start: bytes, end: bytes | None) -> list[bytes]:
        return sorted(
            key
            for table in self.rows.values()
            for key, value in table.items()
            if value != EXPIRED and key >= start and (end is None or key < end)
        )


def run_page(
    partitions: Partitions,
    route: ScanRoute,
    start: bytes,
    end: bytes | None,
    limit: int,
    page_limit_max: int = 10_000,
    rounds_max: int = 32,
    shuffle: random.Random | None = None,
) -> RangePage:
    """Drive the machine as the runtime does (a round's pages in any order)."""
    scan = RangeScan(route, start, end, limit, page_limit_max, rounds_max)
    for _ in range(100_000):
        if scan.done:
            return scan.result()
        requests = scan.requests()
        assert requests, "a machine that is not done must ask for something"
        if shuffle is not None:
            shuffle.shuffle(requests)
        for request in requests:
            assert 1 <= request.limit <= page_limit_max
            items, next_start = partitions.page(
                request.partition, request.start, end, request.limit
            )
            scan.receive(request.partition, items, next_start)
    raise AssertionError("the scan did not finish")


def scan_all(
    partitions: Partitions,
    route: ScanRoute,
    start: bytes,
    end: bytes | None,
    limit: int,
    **options: object,
) -> tuple[list[bytes], int]:
    """Every page until the resume position is None, through the opaque token."""
    keys: list[bytes] = []
    position = start
    pages = 0
    while True:
        page = run_page(partitions, route, position, end, limit, **options)  # type: ignore[arg-type]
        pages += 1
        assert len(page.items) <= limit
        keys.extend(key for key, _ in page.items)
        if page.resume is None:
            return keys, pages
        assert page.resume > position, "every page must move the scan forward"
        position = decode_token(encode_token(page.resume))
        assert pages < 10_000


key_strategy = st.binary(min_size=1, max_size=4)
rows_strategy = st.dictionaries(key_strategy, st.sampled_from([b"v", b"w", EXPIRED]), max_size=60)


@st.composite
def spread(draw: st.DrawFn, ordered: bool) -> tuple[Partitions, ScanRoute]:
    """Keys dealt to partitions: at random (hash layouts) or by cut points (ranges)."""
    rows = draw(rows_strategy)
    partition_count = draw(st.integers(1, 6))
    ids = draw(
        st.lists(
            st.integers(0, 1000), min_size=partition_count, max_size=partition_count, unique=True
        )
    )
    tables: dict[int, dict[bytes, bytes]] = {partition: {} for partition in ids}
    if ordered:
        cuts = sorted(draw(st.lists(key_strategy, min_size=partition_count - 1,
                                    max_size=partition_count - 1)))  # fmt: skip
        for key, value in rows.items():
            index = sum(1 for cut in cuts if key >= cut)
            tables[ids[index]][key] = value
    else:
        for key, value in rows.items():
            tables[draw(st.sampled_from(ids))][key] = value
    return Partitions(tables), ScanRoute(tuple(ids), in_key_order=ordered)


@st.composite
def bounds(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    start = draw(st.binary(max_size=3))
    end = draw(st.none() | st.binary(min_size=1, max_size=4).filter(lambda e: e > start))
    return start, end


@settings(max_examples=400, deadline=None)
@given(
    layout=st.booleans().flatmap(spread),
    range_bounds=bounds(),
    limit=st.integers(1, 12),
    page_limit_max=st.integers(1, 12),
    rounds_max=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_every_key_in_range_once_and_in_order(
    layout: tuple[Partitions, ScanRoute],
    range_bounds: tuple[bytes, bytes | None],
    limit: int,
    page_limit_max: int,
    rounds_max: int,
    seed: int,
) -> None:
    partitions, route = layout
    start, end = range_bounds
    limit = min(limit, page_limit_max)
    keys, _ = scan_all(
        partitions,
        route,
        start,
        end,
        limit,
        page_limit_max=page_limit_max,
        rounds_max=rounds_max,
        shuffle=random.Random(seed),
    )
    assert keys == partitions.live_keys(start, end)


@settings(max_examples=200, deadline=None)
@given(layout=spread(ordered=False), limit=st.integers(1, 20))
def test_a_full_page_is_full_unless_the_range_ends(
    layout: tuple[Partitions, ScanRoute], limit: int
) -> None:
    """With rounds to spare, a page stops short only at the end of the range."""
    partitions, route = layout
    page = run_page(partitions, route, b"", None, limit, rounds_max=10_000)
    live = partitions.live_keys(b"", None)
    assert [key for key, _ in page.items] == live[:limit]
    if len(live) <= limit:
        assert page.resume is None or not partitions.live_keys(page.resume, None)


def test_values_travel_with_their_keys() -> None:
    partitions = Partitions({1: {b"a": b"1", b"c": b"3"}, 2: {b"b": b"2"}})
    page = run_page(partitions, ScanRoute((1, 2), in_key_order=False), b"", None, 10)
    assert page.items == ((b"a", b"1"), (b"b", b"2"), (b"c", b"3"))
    assert page.resume is None


def test_ordered_route_asks_one_partition_at_a_time() -> None:
    tables = {pid: {b"%d-%02d" % (pid, n): b"v" for n in range(10)} for pid in (1, 2, 3)}
    partitions = Partitions(tables)
    scan = RangeScan(ScanRoute((1, 2, 3), in_key_order=True), b"", None, 15, 10_000)
    asked: list[int] = []
    while not scan.done:
        requests = scan.requests()
        assert len(requests) == 1
        asked.append(requests[0].partition)
        items, next_start = partitions.page(
            requests[0].partition, requests[0].start, None, requests[0].limit
        )
        scan.receive(requests[0].partition, items, next_start)
    page = scan.result()
    assert asked == [1, 2]
    assert [key for key, _ in page.items][-1] == b"2-04"
    assert page.resume == b"2-05"


def test_hash_route_fans_out_once_for_evenly_spread_keys() -> None:
    """16 partitions, 100 keys each, a page of 100: one round of 16 requests."""
    rng = random.Random(7)
    tables: dict[int, dict[bytes, bytes]] = {pid: {} for pid in range(16)}
    for number in range(1600):
        tables[rng.randrange(16)][b"key:%05d" % number] = b"v"
    partitions = Partitions(tables)
    page = run_page(partitions, ScanRoute(tuple(range(16)), in_key_order=False), b"", None, 100)
    assert [key for key, _ in page.items] == [b"key:%05d" % n for n in range(100)]
    assert page.partition_requests == partitions.pages_served
    assert 16 <= page.partition_requests <= 20


def test_a_run_of_expired_keys_still_moves_the_scan_forward() -> None:
    tables = {1: {b"k%04d" % n: EXPIRED for n in range(500)} | {b"z": b"live"}}
    partitions = Partitions(tables)
    route = ScanRoute((1,), in_key_order=True)
    first = run_page(partitions, route, b"", None, 1, rounds_max=2)
    assert first.items == () and first.resume is not None and first.resume > b""
    keys, pages = scan_all(partitions, route, b"", None, 1, rounds_max=2)
    assert keys == [b"z"] and pages > 1


def test_a_key_held_by_two_partitions_is_emitted_once() -> None:
    """While data moves between partitions the same key may be read from both."""
    partitions = Partitions({1: {b"a": b"1", b"b": b"2"}, 2: {b"b": b"2", b"c": b"3"}})
    page = run_page(partitions, ScanRoute((1, 2), in_key_order=False), b"", None, 10)
    assert [key for key, _ in page.items] == [b"a", b"b", b"c"]


def test_keys_past_end_from_a_node_that_ignores_end_are_dropped() -> None:
    scan = RangeScan(ScanRoute((1,), in_key_order=True), b"a", b"c", 10, 10_000)
    (request,) = scan.requests()
    scan.receive(request.partition, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], b"d")
    assert scan.done
    assert scan.result() == RangePage(((b"a", b"1"), (b"b", b"2")), None, 1)


def test_fan_out_page_limit() -> None:
    assert fan_out_page_limit(100, 16, 10_000) == 14
    assert fan_out_page_limit(100, 1, 10_000) == 100
    assert fan_out_page_limit(1, 64, 10_000) == 1
    assert fan_out_page_limit(10_000, 2, 500) == 500


@pytest.mark.parametrize(
    ("start", "end", "limit", "message"),
    [
        (b"b", b"a", 10, "end must be greater than start"),
        (b"a", b"a", 10, "end must be greater than start"),
        (b"a", b"b", 0, "limit must be between 1 and 10000"),
        (b"a", b"b", 10_001, "limit must be between 1 and 10000"),
        (b"a" * (BOUND_BYTES_MAX + 1), None, 10, "start is 1025 bytes"),
    ],
)
def test_bad_requests_are_refused_clearly(
    start: bytes, end: bytes | None, limit: int, message: str
) -> None:
    with pytest.raises(RangeScanError, match=message):
        check_range(start, end, limit, 10_000)


@given(st.binary(min_size=1, max_size=BOUND_BYTES_MAX))
def test_tokens_round_trip(resume: bytes) -> None:
    token = encode_token(resume)
    assert "=" not in token and "+" not in token and "/" not in token
    assert decode_token(token) == resume


@pytest.mark.parametrize("token", ["", "!!", "a", "é", "ab==cd"])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(RangeScanError, match="malformed continuation token"):
        decode_token(token)


def test_a_page_starts_at_its_token_never_below_start_nor_at_end() -> None:
    assert page_start(b"b", b"m", 10, 100, None) == b"b"
    assert page_start(b"b", b"m", 10, 100, encode_token(b"c\x00")) == b"c\x00"
    assert page_start(b"b", b"m", 10, 100, encode_token(b"a")) == b"b"
    assert page_start(b"b", b"m", 10, 100, encode_token(b"m")) is None
    assert page_start(b"b", None, 10, 100, encode_token(b"zz")) == b"zz"
    with pytest.raises(RangeScanError, match="end must be greater"):
        page_start(b"m", b"b", 10, 100, encode_token(b"c"))
