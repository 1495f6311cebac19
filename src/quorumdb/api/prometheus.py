"""Prometheus exposition of a node's numbers, built at scrape time from plain counters."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from quorumdb.core.replication.lost_found import pending_count
from quorumdb.gc_tuning import GENERATIONS, PAUSES
from quorumdb.runtime.metrics import LATENCY_BUCKETS_SECONDS
from quorumdb.runtime.node_runtime import NodeRuntime, now_ms

HOT_KEYS_EXPORTED = 10  # bounded label cardinality: only the top keys become series


class RateSampler:
    """Requests per second by operation over the last whole second, sampled by a timer."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime
        self.previous: dict[str, int] = {}
        self.per_second: dict[str, float] = {}

    def sample(self, interval_seconds: float) -> None:
        current = dict(self.runtime.metrics.requests_by_operation)
        self.per_second = {
            name: (count - self.previous.get(name, 0)) / interval_seconds
            for name, count in current.items()
        }
        self.previous = current


class NodeCollector(Collector):
    def __init__(self, runtime: NodeRuntime, sampler: RateSampler) -> None:
        self.runtime = runtime
        self.sampler = sampler

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        runtime = self.runtime
        metrics = runtime.metrics
        node = runtime.settings.node_id
        requests = CounterMetricFamily(
            "quorumdb_requests", "Client operations handled", labels=["node", "operation"]
        )
        errors = CounterMetricFamily(
            "quorumdb_request_errors", "Client operations that failed", labels=["node", "operation"]
        )
        rate = GaugeMetricFamily(
            "quorumdb_requests_per_second",
            "Client operations per second over the last second",
            labels=["node", "operation"],
        )
        latency = HistogramMetricFamily(
            "quorumdb_request_latency_seconds",
            "Time from a command's arrival to its reply being released",
            labels=["node", "operation"],
        )
        for operation, count in sorted(metrics.requests_by_operation.items()):
            requests.add_metric([node, operation], count)
            errors.add_metric([node, operation], metrics.errors_by_operation.get(operation, 0))
            rate.add_metric([node, operation], self.sampler.per_second.get(operation, 0.0))
            histogram = metrics.latency_by_operation[operation]
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, bucket_count in zip(
                LATENCY_BUCKETS_SECONDS, histogram.bucket_counts, strict=False
            ):
                cumulative += bucket_count
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", histogram.count))
            latency.add_metric([node, operation], buckets, histogram.sum_ns / 1e9)
        yield requests
        yield errors
        yield rate
        yield latency
        reads, writes = metrics.read_write_counts()
        ratio = GaugeMetricFamily(
            "quorumdb_read_write_ratio", "Reads per write since start", labels=["node"]
        )
        ratio.add_metric([node], reads / writes if writes else float(reads))
        yield ratio
        logged = runtime.logged_storage
        gauges = {
            "quorumdb_active_clients": ("Open client connections", metrics.active_clients),
            "quorumdb_read_cache_bytes": (
                "Bytes held by the read cache",
                runtime.commit.cache.size_bytes,
            ),
            "quorumdb_reply_cache_bytes": (
                "Bytes held by the reply cache (encoded GET replies of hot keys)",
                runtime.commit.replies.size_bytes,
            ),
            "quorumdb_storage_bytes": (
                "Bytes used by the storage engine",
                runtime.storage.size_bytes(),
            ),
            "quorumdb_wal_bytes": (
                "Bytes of write-ahead log on disk (0 with fsync 'no', which keeps none)",
                logged.log_size_bytes() if logged else 0,
            ),
            "quorumdb_wal_spare_bytes": (
                "Bytes of spare write-ahead log segments made ahead of need",
                logged.log_spare_bytes() if logged else 0,
            ),
            "quorumdb_memtable_writes": (
                "Writes in the write-ahead log not yet in LMDB (read from the memtable)",
                logged.memtable_write_count if logged else 0,
            ),
            "quorumdb_memtable_bytes": (
                "Key and value bytes held by the memtable",
                logged.memtable_bytes if logged else 0,
            ),
            "quorumdb_event_loop_longest_stall_seconds": (
                "Longest delay of the event loop's timer beyond its interval since start",
                runtime.loop_monitor.longest_stall_seconds,
            ),
            "quorumdb_partition_map_version": (
                "Version of the partition map this node routes by",
                runtime.node.partition_map.version,
            ),
        }
        for name, (help_text, value) in gauges.items():
            gauge = GaugeMetricFamily(name, help_text, labels=["node"])
            gauge.add_metric([node], value)
            yield gauge
        counters = {
            "quorumdb_group_commits": (
                "Storage transactions (one per group)",
                runtime.commit.group_count,
            ),
            "quorumdb_fsyncs": ("fsync calls made", runtime.commit.sync_count),
            "quorumdb_fsync_seconds": (
                "Seconds spent in fsync calls (on the event loop unless in a thread)",
                runtime.commit.sync_seconds,
            ),
            "quorumdb_writes_persisted": ("Key writes persisted", runtime.commit.write_count),
            "quorumdb_checkpoints": (
                "Checkpoints: LMDB flushed, the write-ahead log before it deleted",
                logged.checkpoint_count if logged else 0,
            ),
            "quorumdb_checkpoint_seconds": (
                "Seconds checkpoints spent flushing LMDB (in a worker thread)",
                logged.checkpoint_seconds if logged else 0.0,
            ),
            "quorumdb_memtable_flushes": (
                "LMDB transactions that wrote the memtable",
                logged.memtable_flush_count if logged else 0,
            ),
            "quorumdb_wal_records_replayed": (
                "Write-ahead log records replayed into LMDB at start-up",
                logged.replayed_record_count if logged else 0,
            ),
            "quorumdb_protocol_errors": ("Malformed client requests", metrics.protocol_errors),
            "quorumdb_read_cache_hits": (
                "Reads served by the read cache",
                runtime.commit.cache.hit_count,
            ),
            "quorumdb_read_cache_misses": (
                "Reads that went to storage",
                runtime.commit.cache.miss_count,
            ),
            "quorumdb_reply_cache_hits": (
                "GETs answered from the reply cache",
                runtime.commit.replies.hit_count,
            ),
            "quorumdb_reply_cache_misses": (
                "GETs of local keys the reply cache could not answer",
                runtime.commit.replies.miss_count,
            ),
            "quorumdb_connections_received": (
                "Client connections accepted",
                metrics.total_connections,
            ),
            "quorumdb_peer_messages_sent": (
                "Messages sent to other nodes",
                runtime.transport.sent_message_count,
            ),
            "quorumdb_peer_messages_received": (
                "Messages received from other nodes",
                runtime.transport.received_message_count,
            ),
            "quorumdb_event_loop_stalls": (
                "Times the event loop ran a timer 30 ms or more late (a stall)",
                runtime.loop_monitor.stall_count,
            ),
            "quorumdb_event_loop_stall_seconds": (
                "Seconds of lateness summed over the event loop's stalls",
                runtime.loop_monitor.stall_seconds,
            ),
            "quorumdb_peer_connections_rejected": (
                "Peer connections dropped for malformed traffic",
                runtime.transport.rejected_connection_count,
            ),
        }
        pauses = CounterMetricFamily(
            "quorumdb_gc_pause_seconds",
            "Seconds the garbage collector stopped the node, by generation",
            labels=["node", "generation"],
        )
        collections = CounterMetricFamily(
            "quorumdb_gc_collections",
            "Garbage collections, by generation",
            labels=["node", "generation"],
        )
        for generation in GENERATIONS:
            pauses.add_metric([node, str(generation)], PAUSES.seconds[generation])
            collections.add_metric([node, str(generation)], PAUSES.collections[generation])
        yield pauses
        yield collections
        for name, (help_text, value) in counters.items():
            counter = CounterMetricFamily(name, help_text, labels=["node"])
            counter.add_metric([node], value)
            yield counter
        yield from _load_metrics(runtime)
        yield from _cluster_metrics(runtime)
        yield from _replication_metrics(runtime)
        yield from _lost_found_metrics(runtime)


