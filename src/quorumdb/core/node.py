"""Composition root of one node: routes each client operation to the partition owner.

Pure and synchronous: the driver passes `now_ms`, incoming requests and messages,
and carries out the returned effects (persist, then send and reply).
"""

from __future__ import annotations

import json
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol
from zlib import crc32

from quorumdb.core.cluster import Member, PartitionMap, founding_metadata
from quorumdb.core.cluster_metadata import command
from quorumdb.core.controller.controller import DEFAULT_VOTERS, Controller, choose_voters
from quorumdb.core.controller.raft_config import RaftConfig
from quorumdb.core.controller.raft_messages import RAFT_MESSAGE_TYPES
from quorumdb.core.effects import Effect, Persist, Reply, Send
from quorumdb.core.errors import ErrorCode
from quorumdb.core.failure_detector import MEASUREMENTS_FACT, FailureDetector, address_of
from quorumdb.core.keyspace import SYNC_MODES, KeyspaceConfig, KeyspaceConfigError
from quorumdb.core.load_tracker import DEFAULT_WINDOW_MS, LoadTracker
from quorumdb.core.membership import Ack, Gossip, Join, JoinReply, Nack, Ping, PingRequest
from quorumdb.core.messages import (
    READ_CONSISTENCIES,
    Append,
    ChangeMetadata,
    CountPartition,
    CreateKeyspace,
    Delete,
    ForwardReply,
    ForwardRequest,
    Get,
    Increment,
    KeyOperation,
    LocalOperation,
    Message,
    Operation,
    Outcome,
    PartitionOperation,
    Put,
    PutCondition,
    ResolveLostWrite,
    ScanPage,
    ScanPartition,
    failure,
)
from quorumdb.core.partitioning import FixedLayout, PartitioningError, key_hash
from quorumdb.core.partitioning.hashing import OPEN_BRACE
from quorumdb.core.partitioning.key_range_policy import PartitionLoad
from quorumdb.core.range_splits import RangeMeasurements, parse_measurements
from quorumdb.core.rebalancer import Rebalancer, estimate_partition_bytes
from quorumdb.core.records import PLAIN_RECORD_PREFIX, decode_record, encode_record, live_value
from quorumdb.core.replication import lost_found
from quorumdb.core.replication.failover import FailoverCoordinator
from quorumdb.core.replication.log_format import Change
from quorumdb.core.replication.messages import (
    LeaderSuspicion,
    PositionQuery,
    PositionReply,
    ReplicaSnapshot,
    ReplicaSnapshotAck,
    Replicate,
    ReplicateReply,
)
from quorumdb.core.replication.placer import ReplicaPlacer
from quorumdb.core.replication.replicas import Replicas
from quorumdb.core.replication.statement import (
    GENERATORS,
    StatementError,
    generated_value,
    incremented,
    run_statement,
    statement_for,
)
from quorumdb.core.salting import Merge, base_key, expand, is_sub_key
from quorumdb.core.transfer import TransferAbort, TransferAck, TransferData, TransferOpen
from quorumdb.storage.interface import StorageReader, Write

_PARTITION_OPERATIONS = (ScanPartition, CountPartition)
_KEYED_OPERATIONS = (Get, Put, Delete, Increment, Append)
_DATA_OPERATIONS = (*_KEYED_OPERATIONS, ScanPartition, CountPartition)
_METADATA_OPERATIONS = (CreateKeyspace, ChangeMetadata)
_TRANSFER_MESSAGES = (TransferOpen, TransferData, TransferAck, TransferAbort)
_MEMBERSHIP_MESSAGES = (Ping, Ack, PingRequest, Nack, Gossip, Join, JoinReply)
_REPLICATION_MESSAGES = (
    Replicate,
    ReplicateReply,
    PositionQuery,
    PositionReply,
    LeaderSuspicion,
    ReplicaSnapshot,
    ReplicaSnapshotAck,
)
_CAPTURED = -3  # the request id replicated operations reply to before replication
SIZES_INTERVAL_MS = 5_000  # how often a node publishes its partition sizes
INTERNAL_REQUESTS_FROM = 1 << 62  # request ids of the node's own proposals; replies dropped
NOT_LOCAL = object()  # sentinel of the fast paths: "take the general path instead"
EXPIRY_MAX_MS = 2**63 - 1  # the stored field is a signed 64-bit integer
DEFAULT_MAX_KEY_BYTES = 511  # LMDB's compiled-in key size limit
DEFAULT_MAX_VALUE_BYTES = 64 * 1024 * 1024
_APPLIED = Outcome(True)  # what every applied plain put answers; outcomes are immutable


