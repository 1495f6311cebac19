"""Runs one page of an ordered range scan with a node's real requests.

The deciding (which partitions, which keys are final, where the next page starts) is
`core/range_scan.py`; this only fetches what it asks for, one round of partition pages
at a time, concurrently, through `call` (`NodeRuntime.call`: the node runs a page of a
local partition itself and forwards the others to their owners).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from quorumdb.core.cluster import PartitionMap
from quorumdb.core.errors import ErrorCode
from quorumdb.core.messages import Operation, Outcome, ScanPage, ScanPartition, failure
from quorumdb.core.range_scan import RangeScan, RangeScanError, check_range

Call = Callable[[Operation], Awaitable[Outcome]]


async def range_scan_page(
    call: Call,
    partition_map: PartitionMap,
    keyspace: str,
    start: bytes,
    end: bytes | None,
    limit: int,
    keys_only: bool,
    page_limit_max: int,
) -> Outcome:
    """One page of [start, end): a `RangePage` as the outcome's value, or the first error
    of any partition (a partial page is never passed off as a complete one)."""
    placement = partition_map.keyspaces.get(keyspace)
    if placement is None:
        return failure(ErrorCode.UNKNOWN_KEYSPACE, f"unknown keyspace '{keyspace}'")
    try:
        check_range(start, end, limit, page_limit_max)
    except RangeScanError as error:
        return failure(ErrorCode.INVALID_ARGUMENT, str(error))
    route = placement.layout.partitions_for_range(start, end)
    scan = RangeScan(route, start, end, limit, page_limit_max)
    while not scan.done:
        requests = scan.requests()
        operations = [
            ScanPartition(keyspace, request.partition, request.start, request.limit, keys_only, end)
            for request in requests
        ]
        outcomes = await asyncio.gather(*(call(operation) for operation in operations))
        for request, outcome in zip(requests, outcomes, strict=True):
            if outcome.error is not None:
                return outcome
            page = outcome.value
            if not isinstance(page, ScanPage):
                return failure(ErrorCode.INTERNAL, f"partition {request.partition}: not a page")
            scan.receive(request.partition, page.items, page.next_start)
    return Outcome(scan.result())