def _cluster_metrics(runtime: NodeRuntime) -> Iterator[GaugeMetricFamily]:
    """The controller and the current rebalancing plan, as this node sees them."""
    node = runtime.settings.node_id
    controller = runtime.node.controller
    status = controller.status()
    rebalance = controller.rebalance_status()
    plan_state = rebalance["state"] or "none"
    gauges = {
        "quorumdb_controller_is_leader": (
            "1 if this node leads the metadata controller",
            1 if controller.is_leader else 0,
        ),
        "quorumdb_controller_term": ("Raft term this node is in", status["term"]),
        "quorumdb_controller_commit_index": ("Raft commit index", status["commit_index"]),
        "quorumdb_controller_applied_index": ("Raft entries applied", status["applied_index"]),
        "quorumdb_rebalance_transfers_total": (
            "Transfers in the current plan",
            rebalance["transfers_total"],
        ),
        "quorumdb_rebalance_transfers_done": (
            "Transfers of the current plan that switched ownership",
            rebalance["transfers_done"],
        ),
        "quorumdb_rebalance_copied_bytes": (
            "Bytes the current plan's transfers reported copied",
            rebalance["copied_bytes"],
        ),
    }
    for name, (help_text, value) in gauges.items():
        gauge = GaugeMetricFamily(name, help_text, labels=["node"])
        gauge.add_metric([node], float(value))  # type: ignore[arg-type]
        yield gauge
    state = GaugeMetricFamily(
        "quorumdb_rebalance_plan_state", "1 for the current plan's state", labels=["node", "state"]
    )
    state.add_metric([node, str(plan_state)], 1)
    yield state


