"""Key ranges that split and merge on a running cluster: what nodes measure, what the
controller leader decides.

Each node measures the ranges it owns: the size (the estimate plans use), the request
rate (the load tracker's sampled counts) and, for a range over a threshold, where it
would split. A range too big splits at its median key by count, found by a walk over
its keys, a batch per tick, so no tick stalls on a large range; a range too hot splits
at the median of its recently requested keys, so each half gets about half the load.
The measurements spread on SWIM probes, stamped with the layout version they were
taken against. The leader feeds the current ones to the keyspace's policy
(`KeyRangeStrategy.decide`) and proposes a plan, which runs like any other: a split's
upper half is a new partition, copied to the node the placement gives it (often the
same node: a local copy); a merge copies the right range into the left one.

Rates are published only once the load tracker's windows all postdate the last layout
change, so a half just split off is not judged by the traffic of the whole, and a
range still sweeping keys it handed over is not measured at all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from quorumdb.core.cluster_metadata import ClusterMetadata, command
from quorumdb.core.keyspace import KeyspaceConfig
from quorumdb.core.partitioning import layout_from_dict, plan_rebalance
from quorumdb.core.partitioning.interface import RandomSource
from quorumdb.core.partitioning.key_range import KeyRangeLayout
from quorumdb.core.partitioning.key_range_policy import (
    Decision,
    KeyRangeStrategy,
    MergeDecision,
    PartitionLoad,
    SplitDecision,
    apply_decisions,
)
from quorumdb.storage.interface import StorageReader

RECENT_KEYS = 64  # sampled request keys remembered per range, for load splits
WALK_KEYS_PER_TICK = 1_024  # keys a median walk reads per tick

# keyspace -> partition -> [size in bytes, requests per second or None, split key hex or None]
Measurements = dict[str, dict[str, object]]


@dataclass(slots=True)
class _Walk:
    """A walk to the key at `target_index` of one range, as it stood when the walk began."""

    layout_version: int
    target_index: int
    cursor: bytes = b""
    seen: int = 0
    median: bytes | None = None
    finished: bool = False


@dataclass(slots=True)
class RangeMeasurements:
    """This node's side: recent keys, median walks and the payload it publishes."""

    load_window_ms: int
    recent: dict[tuple[str, int], deque[bytes]] = field(default_factory=dict)
    keyspaces: frozenset[str] = frozenset()  # the range keyspaces; others are not recorded
    _walks: dict[tuple[str, int], _Walk] = field(default_factory=dict)
    # keyspace -> (layout version, local time it was first seen)
    _stable_since: dict[str, tuple[int, int]] = field(default_factory=dict)

    def record(self, keyspace: str, partition: int, key: bytes) -> None:
        """A sampled request to a range keyspace (the node checks `keyspaces` first)."""
        recent = self.recent.get((keyspace, partition))
        if recent is None:
            recent = self.recent[(keyspace, partition)] = deque(maxlen=RECENT_KEYS)
        recent.append(key)

    def on_tick(self, storage: StorageReader) -> None:
        """Advance one unfinished median walk by a batch of keys."""
        for (keyspace, partition), walk in self._walks.items():
            if not walk.finished:
                _advance(
                    walk, storage.scan(keyspace, partition, walk.cursor, None, WALK_KEYS_PER_TICK)
                )
                return

    def measure(
        self,
        now_ms: int,
        node_id: str,
        metadata: ClusterMetadata,
        storage: StorageReader,
        size_of: Callable[[str, int], int],
        rates: Mapping[tuple[str, int], float],
        skip: set[tuple[str, int]],
    ) -> Measurements:
        """What this node publishes for the ranges it owns; `skip` are ranges still
        sweeping keys they handed over (their size would mislead)."""
        plan = metadata.plan_in_force()
        busy = set(plan.target_layouts) if plan is not None else set()
        result: Measurements = {}
        keyspaces: set[str] = set()
        for name, record in sorted(metadata.keyspaces.items()):
            if not record.config.get("partitioning", "").startswith("range"):
                continue
            keyspaces.add(name)
            if name in busy:
                continue
            strategy = KeyspaceConfig.from_dict(record.config).strategy()
            layout = layout_from_dict(record.layout)
            if not isinstance(strategy, KeyRangeStrategy) or not isinstance(layout, KeyRangeLayout):
                continue
            version, since_ms = self._stable_since.get(name, (-1, now_ms))
            if version != record.layout_version:
                self._forget(name)
                self._stable_since[name] = (record.layout_version, now_ms)
                since_ms = now_ms
            settled = now_ms - since_ms >= 2 * self.load_window_ms
            partitions: dict[str, object] = {}
            for partition in layout.partition_ids:
                if layout.owner(partition) != node_id or (name, partition) in skip:
                    continue
                size_bytes = size_of(name, partition)
                rate = rates.get((name, partition), 0.0) if settled else None
                split_key = self._split_key(
                    name,
                    partition,
                    record.layout_version,
                    strategy,
                    layout,
                    size_bytes,
                    rate,
                    storage,
                )
                partitions[str(partition)] = [
                    size_bytes,
                    rate,
                    None if split_key is None else split_key.hex(),
                ]
            result[name] = {"version": record.layout_version, "partitions": partitions}
        self.keyspaces = frozenset(keyspaces)
        return result

    def _split_key(
        self,
        keyspace: str,
        partition: int,
        layout_version: int,
        strategy: KeyRangeStrategy,
        layout: KeyRangeLayout,
        size_bytes: int,
        rate: float | None,
        storage: StorageReader,
    ) -> bytes | None:
        start, end = layout.bounds(partition)

        def inside(key: bytes | None) -> bytes | None:
            return key if key is not None and start < key and (end is None or key < end) else None

        index = (keyspace, partition)
        if size_bytes > strategy.split_bytes:
            walk = self._walks.get(index)
            if walk is not None and walk.layout_version == layout_version and walk.finished:
                del self._walks[index]  # measured once; the next interval walks afresh
                return inside(walk.median)
            if walk is None or walk.layout_version != layout_version:
                count = storage.count(keyspace, partition)
                self._walks[index] = _Walk(layout_version, count // 2)
            return None
        self._walks.pop(index, None)
        if rate is not None and rate > strategy.split_ops_per_second:
            keys = sorted(key for key in self.recent.get(index, ()) if inside(key) is not None)
            return keys[len(keys) // 2] if keys else None
        return None

    def _forget(self, keyspace: str) -> None:
        for index in [index for index in self.recent if index[0] == keyspace]:
            del self.recent[index]
        for index in [index for index in self._walks if index[0] == keyspace]:
            del self._walks[index]


def _advance(walk: _Walk, rows: list[tuple[bytes, bytes]]) -> None:
    if walk.seen + len(rows) > walk.target_index:
        walk.median = rows[walk.target_index - walk.seen][0]
        walk.finished = True
        return
    walk.seen += len(rows)
    if len(rows) < WALK_KEYS_PER_TICK:
        walk.finished = True  # the range shrank under the walk: no median this time
        return
    walk.cursor = rows[-1][0] + b"\x00"


def parse_measurements(
    documents: Mapping[str, Any], metadata: ClusterMetadata
) -> dict[str, dict[int, PartitionLoad]]:
    """Every node's published measurements that match the current layouts, by keyspace."""
    loads: dict[str, dict[int, PartitionLoad]] = {}
    for document in documents.values():
        try:
            for name, entry in document.items():
                record = metadata.keyspaces.get(name)
                if record is None or entry["version"] != record.layout_version:
                    continue
                for partition, (size_bytes, rate, split_hex) in entry["partitions"].items():
                    median = None if split_hex is None else bytes.fromhex(split_hex)
                    load = PartitionLoad(
                        int(size_bytes), None if rate is None else float(rate), median
                    )
                    loads.setdefault(name, {})[int(partition)] = load
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a peer's garbage must not stop planning
    return loads


def split_merge_command(
    metadata: ClusterMetadata,
    loads: Mapping[str, Mapping[int, PartitionLoad]],
    rng: RandomSource,
    sizes: Mapping[str, Mapping[int, int]],
) -> bytes | None:
    """A plan carrying out the policy's decisions for every range keyspace, or None.

    Splits are placed afresh by weight (a load split exists to spread load), so the
    upper halves can land on other nodes. A plan with merges moves nothing else: a
    merged range keeps its left neighbour's owner, so two transfers never fill one
    partition from different sides of an ownership change."""
    weights = metadata.active_members()
    target_layouts: dict[str, dict[str, object]] = {}
    based_on: dict[str, int] = {}
    transfers: list[dict[str, object]] = []
    reasons: list[str] = []
    for name, record in sorted(metadata.keyspaces.items()):
        measured = loads.get(name)
        if not measured or record.placed_for != weights or record.replica_sets:
            continue
        strategy = KeyspaceConfig.from_dict(record.config).strategy()
        layout = layout_from_dict(record.layout)
        if not isinstance(strategy, KeyRangeStrategy) or not isinstance(layout, KeyRangeLayout):
            continue
        decisions = strategy.decide(layout, measured)
        splits: tuple[Decision, ...] = tuple(d for d in decisions if isinstance(d, SplitDecision))
        chosen = splits or tuple(d for d in decisions if isinstance(d, MergeDecision))
        if not chosen:
            continue
        new_layout = apply_decisions(layout, chosen)
        if splits:
            new_layout = strategy.rebalance(new_layout, weights, rng)
        target_layouts[name] = new_layout.to_dict()
        based_on[name] = record.layout_version
        for transfer in plan_rebalance(layout, new_layout, sizes.get(name, {})).transfers:
            transfers.append({"keyspace": name, **transfer.to_dict()})
        reasons += [f"{name}: {_describe(decision)}" for decision in chosen]
    if not target_layouts:
        return None
    return command(
        "propose_plan",
        reason="; ".join(reasons),
        target_layouts=target_layouts,
        based_on=based_on,
        transfers=transfers,
        placed_for=weights,
    )


def _describe(decision: Decision) -> str:
    if isinstance(decision, SplitDecision):
        key = decision.split_key.decode("utf-8", "backslashreplace")
        return f"split {decision.partition_id} at {key!r} ({decision.reason})"
    return f"merge {decision.left_id} and {decision.right_id}"
