"""What replicas of one partition say to each other (and the controller to them)."""

from __future__ import annotations

from dataclasses import dataclass

from quorumdb.core.replication.log_format import Entry, Position


@dataclass(frozen=True, slots=True)
class Replicate:
    """Leader -> follower: entries after `prev`, or none (a heartbeat)."""

    keyspace: str
    partition: int
    epoch: int
    prev: Position
    entries: tuple[Entry, ...]
    leader_last: Position  # the leader's last entry when it sent this
    trim_through: int  # every replica holds the log up to here: it may be dropped
    sent_ms: int = 0  # the leader's clock when sent: echoed back, it dates a lease grant


@dataclass(frozen=True, slots=True)
class ReplicateReply:
    """Follower -> leader. On success `match` is the sequence through which the logs
    agree; on a mismatch `conflict_epoch` is the epoch the follower holds at `prev`
    (0: its log is shorter) and `conflict_first` where the leader should resume."""

    keyspace: str
    partition: int
    epoch: int  # the replier's promised epoch
    success: bool
    match: int
    conflict_epoch: int = 0
    conflict_first: int = 0
    echo_ms: int = 0  # the `sent_ms` of the Replicate answered: the lease grant began after it


@dataclass(frozen=True, slots=True)
class PositionQuery:
    """Controller -> replica, before a failover to `epoch`: promise it, say how far you got."""

    keyspace: str
    partition: int
    epoch: int


@dataclass(frozen=True, slots=True)
class PositionReply:
    keyspace: str
    partition: int
    epoch: int  # the replier's promised epoch (>= the query's)
    last: Position


@dataclass(frozen=True, slots=True)
class LeaderSuspicion:
    """Follower -> controller leader: this partition's leader of `epoch` has been silent
    longer than the leader timeout. One source; a failover needs two (or the failure
    detector's verdict)."""

    keyspace: str
    partition: int
    epoch: int


@dataclass(frozen=True, slots=True)
class ReplicaSnapshot:
    """Leader -> a follower too far behind for the log: the partition's records, a chunk
    at a time, in key order. The first chunk clears the follower's copy; after the last,
    the follower's log starts at `base` and ordinary replication resumes from there.

    `epoch_starts` (every chunk carries the same) are where each epoch of the leader's
    log through `base` begins: with them the follower tells the entries it discards that
    the leader's log holds from a divergent tail, which it files in lost+found."""

    keyspace: str
    partition: int
    epoch: int
    snapshot_id: int
    chunk: int
    items: tuple[tuple[bytes, bytes], ...]
    done: bool
    base: Position
    epoch_starts: tuple[Position, ...]


@dataclass(frozen=True, slots=True)
class ReplicaSnapshotAck:
    keyspace: str
    partition: int
    epoch: int  # the replier's promised epoch
    snapshot_id: int
    chunk: int  # every chunk up to this one is durable


ReplicationMessage = (
    Replicate
    | ReplicateReply
    | PositionQuery
    | PositionReply
    | LeaderSuspicion
    | ReplicaSnapshot
    | ReplicaSnapshotAck
)