def _load_metrics(runtime: NodeRuntime) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    node = runtime.settings.node_id
    load = runtime.node.load
    current_ms = now_ms()
    served = CounterMetricFamily(
        "quorumdb_partition_requests",
        "Key operations served by this node, per partition",
        labels=["node", "keyspace", "partition"],
    )
    partition_rate = GaugeMetricFamily(
        "quorumdb_partition_requests_per_second",
        "Recent key operations per second, per partition (one to two load windows)",
        labels=["node", "keyspace", "partition"],
    )
    for entry in load.partitions(current_ms):
        labels = [node, entry.keyspace, str(entry.partition)]
        served.add_metric(labels, entry.requests_total)
        partition_rate.add_metric(labels, entry.requests_per_second)
    hot = GaugeMetricFamily(
        "quorumdb_hot_key_requests_per_second",
        f"Estimated rate of the {HOT_KEYS_EXPORTED} hottest keys on this node (sampled)",
        labels=["node", "keyspace", "key"],
    )
    for hot_key in load.hottest(current_ms, HOT_KEYS_EXPORTED):
        key_text = hot_key.key.decode("utf-8", "backslashreplace")
        hot.add_metric([node, hot_key.keyspace, key_text], hot_key.requests_per_second)
    yield served
    yield partition_rate
    yield hot


def _replication_metrics(runtime: NodeRuntime) -> Iterator[GaugeMetricFamily]:
    """Per replica on this node: role and epoch; per follower of a leader here, its lag."""
    node = runtime.settings.node_id
    labels = ["node", "keyspace", "partition"]
    role = GaugeMetricFamily(
        "quorumdb_replica_is_leader", "1 if this node leads the partition", labels=labels
    )
    epoch = GaugeMetricFamily("quorumdb_replica_epoch", "The partition's epoch here", labels=labels)
    lost = GaugeMetricFamily(
        "quorumdb_replica_lost_writes",
        "Writes this replica undid into lost+found since it started",
        labels=labels,
    )
    lag = GaugeMetricFamily(
        "quorumdb_replication_lag_entries",
        "Log entries a follower is behind this leader",
        labels=[*labels, "follower"],
    )
    lag_seconds = GaugeMetricFamily(
        "quorumdb_replication_lag_seconds",
        "Seconds since a follower last held everything this leader had logged (0: it does)",
        labels=[*labels, "follower"],
    )
    for row in runtime.node.replication.status(now_ms()):
        keys = [node, str(row["keyspace"]), str(row["partition"])]
        role.add_metric(keys, 1 if row["role"] == "leader" else 0)
        epoch.add_metric(keys, float(row["epoch"]))  # type: ignore[arg-type]
        lost.add_metric(keys, float(row["lost"]))  # type: ignore[arg-type]
        for follower, progress in row.get("followers", {}).items():  # type: ignore[attr-defined]
            lag.add_metric([*keys, follower], float(progress["lag"]))
            lag_seconds.add_metric([*keys, follower], progress["lag_ms"] / 1000.0)
    decisions = GaugeMetricFamily(
        "quorumdb_replication_changes_proposed",
        "Failovers and replica moves this node proposed while it led the controller",
        labels=["node", "change"],
    )
    decisions.add_metric([node, "failover"], runtime.node.failover.failovers_proposed)
    decisions.add_metric([node, "replica-move"], runtime.node.placer.moves_proposed)
    yield decisions
    yield role
    yield epoch
    yield lost
    yield lag
    yield lag_seconds


def _lost_found_metrics(runtime: NodeRuntime) -> Iterator[GaugeMetricFamily]:
    """Entries of this node's lost+found neither replayed nor discarded yet (two B-tree
    counts, no scan)."""
    entries = GaugeMetricFamily(
        "quorumdb_lost_found_entries",
        "Lost+found entries on this node waiting for an operator (quorumdb lostfound list)",
        labels=["node"],
    )
    entries.add_metric([runtime.settings.node_id], float(pending_count(runtime.node.storage)))
    yield entries


def build_registry(runtime: NodeRuntime, sampler: RateSampler) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(runtime, sampler))
    return registry
