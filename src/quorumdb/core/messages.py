"""Typed records of client operations, their outcomes, and messages between nodes.

The wire codec (msgpack) lives in `runtime/wire.py`; nothing here knows about bytes
on a socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from quorumdb.core.controller.raft_messages import RaftMessage
from quorumdb.core.errors import ErrorCode
from quorumdb.core.keyspace import KeyspaceConfig
from quorumdb.core.membership.messages import MembershipMessage
from quorumdb.core.replication.lost_found import Resolution
from quorumdb.core.replication.messages import ReplicationMessage
from quorumdb.core.transfer import TransferMessage


class PutCondition(Enum):
    ALWAYS = "always"
    IF_ABSENT = "if-absent"
    IF_PRESENT = "if-present"


# --- client operations: each addresses one key, or one partition -------------------------


READ_CONSISTENCIES = ("linearizable", "eventual", "session", "bounded")


@dataclass(frozen=True, slots=True)
class Get:
    """`consistency` (replicated keyspaces): "linearizable" (the leader, under its lease),
    "eventual" (any replica, at once), "session" (any replica whose log has reached
    `min_position`, else the leader) or "bounded" (any replica at most `max_lag_ms`
    behind the leader, else the leader). Unreplicated keyspaces have one copy: always
    linearizable."""

    keyspace: str
    key: bytes
    consistency: str = "linearizable"
    min_position: tuple[int, int] | None = None
    max_lag_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Put:
    keyspace: str
    key: bytes
    value: bytes
    condition: PutCondition = PutCondition.ALWAYS
    expire_at_ms: int | None = None
    keep_expiry: bool = False
    return_previous: bool = False
    sync: str | None = None  # replicated keyspaces: this write's mode, not the keyspace's
    # "server-time" or "random-id": the node that runs the put makes the value (which
    # statement-based replication ships as such unless the keyspace is deterministic).
    generate: str | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    keyspace: str
    key: bytes
    sync: str | None = None


@dataclass(frozen=True, slots=True)
class Increment:
    keyspace: str
    key: bytes
    delta: int
    sync: str | None = None


@dataclass(frozen=True, slots=True)
class Append:
    keyspace: str
    key: bytes
    value: bytes
    sync: str | None = None


@dataclass(frozen=True, slots=True)
class ScanPartition:
    """One page of one partition, keys in [start, end) in order (end None: no bound).

    `end` comes last so that positional uses made before it existed keep working."""

    keyspace: str
    partition: int
    start: bytes
    limit: int
    keys_only: bool = False
    end: bytes | None = None


@dataclass(frozen=True, slots=True)
class CountPartition:
    keyspace: str
    partition: int


KeyOperation = Get | Put | Delete | Increment | Append
PartitionOperation = ScanPartition | CountPartition


@dataclass(frozen=True, slots=True)
class CreateKeyspace:
    config: KeyspaceConfig


@dataclass(frozen=True, slots=True)
class ChangeMetadata:
    """Any other metadata command (see `core/cluster_metadata.py`), run by the controller
    leader; the outcome's value is the command's JSON result."""

    command: bytes


Operation = KeyOperation | PartitionOperation | CreateKeyspace | ChangeMetadata


@dataclass(frozen=True, slots=True)
class ResolveLostWrite:
    """Record an operator's decision about one of this node's lost+found entries (see
    `core/replication/lost_found.py`). Local to the node: never routed or forwarded.

    Outcome value: True recorded; False resolved already (the message says how); None
    no such entry."""

    storage_key: bytes
    resolution: Resolution


LocalOperation = ResolveLostWrite  # run where submitted; never on the wire

# --- outcomes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScanPage:
    items: tuple[tuple[bytes, bytes], ...]
    next_start: bytes | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an operation ended with.

    `value` by operation: Get -> bytes | None; Put -> bool applied, or the previous
    value when `return_previous`; Delete -> bool existed; Increment -> int; Append ->
    int length; ScanPartition -> ScanPage; CountPartition -> int; CreateKeyspace -> bool.
    """

    value: object = None
    error: ErrorCode | None = None
    message: str = ""
    # Replicated keyspaces: how many followers held the write (or everything the read
    # could see) when it was answered, and the log position (epoch, sequence) it is at.
    acks: int | None = None
    position: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def failure(error: ErrorCode, message: str) -> Outcome:
    return Outcome(None, error, message)


# --- messages between nodes --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """Run `operation` on the owner; `map_version` lets the owner detect stale routing.

    `(incarnation, forward_id)` names the request uniquely across the sender's restarts,
    so a late reply to a previous life is ignored and a duplicated request runs once.
    """

    forward_id: int
    map_version: int
    operation: Operation
    incarnation: int = 0


@dataclass(frozen=True, slots=True)
class ForwardReply:
    forward_id: int
    outcome: Outcome
    incarnation: int = 0


Message = (
    ForwardRequest
    | ForwardReply
    | RaftMessage
    | TransferMessage
    | MembershipMessage
    | ReplicationMessage
)