@dataclass(frozen=True, slots=True)
class NodeLimits:
    max_key_bytes: int = DEFAULT_MAX_KEY_BYTES
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_scan_limit: int = 10_000
    forward_timeout_ms: int = 5_000
    # A forwarded request routed by a newer map than this node has waits this long for
    # the controller's log to catch up before it is refused.
    map_wait_ms: int = 2_000
    expiry_sweep_keys: int = 20  # keys examined per tick for expired ones to delete
    load_sample_every: int = 8  # one request in this many feeds the load tracker
    load_window_ms: int = DEFAULT_WINDOW_MS  # request rates are measured over two of these
    # A session read at a follower that has not yet reached the session's position waits
    # this long for replication, then goes to the leader.
    session_wait_ms: int = 1_000
    # Let the controller leader move replicas by itself (joins, decommissions); each
    # move is a joint configuration (core/replication/replica.py, ReplicaSet).
    automatic_replica_moves: bool = True

    def validate(self) -> None:
        for name in (
            "max_key_bytes",
            "max_value_bytes",
            "max_scan_limit",
            "forward_timeout_ms",
            "load_sample_every",
            "load_window_ms",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.max_key_bytes > DEFAULT_MAX_KEY_BYTES:
            raise ValueError(f"max_key_bytes cannot exceed {DEFAULT_MAX_KEY_BYTES} (LMDB's limit)")


FORWARD_WINDOW = 4096  # forward ids remembered per sender incarnation, for duplicates


@dataclass(slots=True)
class _SeenForwards:
    """Forward ids already executed for one sender incarnation.

    Ids at or below `floor` count as seen: a request delayed beyond the window is refused
    (definitely not run) rather than risking a second execution."""

    floor: int = 0
    ids: set[int] = field(default_factory=set)

    def first_time(self, forward_id: int) -> bool:
        if forward_id <= self.floor or forward_id in self.ids:
            return False
        self.ids.add(forward_id)
        if len(self.ids) > 2 * FORWARD_WINDOW:
            ordered = sorted(self.ids)
            self.floor = ordered[-FORWARD_WINDOW - 1]
            self.ids = set(ordered[-FORWARD_WINDOW:])
        return True


class NodeRandom(Protocol):
    """A seeded `random.Random` fits: Raft draws election timeouts, layouts shuffle."""

    def randint(self, a: int, b: int) -> int: ...

    def randrange(self, start: int, /) -> int: ...

    def random(self) -> float: ...

    def shuffle(self, x: MutableSequence[Any]) -> None: ...


class _Parked(NamedTuple):
    """A forwarded request that waits for this node's map to reach its sender's version."""

    deadline_ms: int
    source: str
    request: ForwardRequest


class _PendingForward(NamedTuple):
    """A named tuple, not a dataclass: one is built per forwarded request, and a tuple is
    several times cheaper to build (see `core/effects.py`)."""

    request_id: int
    deadline_ms: int
    destination: str


class _Gather:
    """A client request made of several sub-operations (a salted key's sub-keys)."""

    __slots__ = ("merge", "outcomes", "remaining", "request_id")

    def __init__(self, request_id: int, count: int, merge: Merge) -> None:
        self.request_id = request_id
        self.merge = merge
        self.outcomes: list[Outcome] = [_UNANSWERED] * count
        self.remaining = count


_UNANSWERED = Outcome(None)
_GATHERED = -1  # the request id local sub-operations reply to; see `_gather`


class Node:
    def __init__(
        self,
        node_id: str,
        members: tuple[Member, ...],
        storage: StorageReader,
        limits: NodeLimits | None = None,
        incarnation: int = 0,
        *,
        rng: NodeRandom,
        raft_config: RaftConfig | None = None,
        controller_voters: int = DEFAULT_VOTERS,
        founder: bool | None = None,
        address: str | None = None,
    ) -> None:
        """`members` are the founding members (they bootstrap the controller's metadata);
        `incarnation` must grow with every start of this node (boot time or a counter);
        `rng` is a seeded generator (Raft's election timeouts, layouts' random choices).
        A node that joins later (`founder` False) starts from the same founding metadata
        and an empty controller configuration, and waits for the leader to add it."""
        self.node_id = node_id
        self.incarnation = incarnation
        self.storage = storage
        self.rng = rng
        self.limits = limits or NodeLimits()
        self.limits.validate()
        if founder is None:
            founder = node_id in {member.node_id for member in members}
        elif founder and node_id not in {member.node_id for member in members}:
            raise ValueError(f"node {node_id!r} is not among the founding members")
        self.members = members
        self.controller_voters = controller_voters
        voters = choose_voters([member.node_id for member in members], controller_voters)
        learners = tuple(sorted({member.node_id for member in members} - set(voters)))
        config = raft_config or RaftConfig()
        if founder:
            config = replace(config, bootstrap_voters=voters, bootstrap_learners=learners)
        else:
            config = replace(config, bootstrap_voters=(), bootstrap_learners=())
        self.controller = Controller(node_id, founding_metadata(members), storage, rng, config)
        # Changes whenever what the fast paths consult does (ownership, moves, salted
        # keys): a cache of their answers (`runtime/reply_cache.py`) must be dropped then.
        self.fast_path_version = 0
        self._fixed_local: dict[str, tuple[bool, ...]] = {}
        self._other_local: dict[str, tuple[Callable[[bytes], int], frozenset[int]]] = {}
        self._moving_out: set[tuple[str, int]] = set()
        self.rebalancer = Rebalancer(node_id, incarnation, storage)
        self.rebalancer.recall_seals()  # before the map: the fast paths must see them
        self.replication = Replicas(node_id, storage, run_statement=self._run_statement)
        self.failover = FailoverCoordinator()
        self.placer = ReplicaPlacer()
        self._replicas_version = -1  # the map version the replicas were configured from
        # Session reads waiting for this node's replica: (deadline, request, read, partition)
        self._session_reads: list[tuple[int, int, Get, int]] = []
        # Requests for keys sealed for a hand-over: (deadline, how to run it again).
        self._held: list[tuple[int, Callable[[int], list[Effect]], _ReplyFactory]] = []
        self._next_internal_request = INTERNAL_REQUESTS_FROM
        self._next_sizes_ms = 0
        self._own_measurements = b"{}"  # what this node last published (see below)
        self.partition_map = PartitionMap.from_metadata(self.controller.metadata)
        if address is None:
            mine = [member for member in members if member.node_id == node_id]
            address = address_of(mine[0]) if mine else node_id
        self.failure_detector = FailureDetector(node_id, address, rng, incarnation)
        self._pending_forwards: dict[int, _PendingForward] = {}
        self._parked: list[_Parked] = []
        self._awaiting_leader: list[tuple[int, int, CreateKeyspace | ChangeMetadata]] = []
        self._sweep_position = 0  # which local partition the expiry sweep examines next
        self._sweep_start = b""  # and from which key
        self._seen_forwards: dict[str, tuple[int, _SeenForwards]] = {}
        self._next_forward_id = 1
        self.load = LoadTracker(
            window_ms=self.limits.load_window_ms, sample_every=self.limits.load_sample_every
        )
        self.ranges = RangeMeasurements(self.limits.load_window_ms)
        # keyspace -> salted key -> number of sub-keys; set from the cluster metadata.
        self.salted_keys: dict[str, dict[bytes, int]] = {}
        self._salt_rotation = 0
        # Negative request ids stand for sub-operations: id -> (gather, position), and for
        # relayed forwards: id -> (peer, its forward id, its incarnation).
        self._gather_parts: dict[int, tuple[_Gather, int]] = {}
        self._relays: dict[int, tuple[str, int, int]] = {}
        self._next_gather_part = -2
        self._until_load_sample = self.limits.load_sample_every

    @property
    def partition_map(self) -> PartitionMap:
        return self._partition_map

    @partition_map.setter
    def partition_map(self, partition_map: PartitionMap) -> None:
        """Every change of the map also refreshes what the fast paths consult, so they can
        never route by a stale map."""
        self._partition_map = partition_map
        # Known at once, even before the replicas are configured (next tick): until then
        # their requests are refused, never served as if the keyspace were unreplicated.
        self.replication.keyspaces = frozenset(
            name
            for name, placement in partition_map.keyspaces.items()
            if placement.config.replicated
        )
        self._refresh_fast_paths()

    def _refresh_fast_paths(self) -> None:
        """Partitions whose keys are being copied away are left to the general path, where
        every write reaches the transfer and sealed keys wait."""
        moving = self.rebalancer.moving_out()
        self._moving_out = moving
        self.fast_path_version += 1
        self._fixed_local = {}
        self._other_local = {}
        for name, placement in self._partition_map.keyspaces.items():
            if placement.config.replicated:
                continue  # every request goes through the replica (the general path)
            layout = placement.layout
            if isinstance(layout, FixedLayout):
                flags = tuple(
                    owner == self.node_id and (name, partition) not in moving
                    for partition, owner in enumerate(layout.owners)
                )
                self._fixed_local[name] = flags
            else:
                local = frozenset(
                    partition
                    for partition in placement.local_partitions(self.node_id)
                    if (name, partition) not in moving
                )
                self._other_local[name] = (layout.locate, local)

    # --- entry points ----------------------------------------------------------------

    def on_client_request(
        self,
        now_ms: int,
        request_id: int,
        operation: Operation | LocalOperation,
        redirect: bool = False,
    ) -> list[Effect]:
        """`redirect`: a client that routes by its own copy of the map asked to be told
        the owner (REDIRECT, with the map version) instead of having the request forwarded."""
        if isinstance(operation, ResolveLostWrite):
            return self._resolve_lost_write(request_id, operation)
        if isinstance(operation, _METADATA_OPERATIONS) and self.controller.leader_id is None:
            # Just started, or an election is on: wait for a leader rather than refuse.
            deadline_ms = now_ms + self.limits.map_wait_ms
            self._awaiting_leader.append((deadline_ms, request_id, operation))
            return []
        if self.salted_keys and isinstance(operation, _KEYED_OPERATIONS):
            ways = self.salted_keys.get(operation.keyspace, {}).get(operation.key)
            if ways is not None:
                return self._gather(now_ms, request_id, operation, ways)
        if (
            type(operation) is Get
            and operation.consistency != "linearizable"
            and operation.keyspace in self.replication.keyspaces
        ):
            served = self._replica_read(now_ms, request_id, operation)
            if served is not None:
                return served
        owner = self._owner_of(operation)
        if isinstance(owner, Outcome):
            return [Reply(request_id, owner)]
        if owner == self.node_id:
            if self._moving_out and self._sealed(operation):
                self._hold(
                    now_ms,
                    lambda at_ms: self.on_client_request(at_ms, request_id, operation),
                    lambda outcome: Reply(request_id, outcome),
                )
                return []
            return self._execute(now_ms, operation, lambda outcome: Reply(request_id, outcome))
        if redirect and isinstance(operation, _KEYED_OPERATIONS):
            return [Reply(request_id, self._moved(operation.keyspace, operation.key, owner))]
        return [self._forward(now_ms, request_id, operation, owner)]

    def _resolve_lost_write(self, request_id: int, operation: ResolveLostWrite) -> list[Effect]:
        """An operator's decision about a lost+found entry of this node, recorded once."""
        entry = lost_found.read_entry(self.storage, operation.storage_key)
        if entry is None:
            return [Reply(request_id, Outcome(None, message="no such lost+found entry"))]
        if entry.resolution is not None:
            message = f"already {entry.resolution.value}"
            return [Reply(request_id, Outcome(False, message=message))]
        write = lost_found.resolve(self.storage, operation.storage_key, operation.resolution)
        return [Persist((write,)), Reply(request_id, Outcome(True))]

    def _forward(self, now_ms: int, request_id: int, operation: Operation, owner: str) -> Send:
        forward_id = self._next_forward_id
        self._next_forward_id += 1
        self._pending_forwards[forward_id] = _PendingForward(
            request_id, now_ms + self.limits.forward_timeout_ms, owner
        )
        request = ForwardRequest(
            forward_id, self.partition_map.version, operation, self.incarnation
        )
        return Send(owner, request)

    # --- salted keys: one request, several sub-operations ------------------------------

    def _gather(
        self, now_ms: int, request_id: int, operation: KeyOperation, ways: int
    ) -> list[Effect]:
        """Run a salted key's sub-operations where their sub-keys live, then merge.

        Local sub-operations answer at once (their writes come first in the returned
        effects, so they are durable before the merged reply leaves); remote ones are
        forwarded with negative request ids that `_answer` routes back here."""
        self._salt_rotation += 1
        plan = expand(operation, ways, self._salt_rotation)
        if isinstance(plan, Outcome):
            return [Reply(request_id, plan)]
        parts, merge = plan
        gather = _Gather(request_id, len(parts), merge)
        effects: list[Effect] = []
        for position, part in enumerate(parts):
            owner = self._owner_of(part)
            if isinstance(owner, Outcome):
                effects += self._fill(gather, position, owner)
            elif owner == self.node_id:
                for effect in self._execute(now_ms, part, _reply_to_gather):
                    if isinstance(effect, Reply) and effect.request_id == _GATHERED:
                        effects += self._fill(gather, position, effect.outcome)
                    else:
                        effects.append(effect)
            else:
                part_id = self._next_gather_part
                self._next_gather_part -= 1
                self._gather_parts[part_id] = (gather, position)
                effects.append(self._forward(now_ms, part_id, part, owner))
        return effects

    def _fill(self, gather: _Gather, position: int, outcome: Outcome) -> list[Effect]:
        gather.outcomes[position] = outcome
        gather.remaining -= 1
        if gather.remaining:
            return []
        return [Reply(gather.request_id, gather.merge(gather.outcomes))]

    def _answer(self, request_id: int, outcome: Outcome) -> list[Effect]:
        """Deliver an outcome: to the client, to the gather a sub-operation belongs to, or
        back to the peer whose forward this node relayed."""
        if request_id >= 0:
            return [Reply(request_id, outcome)]
        relay = self._relays.pop(request_id, None)
        if relay is not None:
            source, forward_id, incarnation = relay
            return [Send(source, ForwardReply(forward_id, outcome, incarnation))]
        gather, position = self._gather_parts.pop(request_id)
        return self._fill(gather, position, outcome)

    def on_message(self, now_ms: int, source: str, message: Message) -> list[Effect]:
        if isinstance(message, ForwardRequest):
            return self._on_forward_request(now_ms, source, message)
        if isinstance(message, ForwardReply):
            pending = self._pending_forwards.get(message.forward_id)
            if (
                pending is None  # late reply after a timeout: the client was answered
                or message.incarnation != self.incarnation  # meant for a previous life
                or pending.destination != source
            ):
                return []
            del self._pending_forwards[message.forward_id]
            return self._answer(pending.request_id, message.outcome)
        if isinstance(message, _MEMBERSHIP_MESSAGES):
            return self.failure_detector.on_message(now_ms, source, message)
        if isinstance(message, _REPLICATION_MESSAGES):
            if isinstance(message, PositionReply):
                self.failover.on_position_reply(source, message)
                return []
            if isinstance(message, LeaderSuspicion):
                self.failover.on_suspicion(now_ms, source, message)
                return []
            effects = self.replication.on_message(now_ms, source, message)
            if self._session_reads and isinstance(message, Replicate):
                effects += self._wake_session_reads(now_ms)
            return self._deliver_to_self(now_ms, effects)
        if isinstance(message, _TRANSFER_MESSAGES):
            metadata = self.controller.metadata
            effects = self.rebalancer.on_message(now_ms, source, message, metadata)
            if self.rebalancer.moving_out() != self._moving_out:
                self._refresh_fast_paths()
            return self._deliver_to_self(now_ms, effects)
        if isinstance(message, RAFT_MESSAGE_TYPES):
            effects = self.controller.on_message(now_ms, source, message)
            return self._after_controller(now_ms, effects) + self._release_parked(now_ms)
        raise TypeError(f"unexpected message {type(message).__name__}")

    def on_tick(self, now_ms: int) -> list[Effect]:
        effects: list[Effect] = []
        expired = [
            forward_id
            for forward_id, pending in self._pending_forwards.items()
            if pending.deadline_ms <= now_ms
        ]
        for forward_id in expired:
            pending = self._pending_forwards.pop(forward_id)
            message = f"no answer from {pending.destination} in time; the outcome is unknown"
            effects += self._answer(pending.request_id, failure(ErrorCode.TIMEOUT, message))
        effects += self._after_controller(now_ms, self.controller.on_tick(now_ms))
        duty = self.controller.membership_duty(now_ms, self.controller_voters)
        effects += self._after_controller(now_ms, duty)
        effects += self._rebalance_tick(now_ms)
        left = {
            node_id
            for node_id, member in self.controller.metadata.members.items()
            if member.state == "left"
        }
        map_version = self.partition_map.version
        members = self.partition_map.members
        effects += self.failure_detector.on_tick(now_ms, members, map_version, left)
        if self._awaiting_leader:
            waiting, self._awaiting_leader = self._awaiting_leader, []
            leader_known = self.controller.leader_id is not None
            for deadline_ms, request_id, operation in waiting:
                if leader_known:
                    effects += self.on_client_request(now_ms, request_id, operation)
                elif deadline_ms > now_ms:
                    self._awaiting_leader.append((deadline_ms, request_id, operation))
                else:
                    message = "no controller leader was elected in time; retry"
                    effects.append(Reply(request_id, failure(ErrorCode.UNAVAILABLE, message)))
        effects += self._release_parked(now_ms)
        waited_out = [parked for parked in self._parked if parked.deadline_ms <= now_ms]
        if waited_out:
            self._parked = [parked for parked in self._parked if parked.deadline_ms > now_ms]
            for parked in waited_out:
                version = parked.request.map_version
                message = (
                    f"this node's map is at version {self.partition_map.version}, not {version}"
                )
                outcome = failure(ErrorCode.UNAVAILABLE, message)
                reply = ForwardReply(parked.request.forward_id, outcome, parked.request.incarnation)
                effects.append(Send(parked.source, reply))
        effects.extend(self._sweep_expired(now_ms))
        self.load.on_tick(now_ms)
        self.ranges.on_tick(self.storage)
        effects += self._sync_replicas(now_ms)
        effects += self._wake_session_reads(now_ms)
        states = self.failure_detector.states
        down = frozenset(n for n, state in states.items() if state.value in ("down", "left"))
        suspected = frozenset(n for n, state in states.items() if state.value == "suspect")
        controller_leader = self.controller.leader_id
        # A held position query may be the controller's own (it holds a replica too):
        # its answer loops back here, as no node has a connection to itself.
        replication = self.replication.on_tick(now_ms, down, controller_leader)
        if controller_leader is not None:
            reports = self.replication.stepped_down(now_ms)
            replication += [Send(controller_leader, report) for report in reports]
        propose = self._propose_internal(now_ms)
        for proposal in self.replication.completed_moves(now_ms):
            replication += propose(proposal)
        effects += self._deliver_to_self(now_ms, replication)
        leaving = frozenset(
            node_id
            for node_id, member in self.controller.metadata.members.items()
            if member.state == "leaving"
        )
        failovers = self.failover.on_tick(
            now_ms,
            self.controller.is_leader,
            self.partition_map,
            down,
            self._propose_internal(now_ms),
            suspected,
            leaving,
        )
        if self.limits.automatic_replica_moves:
            failovers += self.placer.on_tick(
                now_ms,
                self.controller.is_leader,
                self.controller.metadata,
                self._propose_internal(now_ms),
            )
        effects += self._deliver_to_self(now_ms, failovers)
        return effects

    def _sync_replicas(self, now_ms: int) -> list[Effect]:
        """Configure the replicas this node holds from the current map (once per version)."""
        if self._replicas_version == self.partition_map.version:
            return []
        self._replicas_version = self.partition_map.version
        return self.replication.sync(now_ms, self.partition_map)

    def _sweep_expired(self, now_ms: int) -> list[Effect]:
        """Delete a few expired keys per tick, walking the local partitions in turn.

        Reads already hide expired keys; this reclaims their space and keeps DBSIZE and
        scans honest, as Redis's active expiry does, at a bounded cost per tick. In a
        replicated keyspace only the leader sweeps, and its deletes go through the log,
        so every replica drops the same keys."""
        local = [
            (name, partition)
            for name, placement in sorted(self.partition_map.keyspaces.items())
            for partition in placement.partition_ids
            if placement.owner(partition) == self.node_id
        ]
        if not local:
            return []
        position = self._sweep_position % len(local)
        keyspace, partition = local[position]
        limit = self.limits.expiry_sweep_keys
        rows = self.storage.scan(keyspace, partition, self._sweep_start, None, limit + 1)
        if len(rows) > limit:
            self._sweep_start = rows[limit][0]
        else:
            self._sweep_position, self._sweep_start = position + 1, b""
        deletes = tuple(
            Write(keyspace, partition, key, None)
            for key, raw in rows[:limit]
            if live_value(raw, now_ms) is None
        )
        if not deletes:
            return []
        if keyspace in self.replication.keyspaces:
            replica = self.replication.replica(keyspace, partition)
            if replica is None or not replica.is_leader:
                return []
            return self.replication.run(
                now_ms, keyspace, partition, deletes, Outcome(None), lambda outcome: []
            )
        return [Persist(deletes)]

    def on_peer_unreachable(self, now_ms: int, peer: str) -> list[Effect]:
        """Fail forwards to a peer whose connection broke: their outcome is unknown."""
        failed = [
            forward_id
            for forward_id, pending in self._pending_forwards.items()
            if pending.destination == peer
        ]
        outcome = failure(ErrorCode.UNAVAILABLE, f"node {peer} is unreachable")
        effects: list[Effect] = []
        for forward_id in failed:
            effects += self._answer(self._pending_forwards.pop(forward_id).request_id, outcome)
        return effects

    # --- fast paths: plain reads and writes of keys this node owns ----------------------
    #
    # The general path (`on_client_request`) builds an operation and effects for every
    # request. These two return the answer directly when the key is local and the request
    # is a plain GET or SET, which is most traffic; anything else returns NOT_LOCAL and the
    # caller takes the general path, which produces the same result (tested side by side).

    #
    # For `fixed` keyspaces (the default) both consult `_fixed_local` (one "is it ours"
    # flag per partition, so its length is the partition count) and hash inline as
    # `FixedLayout.locate` does: a dict lookup and a tuple index instead of attribute
    # hops, two calls and a string comparison per request. Other strategies go through
    # `_owned_partition`.

    def read_local(self, now_ms: int, keyspace: str, key: bytes, forwarded: bool = False) -> object:
        """The live value (or None) of a key this node owns, else NOT_LOCAL.

        A client's read of a salted key must gather its sub-keys (the general path); a
        `forwarded` read is one such sub-key already, served as it is."""
        raw = self.read_local_record(keyspace, key, forwarded)
        if raw is NOT_LOCAL:
            return NOT_LOCAL
        return live_value(raw, now_ms)  # type: ignore[arg-type]

    def read_local_record(self, keyspace: str, key: bytes, forwarded: bool = False) -> object:
        """The stored record (or None) of a key this node owns, else NOT_LOCAL, for callers
        that judge expiry themselves: a record that starts with 0 has none, and is all a
        reply cache may keep (`runtime/reply_cache.py`). One function, not a wrapper: a
        call layer is a tenth of a GET's Python time."""
        if not key or len(key) > self.limits.max_key_bytes:
            return NOT_LOCAL
        if self.salted_keys and not forwarded and key in self.salted_keys.get(keyspace, ()):
            return NOT_LOCAL
        local = self._fixed_local.get(keyspace)
        if local is not None:
            partition = (crc32(key) if OPEN_BRACE not in key else key_hash(key)) % len(local)
            if not local[partition]:
                return NOT_LOCAL
        else:
            partition = self._owned_partition(keyspace, key)
            if partition < 0:
                return NOT_LOCAL
        self._until_load_sample -= 1
        if not self._until_load_sample:
            self._sample_load(keyspace, partition, key)
        return self.storage.get(keyspace, partition, key)

    def note_cached_reads(self, keyspace: str, key: bytes, count: int) -> None:
        """Count `count` reads a cache in front of this node answered (the last of them
        for `key`) toward the load samples, as if `read_local_record` had served them: a
        hot key served from a cache is still hot. Called once per batch of reads, and
        records the batch's samples in one go."""
        left = self._until_load_sample - count
        if left > 0:
            self._until_load_sample = left
            return
        every = self.limits.load_sample_every
        samples = 1 + (-left) // every  # the countdown reached zero this many times
        self._until_load_sample = left + samples * every
        partition = self._partition_of(keyspace, key)
        if partition >= 0:
            self.load.record_sample(keyspace, partition, key, samples)
            if keyspace in self.ranges.keyspaces:
                self.ranges.record(keyspace, partition, key)

    def write_local(
        self, keyspace: str, key: bytes, value: bytes, forwarded: bool = False
    ) -> Write | None:
        """The write for an unconditional put of a key this node owns, else None (salted
        keys as in `read_local`)."""
        partition = self.write_partition(keyspace, key, value, forwarded)
        if partition < 0:
            return None
        return Write(keyspace, partition, key, PLAIN_RECORD_PREFIX + value)

    def write_partition(
        self, keyspace: str, key: bytes, value: bytes, forwarded: bool = False
    ) -> int:
        """The partition an unconditional put of a key this node owns goes to, else -1:
        `write_local` without building the Write, for the RESP SET path, which hands the
        pieces to group commit (a named tuple built and freed per SET was ~10 % of it)."""
        limits = self.limits
        if not key or len(key) > limits.max_key_bytes or len(value) > limits.max_value_bytes:
            return -1
        if self.salted_keys and not forwarded and key in self.salted_keys.get(keyspace, ()):
            return -1
        local = self._fixed_local.get(keyspace)
        if local is not None:
            partition = (crc32(key) if OPEN_BRACE not in key else key_hash(key)) % len(local)
            if not local[partition]:
                return -1
        else:
            partition = self._owned_partition(keyspace, key)
            if partition < 0:
                return -1
        self._until_load_sample -= 1
        if not self._until_load_sample:
            self._sample_load(keyspace, partition, key)
        return partition

    def _partition_of(self, keyspace: str, key: bytes) -> int:
        """The key's partition if this node serves it on the fast paths, else -1."""
        local = self._fixed_local.get(keyspace)
        if local is None:
            return self._owned_partition(keyspace, key)
        partition = (crc32(key) if OPEN_BRACE not in key else key_hash(key)) % len(local)
        return partition if local[partition] else -1

    def _owned_partition(self, keyspace: str, key: bytes) -> int:
        """The key's partition if this node owns it, else -1 (also for unknown keyspaces)."""
        other = self._other_local.get(keyspace)
        if other is None:
            return -1
        partition = other[0](key)
        return partition if partition in other[1] else -1

    def _sample_load(self, keyspace: str, partition: int, key: bytes) -> None:
        self._until_load_sample = self.limits.load_sample_every
        self.load.record_sample(keyspace, partition, key)
        if keyspace in self.ranges.keyspaces:
            self.ranges.record(keyspace, partition, key)

    # --- routing ---------------------------------------------------------------------

    def _owner_of(self, operation: Operation) -> str | Outcome:
        if isinstance(operation, _METADATA_OPERATIONS):
            return self.controller.leader_id or self.node_id
        placement = self.partition_map.keyspaces.get(operation.keyspace)
        if placement is None:
            # Perhaps created a moment ago and not yet applied here: the controller leader
            # has applied every keyspace it has acknowledged, so it answers for certain.
            leader = self.controller.leader_id
            if leader is not None and leader != self.node_id:
                return leader
            return failure(ErrorCode.UNKNOWN_KEYSPACE, f"unknown keyspace '{operation.keyspace}'")
        if isinstance(operation, _PARTITION_OPERATIONS):
            try:
                return placement.owner(operation.partition)
            except PartitioningError:
                return failure(
                    ErrorCode.INVALID_ARGUMENT, f"no partition {operation.partition} in this map"
                )
        return placement.owner_of_key(operation.key)[1]

    def _on_forward_request(
        self, now_ms: int, source: str, request: ForwardRequest
    ) -> list[Effect]:
        forward_id = request.forward_id
        incarnation = request.incarnation
        if not self._first_time(source, incarnation, forward_id):
            return []  # a duplicate: the first copy's reply answers the sender
        if request.map_version > self.partition_map.version:
            # Routed by a map this node has not applied yet (a keyspace just created, an
            # ownership just switched): wait for the controller's log rather than refuse.
            deadline_ms = now_ms + self.limits.map_wait_ms
            self._parked.append(_Parked(deadline_ms, source, request))
            return []
        return self._serve_forward(now_ms, source, request)

    def _serve_forward(self, now_ms: int, source: str, request: ForwardRequest) -> list[Effect]:
        forward_id = request.forward_id
        incarnation = request.incarnation
        operation = request.operation
        if self._moving_out and self._sealed(operation):
            self._hold(
                now_ms,
                lambda at_ms: self._serve_forward(at_ms, source, request),
                lambda outcome: Send(source, ForwardReply(forward_id, outcome, incarnation)),
            )
            return []
        # Plain GETs and SETs of keys this node owns, most forwarded traffic, take the
        # client fast paths: one hash and no reply closure, routing or dispatch chain.
        # Anything they decline (NOT_LOCAL, None) takes the general path below, which
        # gives the same answer (tests/test_core_node.py runs both side by side).
        if type(operation) is Get:
            value = self.read_local(now_ms, operation.keyspace, operation.key, True)
            if value is not NOT_LOCAL:
                return [Send(source, ForwardReply(forward_id, Outcome(value), incarnation))]
        elif (
            type(operation) is Put
            and operation.condition is PutCondition.ALWAYS
            and operation.expire_at_ms is None
            and not operation.keep_expiry
            and not operation.return_previous
        ):
            write = self.write_local(operation.keyspace, operation.key, operation.value, True)
            if write is not None:
                reply_effect = Send(source, ForwardReply(forward_id, _APPLIED, incarnation))
                return [Persist((write,)), reply_effect]

        def reply(outcome: Outcome) -> Effect:
            return Send(source, ForwardReply(forward_id, outcome, incarnation))

        owner = self._owner_of(operation)
        if isinstance(owner, Outcome):
            return [reply(owner)]
        if owner != self.node_id:
            if request.map_version < self.partition_map.version:
                # The sender routed by an older map: pass the request on to the owner by
                # this newer one. Each hop's map is newer than the last, so it ends.
                relay_id = self._next_gather_part
                self._next_gather_part -= 1
                self._relays[relay_id] = (source, forward_id, incarnation)
                return [self._forward(now_ms, relay_id, operation, owner)]
            if isinstance(operation, _KEYED_OPERATIONS):
                return [reply(self._moved(operation.keyspace, operation.key, owner))]
            moved = f"map version {self.partition_map.version}: owner is {owner}"
            return [reply(failure(ErrorCode.MOVED, moved))]
        return self._execute(now_ms, operation, reply)

    def _moved(self, keyspace: str, key: bytes, owner: str) -> Outcome:
        """Where the key lives now, by this node's map, and that map's version."""
        member = self.partition_map.member(owner)
        partition = self._partition(keyspace, key)
        return failure(
            ErrorCode.MOVED,
            f"partition {partition} of '{keyspace}' is on {owner}"
            f" at {member.host}:{member.resp_port} (map version {self.partition_map.version})",
        )

    def _first_time(self, source: str, incarnation: int, forward_id: int) -> bool:
        known = self._seen_forwards.get(source)
        if known is None or known[0] < incarnation:
            known = (incarnation, _SeenForwards())
            self._seen_forwards[source] = known  # a newer life: forget the old one's ids
        elif known[0] > incarnation:
            return False  # from a life of the sender that has since restarted
        return known[1].first_time(forward_id)

    # --- execution on the owner ------------------------------------------------------

    def _execute(self, now_ms: int, operation: Operation, reply: _ReplyFactory) -> list[Effect]:
        # Replicated by the map (`replication.keyspaces` is set with every map), not by
        # the replicas configured so far: a node that just started configures them on
        # its first tick and until then refuses.
        if self.replication.keyspaces and isinstance(operation, _DATA_OPERATIONS):
            if operation.keyspace in self.replication.keyspaces:
                return self._execute_replicated(now_ms, operation, reply)
        effects = self._execute_here(now_ms, operation, reply)
        if self._moving_out:
            for effect in effects:
                if type(effect) is Persist:
                    for write in effect.writes:
                        self.rebalancer.on_write(write)
        return effects

    def _replica_read(self, now_ms: int, request_id: int, read: Get) -> list[Effect] | None:
        """A read that need not be linearizable, served by this node's replica when it is
        fresh enough; None sends it to the leader like any other request."""
        if read.consistency not in READ_CONSISTENCIES:
            choices = ", ".join(READ_CONSISTENCIES)
            message = f"consistency must be one of {choices}, not {read.consistency!r}"
            return [Reply(request_id, failure(ErrorCode.INVALID_ARGUMENT, message))]
        problem = self._check_key(read.key)
        if problem is not None:
            return [Reply(request_id, problem)]
        partition = self._partition(read.keyspace, read.key)
        where = self.replication.read_here(now_ms, read.keyspace, partition, read)
        if where == "wait":
            deadline_ms = now_ms + self.limits.session_wait_ms
            self._session_reads.append((deadline_ms, request_id, read, partition))
            return []
        if where != "here":
            return None
        replica = self.replication.replica(read.keyspace, partition)
        assert replica is not None
        raw = self.storage.get(read.keyspace, partition, read.key)
        last = replica.last
        outcome = Outcome(live_value(raw, now_ms), position=(last.epoch, last.sequence))
        return [Reply(request_id, outcome)]

    def _wake_session_reads(self, now_ms: int) -> list[Effect]:
        """Serve waiting session reads whose replica caught up; send the rest to the
        leader when they have waited long enough."""
        if not self._session_reads:
            return []
        waiting, self._session_reads = self._session_reads, []
        effects: list[Effect] = []
        for deadline_ms, request_id, read, partition in waiting:
            where = self.replication.read_here(now_ms, read.keyspace, partition, read)
            if where == "here":
                effects += self._replica_read(now_ms, request_id, read) or []
            elif where == "wait" and deadline_ms > now_ms:
                self._session_reads.append((deadline_ms, request_id, read, partition))
            else:
                leader_read = replace(read, consistency="linearizable")
                effects += self.on_client_request(now_ms, request_id, leader_read)
        return effects

    def _execute_replicated(
        self, now_ms: int, operation: KeyOperation | PartitionOperation, reply: _ReplyFactory
    ) -> list[Effect]:
        """Run the operation on this leader's data, then hold its answer until its writes
        (or, for a read, everything logged before it) are replicated as the mode asks."""
        if isinstance(operation, _KEYED_OPERATIONS):
            partition = self._partition(operation.keyspace, operation.key)
        else:
            partition = operation.partition
        replica = self.replication.replica(operation.keyspace, partition)
        if replica is None or not replica.is_leader:
            return [reply(self.replication.not_leader(operation.keyspace, partition))]
        effects = self._execute_here(now_ms, operation, lambda outcome: Reply(_CAPTURED, outcome))
        writes: list[Write] = []
        outcome = Outcome(None)
        for effect in effects:
            if type(effect) is Persist:
                writes += effect.writes
            elif type(effect) is Reply and effect.request_id == _CAPTURED:
                outcome = effect.outcome
        if outcome.error is not None:
            return [reply(outcome)]
        mode = getattr(operation, "sync", None)
        if mode is not None and mode not in SYNC_MODES:
            message = f"sync must be one of {', '.join(SYNC_MODES)}, not {mode!r}"
            return [reply(failure(ErrorCode.INVALID_ARGUMENT, message))]

        def answer(final: Outcome) -> list[Effect]:
            return [reply(final)]

        statement = None
        config = self.partition_map.keyspaces[operation.keyspace].config
        if config.log_format == "statement" and writes:
            statement = statement_for(operation, writes, config.deterministic)
        return self.replication.run(
            now_ms, operation.keyspace, partition, writes, outcome, answer, mode, statement
        )

    def _run_statement(
        self, now_ms: int, statement: bytes, raw_of: Callable[[bytes], bytes | None]
    ) -> tuple[Change, ...]:
        """A follower runs a logged statement with its own clock and random numbers."""
        return run_statement(statement, raw_of, now_ms, self.rng)

    def _execute_here(
        self, now_ms: int, operation: Operation, reply: _ReplyFactory
    ) -> list[Effect]:
        if isinstance(operation, _KEYED_OPERATIONS) and operation.key:
            self._until_load_sample -= 1
            if not self._until_load_sample:
                keyspace = operation.keyspace
                key = operation.key
                self._sample_load(keyspace, self._partition(keyspace, key), key)
        if isinstance(operation, Get):
            problem = self._check_key(operation.key)
            if problem is not None:
                return [reply(problem)]
            partition = self._partition(operation.keyspace, operation.key)
            raw = self.storage.get(operation.keyspace, partition, operation.key)
            return [reply(Outcome(live_value(raw, now_ms)))]
        if isinstance(operation, Put):
            return self._put(now_ms, operation, reply)
        if isinstance(operation, Delete):
            return self._delete(now_ms, operation, reply)
        if isinstance(operation, Increment):
            return self._increment(now_ms, operation, reply)
        if isinstance(operation, Append):
            return self._append(now_ms, operation, reply)
        if isinstance(operation, ScanPartition):
            return [reply(self._scan(now_ms, operation))]
        if isinstance(operation, CountPartition):
            count = self.storage.count(operation.keyspace, operation.partition)
            return [reply(Outcome(count))]
        if isinstance(operation, CreateKeyspace):
            return self._create_keyspace(now_ms, operation.config, reply)
        if isinstance(operation, ChangeMetadata):
            return self._change_metadata(now_ms, operation.command, reply)
        raise TypeError(f"unexpected operation {type(operation).__name__}")

    def _partition(self, keyspace: str, key: bytes) -> int:
        return self.partition_map.keyspaces[keyspace].layout.locate(key)

    def _check_key(self, key: bytes) -> Outcome | None:
        if not key:
            return failure(ErrorCode.INVALID_ARGUMENT, "empty keys are not supported")
        if len(key) > self.limits.max_key_bytes:
            return failure(
                ErrorCode.TOO_LARGE, f"key is {len(key)} bytes, limit {self.limits.max_key_bytes}"
            )
        return None

    def _check_value(self, size_bytes: int) -> Outcome | None:
        if size_bytes > self.limits.max_value_bytes:
            limit = self.limits.max_value_bytes
            return failure(ErrorCode.TOO_LARGE, f"value is {size_bytes} bytes, limit {limit}")
        return None

    def _current(self, now_ms: int, keyspace: str, partition: int, key: bytes) -> _Current:
        raw = self.storage.get(keyspace, partition, key)
        if raw is None:
            return None
        value, expire_at_ms = decode_record(raw)
        if expire_at_ms is not None and expire_at_ms <= now_ms:
            return None
        return value, expire_at_ms

    def _put(self, now_ms: int, operation: Put, reply: _ReplyFactory) -> list[Effect]:
        if operation.generate is not None:
            if operation.generate not in GENERATORS:
                choices = ", ".join(GENERATORS)
                message = f"generate must be one of {choices}, not {operation.generate!r}"
                return [reply(failure(ErrorCode.INVALID_ARGUMENT, message))]
            value = generated_value(operation.generate, now_ms, self.rng)
            operation = replace(operation, value=value, generate=None)
        problem = self._check_key(operation.key) or self._check_value(len(operation.value))
        if problem is None and operation.expire_at_ms is not None:
            if not 0 < operation.expire_at_ms <= EXPIRY_MAX_MS:
                problem = failure(ErrorCode.INVALID_ARGUMENT, "invalid expire time")
        if problem is not None:
            return [reply(problem)]
        keyspace, key = operation.keyspace, operation.key
        partition = self._partition(keyspace, key)
        expire_at_ms = operation.expire_at_ms
        simple = (
            operation.condition is PutCondition.ALWAYS
            and not operation.keep_expiry
            and not operation.return_previous
        )
        previous: _Current = None
        if not simple:
            previous = self._current(now_ms, keyspace, partition, key)
            exists = previous is not None
            if operation.condition is PutCondition.IF_ABSENT and exists:
                return [reply(self._put_refused(operation, previous))]
            if operation.condition is PutCondition.IF_PRESENT and not exists:
                return [reply(self._put_refused(operation, previous))]
            if operation.keep_expiry and previous is not None:
                expire_at_ms = previous[1]
        write = Write(keyspace, partition, key, encode_record(operation.value, expire_at_ms))
        result: object = True
        if operation.return_previous:
            result = previous[0] if previous is not None else None
        return [Persist((write,)), reply(Outcome(result))]

    @staticmethod
    def _put_refused(operation: Put, previous: _Current) -> Outcome:
        if operation.return_previous:
            return Outcome(previous[0] if previous is not None else None, message="not-applied")
        return Outcome(False)

    def _delete(self, now_ms: int, operation: Delete, reply: _ReplyFactory) -> list[Effect]:
        problem = self._check_key(operation.key)
        if problem is not None:
            return [reply(problem)]
        partition = self._partition(operation.keyspace, operation.key)
        raw = self.storage.get(operation.keyspace, partition, operation.key)
        if raw is None:
            return [reply(Outcome(False))]
        existed = live_value(raw, now_ms) is not None
        write = Write(operation.keyspace, partition, operation.key, None)
        return [Persist((write,)), reply(Outcome(existed))]

    def _increment(self, now_ms: int, operation: Increment, reply: _ReplyFactory) -> list[Effect]:
        problem = self._check_key(operation.key)
        if problem is not None:
            return [reply(problem)]
        partition = self._partition(operation.keyspace, operation.key)
        previous = self._current(now_ms, operation.keyspace, partition, operation.key)
        try:
            result, expire_at_ms = incremented(previous, operation.delta)
        except StatementError as error:
            if str(error) == ErrorCode.NOT_INTEGER.value:
                return [reply(failure(ErrorCode.NOT_INTEGER, "value is not an integer"))]
            return [reply(failure(ErrorCode.OVERFLOW, "increment or decrement would overflow"))]
        record = encode_record(str(result).encode(), expire_at_ms)
        write = Write(operation.keyspace, partition, operation.key, record)
        return [Persist((write,)), reply(Outcome(result))]

    def _append(self, now_ms: int, operation: Append, reply: _ReplyFactory) -> list[Effect]:
        problem = self._check_key(operation.key)
        if problem is not None:
            return [reply(problem)]
        partition = self._partition(operation.keyspace, operation.key)
        previous = self._current(now_ms, operation.keyspace, partition, operation.key)
        value = operation.value if previous is None else previous[0] + operation.value
        problem = self._check_value(len(value))
        if problem is not None:
            return [reply(problem)]
        expire_at_ms = None if previous is None else previous[1]
        record = encode_record(value, expire_at_ms)
        write = Write(operation.keyspace, partition, operation.key, record)
        return [Persist((write,)), reply(Outcome(len(value)))]

    def _scan(self, now_ms: int, operation: ScanPartition) -> Outcome:
        if not 1 <= operation.limit <= self.limits.max_scan_limit:
            return failure(
                ErrorCode.INVALID_ARGUMENT,
                f"scan limit must be between 1 and {self.limits.max_scan_limit}",
            )
        rows = self.storage.scan(
            operation.keyspace,
            operation.partition,
            operation.start,
            operation.end,
            operation.limit + 1,
        )
        next_start = rows[operation.limit][0] if len(rows) > operation.limit else None
        items: list[tuple[bytes, bytes]] = []
        salted = self.salted_keys.get(operation.keyspace)
        for key, raw in rows[: operation.limit]:
            if salted and is_sub_key(key) and base_key(key) in salted:
                continue  # sub-key 0, the key itself, stands for the salted key in scans
            value = live_value(raw, now_ms)
            if value is not None:
                items.append((key, b"" if operation.keys_only else value))
        return Outcome(ScanPage(tuple(items), next_start))

    # --- rebalancing ----------------------------------------------------------------------

    def _sealed(self, operation: Operation) -> bool:
        if not isinstance(operation, _KEYED_OPERATIONS) or not operation.key:
            return False
        placement = self.partition_map.keyspaces.get(operation.keyspace)
        if placement is None:
            return False
        partition, owner = placement.owner_of_key(operation.key)
        if owner != self.node_id:
            return False
        return self.rebalancer.sealed_for(operation.keyspace, partition, operation.key)

    def _hold(self, now_ms: int, redo: Callable[[int], list[Effect]], reply: _ReplyFactory) -> None:
        self._held.append((now_ms + self.limits.map_wait_ms, redo, reply))

    def _owns(self, keyspace: str, partition: int, key: bytes) -> bool:
        placement = self.partition_map.keyspaces.get(keyspace)
        if placement is None:
            return False
        return placement.owner_of_key(key) == (partition, self.node_id)

    def _publish_measurements(self, now_ms: int) -> None:
        """Partition sizes (for sizing plans) and range measurements (for splits and
        merges), spread on SWIM probes to whichever node leads the controller."""
        sizes: dict[tuple[str, int], int] = {}
        for name, placement in self.partition_map.keyspaces.items():
            for partition in placement.partition_ids:
                if placement.owner(partition) == self.node_id:
                    sizes[(name, partition)] = estimate_partition_bytes(
                        self.storage, name, partition
                    )
        document: dict[str, dict[str, int]] = {}
        for (name, partition), estimate in sizes.items():
            if estimate:
                document.setdefault(name, {})[str(partition)] = estimate
        rates = {
            (load.keyspace, load.partition): load.requests_per_second
            for load in self.load.partitions(now_ms)
        }

        def size_of(keyspace: str, partition: int) -> int:
            known = sizes.get((keyspace, partition))
            if known is None:
                known = estimate_partition_bytes(self.storage, keyspace, partition)
            return known

        ranges = self.ranges.measure(
            now_ms,
            self.node_id,
            self.controller.metadata,
            self.storage,
            size_of,
            rates,
            set(self.rebalancer.garbage),
        )
        # One fact, not two: SWIM carries only a few facts per message.
        payload = json.dumps({"sizes": document, "ranges": ranges}, sort_keys=True).encode()
        self._own_measurements = payload
        self.failure_detector.publish(MEASUREMENTS_FACT, now_ms // SIZES_INTERVAL_MS, payload)

    def _measurements_heard(self, part: str) -> dict[str, Any]:
        """node id -> one part of its last published measurements (ours included)."""
        heard = self.failure_detector.heard(MEASUREMENTS_FACT)
        heard[self.node_id] = self._own_measurements
        parts: dict[str, Any] = {}
        for node_id, payload in heard.items():
            try:
                parts[node_id] = json.loads(payload)[part]
            except (ValueError, KeyError, TypeError):
                continue  # a peer's garbage must not stop planning
        return parts

    def _partition_sizes(self) -> dict[str, dict[int, int]]:
        """Every node's last published partition sizes, merged (estimates, seconds old)."""
        merged: dict[str, dict[int, int]] = {}
        for document in self._measurements_heard("sizes").values():
            try:
                for name, partitions in document.items():
                    for partition, size in partitions.items():
                        merged.setdefault(name, {})[int(partition)] = int(size)
            except (ValueError, AttributeError, TypeError):
                continue  # a peer's garbage must not stop planning
        return merged

    def _range_loads(self) -> dict[str, dict[int, PartitionLoad]]:
        return parse_measurements(self._measurements_heard("ranges"), self.controller.metadata)

    def _propose_internal(self, now_ms: int) -> Callable[[bytes], list[Effect]]:
        """A metadata proposal of this node's own (transfer progress, a plan): through the
        leader like a client's, its answer dropped (the metadata shows what happened)."""

        def propose(proposal: bytes) -> list[Effect]:
            request_id = self._next_internal_request
            self._next_internal_request += 1
            return self.on_client_request(now_ms, request_id, ChangeMetadata(proposal))

        return propose

    def _rebalance_tick(self, now_ms: int) -> list[Effect]:
        controller = self.controller
        if now_ms >= self._next_sizes_ms:
            self._next_sizes_ms = now_ms + SIZES_INTERVAL_MS
            self._publish_measurements(now_ms)
        effects = self.rebalancer.on_tick(
            now_ms,
            controller.metadata,
            controller.is_leader,
            self.rng,
            self._propose_internal(now_ms),
            self._owns,
            self._partition_sizes,
            self._range_loads,
        )
        if self.rebalancer.moving_out() != self._moving_out:
            self._refresh_fast_paths()
        if self._held:
            held, self._held = self._held, []
            waited_out = failure(ErrorCode.UNAVAILABLE, "the key is being handed over; retry")
            for deadline_ms, redo, reply in held:
                if deadline_ms <= now_ms:
                    effects.append(reply(waited_out))  # never run: a definite refusal
                else:
                    effects += redo(now_ms)  # runs, goes to the new owner, or waits again
        effects = [
            e for e in effects if not (type(e) is Reply and e.request_id >= INTERNAL_REQUESTS_FROM)
        ]
        return self._deliver_to_self(now_ms, effects)

    def _deliver_to_self(self, now_ms: int, effects: list[Effect]) -> list[Effect]:
        """Messages a node sends itself (a transfer between two partitions it owns)."""
        if not any(type(e) is Send and e.destination == self.node_id for e in effects):
            return effects
        result: list[Effect] = []
        for effect in effects:
            if type(effect) is Send and effect.destination == self.node_id:
                result += self.on_message(now_ms, self.node_id, effect.message)
            else:
                result.append(effect)
        return result

    # --- metadata, through the controller ---------------------------------------------

    def _after_controller(self, now_ms: int, effects: list[Effect]) -> list[Effect]:
        """Adopt the metadata the controller has applied, and wake what waited for it."""
        if self.controller.metadata.version == self.partition_map.version:
            return effects
        self.partition_map = PartitionMap.from_metadata(self.controller.metadata)
        effects = effects + self._sync_replicas(now_ms)
        self.salted_keys = {
            name: {bytes.fromhex(key): ways for key, ways in record.salted_keys.items()}
            for name, record in self.controller.metadata.keyspaces.items()
            if record.salted_keys
        }
        self.fast_path_version += 1
        return effects

    def _release_parked(self, now_ms: int) -> list[Effect]:
        """Serve the parked requests this node's map now covers, at most one per key per
        call (each entry point is one call): every request runs on storage as it was
        before the call, so a second write to the same key would be computed from the
        old value (two appends ending at one length, a before-image missing the first).
        The others wait for the next tick."""
        if not self._parked:
            return []
        parked_now, self._parked = self._parked, []
        keys: set[tuple[str, bytes]] = set()
        waiting: list[_Parked] = []
        effects: list[Effect] = []
        for parked in parked_now:
            operation = parked.request.operation
            key = None
            if isinstance(operation, _KEYED_OPERATIONS):
                key = (operation.keyspace, operation.key)
            if parked.request.map_version > self.partition_map.version or key in keys:
                waiting.append(parked)
                continue
            if key is not None:
                keys.add(key)
            effects += self._serve_forward(now_ms, parked.source, parked.request)
        self._parked = waiting + self._parked
        return effects

    def _change_metadata(self, now_ms: int, proposal: bytes, reply: _ReplyFactory) -> list[Effect]:
        """Propose any metadata command; answered with its JSON result once every node
        has applied it (or the wait ran out), like a keyspace creation."""
        if not self.controller.is_leader:
            leader = self.controller.leader_id
            message = f"the controller leader is {leader}" if leader else "no controller leader yet"
            return [reply(failure(ErrorCode.UNAVAILABLE, f"{message}; retry"))]

        def answer(outcome: Outcome) -> list[Effect]:
            if outcome.error is not None:
                if outcome.error is ErrorCode.MOVED:
                    outcome = failure(ErrorCode.UNAVAILABLE, "the controller leader changed; retry")
                return [reply(outcome)]
            index = self.controller.raft.applied_index
            deadline_ms = now_ms + self.limits.map_wait_ms
            return self.controller.when_applied_everywhere(
                index, deadline_ms, lambda: [reply(outcome)]
            )

        return self._after_controller(now_ms, self.controller.propose(now_ms, proposal, answer))

    def _create_keyspace(
        self, now_ms: int, config: KeyspaceConfig, reply: _ReplyFactory
    ) -> list[Effect]:
        try:
            config = config.canonical()
        except KeyspaceConfigError as error:
            return [reply(failure(ErrorCode.INVALID_ARGUMENT, str(error)))]
        existing = self.partition_map.keyspaces.get(config.name)
        if existing is not None:
            if existing.config == config:
                return [reply(Outcome(False))]
            return [reply(failure(ErrorCode.KEYSPACE_EXISTS, f"keyspace '{config.name}' exists"))]
        if not self.controller.is_leader:
            leader = self.controller.leader_id
            message = f"the controller leader is {leader}" if leader else "no controller leader yet"
            return [reply(failure(ErrorCode.UNAVAILABLE, f"{message}; retry"))]
        weights = self.controller.metadata.active_members()
        layout = config.strategy().initial_layout(weights, self.rng)
        proposal = command(
            "create_keyspace",
            config=config.to_dict(),
            layout=layout.to_dict(),
            partitions=list(layout.partition_ids),
            placed_for=weights,
        )

        def answer(outcome: Outcome) -> list[Effect]:
            result = _creation_outcome(config.name, outcome)
            if result.value is not True:
                return [reply(result)]
            # Answer once every node has it, so the client can use it through any node.
            index = self.controller.raft.applied_index
            deadline_ms = now_ms + self.limits.map_wait_ms
            return self.controller.when_applied_everywhere(
                index, deadline_ms, lambda: [reply(result)]
            )

        return self._after_controller(now_ms, self.controller.propose(now_ms, proposal, answer))


_Current = tuple[bytes, int | None] | None


def _creation_outcome(name: str, outcome: Outcome) -> Outcome:
    """What a client hears of a create_keyspace proposal."""
    if outcome.error is not None:
        if outcome.error is ErrorCode.MOVED:  # leadership moved before it was appended
            return failure(ErrorCode.UNAVAILABLE, "the controller leader changed; retry")
        return outcome
    result = json.loads(outcome.value)  # type: ignore[arg-type]
    if result["ok"]:
        return Outcome(bool(result["created"]))
    if "exists" in result["error"]:
        return failure(ErrorCode.KEYSPACE_EXISTS, f"keyspace '{name}' exists")
    return failure(ErrorCode.INVALID_ARGUMENT, str(result["error"]))


def _reply_to_gather(outcome: Outcome) -> Effect:
    return Reply(_GATHERED, outcome)


# Turns an outcome into the effect that answers whoever asked (a client or a peer).
_ReplyFactory = Callable[[Outcome], Effect]
