"""The cluster metadata the controller's Raft log replicates, as a deterministic state machine.

Every node applies the same committed commands in the same order, so every node holds
the same versioned copy and can route by it without asking the controller. Commands
are JSON documents (small, rare, and readable in a log dump). A command that cannot be
applied changes nothing and returns an error: the log may contain it (a proposer raced
another), and replaying the log must skip it the same way everywhere.

Epochs fence authority: every partition carries an epoch that grows whenever its owner
changes, and a node that is told of a newer epoch stops answering for the old one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from quorumdb.core.keyspace import KeyspaceConfig, KeyspaceConfigError
from quorumdb.core.partitioning import PartitioningError, layout_from_dict
from quorumdb.core.replication.placement import PlacementError, replica_nodes

MEMBER_STATES = ("joining", "active", "leaving", "left")
REBALANCE_MODES = ("manual", "automatic")
PLAN_STATES = ("proposed", "approved", "running", "paused", "done", "cancelled")
TRANSFER_STATES = ("pending", "copying", "done")
DEFAULT_THROTTLE_BYTES_PER_SECOND = 8 * 1024 * 1024
SALT_WAYS_MAX = 64


class MetadataError(ValueError):
    """A command that cannot be applied to the current metadata."""


@dataclass(frozen=True, slots=True)
class MemberRecord:
    node_id: str
    host: str
    peer_port: int
    resp_port: int
    http_port: int
    weight: int = 1
    state: str = "active"


@dataclass(frozen=True, slots=True)
class KeyspaceRecord:
    config: dict[str, Any]
    layout: dict[str, Any]
    layout_version: int = 1
    # partition id (as a string: JSON object keys) -> epoch of its current owner
    epochs: dict[str, int] = field(default_factory=dict)
    # hex of a salted key -> number of sub-keys its writes spread over
    salted_keys: dict[str, int] = field(default_factory=dict)
    # The members (id -> weight) the layout was computed for: when the active members
    # differ, the controller plans a rebalance.
    placed_for: dict[str, int] = field(default_factory=dict)
    # Single-leader keyspaces: partition id (string) -> its replicas, the leader first;
    # the partition's epoch above grows with every change of leader.
    replica_sets: dict[str, list[str]] = field(default_factory=dict)
    # Moves under way: partition id (string) -> {"remove": follower, "add": learner}.
    pending_moves: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TransferRecord:
    keyspace: str
    source_node: str
    source_partition: int
    target_node: str
    target_partition: int
    estimated_bytes: int
    state: str = "pending"
    copied_bytes: int = 0


@dataclass(frozen=True, slots=True)
class PlanRecord:
    plan_id: int
    reason: str
    # The layouts the plan leads to, applied (with new epochs) when every transfer is done.
    target_layouts: dict[str, dict[str, Any]]
    # Layout versions the plan was computed against: a plan for an outdated map is refused.
    based_on: dict[str, int]
    transfers: tuple[TransferRecord, ...]
    state: str = "proposed"
    placed_for: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ClusterMetadata:
    version: int = 0
    members: dict[str, MemberRecord] = field(default_factory=dict)
    keyspaces: dict[str, KeyspaceRecord] = field(default_factory=dict)
    rebalance_mode: str = "manual"
    throttle_bytes_per_second: int = DEFAULT_THROTTLE_BYTES_PER_SECOND
    plan: PlanRecord | None = None
    next_plan_id: int = 1

    # --- the state machine interface ----------------------------------------------------

    def apply(self, index: int, command: bytes) -> bytes:
        """Apply one committed command; the result goes back to whoever proposed it."""
        try:
            document = json.loads(command)
            if not isinstance(document, dict) or not isinstance(document.get("op"), str):
                raise MetadataError("a command is a JSON object with an 'op'")
            handler = _HANDLERS.get(document["op"])
            if handler is None:
                raise MetadataError(f"unknown metadata command {document['op']!r}")
            result = handler(self, document)
        except (MetadataError, KeyError, TypeError, ValueError) as error:
            text = str(error) if isinstance(error, MetadataError) else f"malformed: {error!r}"
            return json.dumps({"ok": False, "error": text, "version": self.version}).encode()
        if result.get("changed", True):
            self.version += 1
        return json.dumps({"ok": True, "version": self.version, **result}).encode()

    def snapshot(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        restored = ClusterMetadata.from_dict(json.loads(data))
        for name in ClusterMetadata.__slots__:
            setattr(self, name, getattr(restored, name))

    # --- reading ------------------------------------------------------------------------

    def active_members(self) -> dict[str, int]:
        """node id -> weight, for members that may own partitions."""
        return {
            node_id: member.weight
            for node_id, member in sorted(self.members.items())
            if member.state in ("active", "joining")
        }

    def plan_in_force(self) -> PlanRecord | None:
        """The plan whose transfers may run (or are paused mid-way), if any."""
        plan = self.plan
        if plan is None or plan.state not in ("approved", "running", "paused"):
            return None
        return plan

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "members": {node_id: asdict(member) for node_id, member in self.members.items()},
            "keyspaces": {name: asdict(record) for name, record in self.keyspaces.items()},
            "rebalance_mode": self.rebalance_mode,
            "throttle_bytes_per_second": self.throttle_bytes_per_second,
            "plan": _plan_to_dict(self.plan),
            "next_plan_id": self.next_plan_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterMetadata:
        plan = data.get("plan")
        return cls(
            version=int(data["version"]),
            members={k: MemberRecord(**v) for k, v in data["members"].items()},
            keyspaces={k: KeyspaceRecord(**v) for k, v in data["keyspaces"].items()},
            rebalance_mode=str(data["rebalance_mode"]),
            throttle_bytes_per_second=int(data["throttle_bytes_per_second"]),
            plan=_plan_from_dict(plan) if plan is not None else None,
            next_plan_id=int(data["next_plan_id"]),
        )


def command(op: str, **arguments: Any) -> bytes:
    """Encode a command for proposing (the inverse of what `apply` reads)."""
    return json.dumps({"op": op, **arguments}, sort_keys=True).encode()


# --- command handlers --------------------------------------------------------------------

Result = dict[str, Any]


def _member(metadata: ClusterMetadata, node_id: str) -> MemberRecord:
    member = metadata.members.get(node_id)
    if member is None:
        raise MetadataError(f"no member named {node_id!r}")
    return member


def _add_member(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    member = MemberRecord(**document["member"])
    _check_member(member)
    existing = metadata.members.get(member.node_id)
    if existing is not None and existing.state != "left":
        if replace(existing, state=member.state, weight=member.weight) == member:
            return {"changed": False}
        raise MetadataError(f"member {member.node_id!r} exists with another address")
    for other in metadata.members.values():
        if other.node_id != member.node_id and other.state != "left":
            if (other.host, other.peer_port) == (member.host, member.peer_port):
                raise MetadataError(f"{member.host}:{member.peer_port} is {other.node_id}'s")
    metadata.members[member.node_id] = member
    return {}


def _check_member(member: MemberRecord) -> None:
    if not member.node_id or len(member.node_id) > 64:
        raise MetadataError("a node id is 1 to 64 characters")
    if member.state not in MEMBER_STATES:
        raise MetadataError(f"member state must be one of {', '.join(MEMBER_STATES)}")
    _check_weight(member.weight)
    for port in (member.peer_port, member.resp_port, member.http_port):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise MetadataError(f"invalid port {port!r}")


def _check_weight(weight: object) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 1000:
        raise MetadataError("a weight is an integer from 1 to 1000")


def _set_member_state(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    member = _member(metadata, document["node_id"])
    state = document["state"]
    if state not in MEMBER_STATES:
        raise MetadataError(f"member state must be one of {', '.join(MEMBER_STATES)}")
    if member.state == state:
        return {"changed": False}
    if member.state == "left":
        raise MetadataError(f"{member.node_id} has left; it must join again")
    metadata.members[member.node_id] = replace(member, state=state)
    return {}


def _set_weight(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    member = _member(metadata, document["node_id"])
    _check_weight(document["weight"])
    if member.weight == document["weight"]:
        return {"changed": False}
    metadata.members[member.node_id] = replace(member, weight=document["weight"])
    return {}


def _checked_layout(layout: Any) -> dict[str, Any]:
    """A layout every node can decode: one that could not be would stop routing."""
    if not isinstance(layout, dict):
        raise MetadataError("a layout is a JSON object")
    try:
        layout_from_dict(layout)
    except PartitioningError as error:
        raise MetadataError(f"invalid layout: {error}") from None
    return layout


def _create_keyspace(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    config: dict[str, Any] = document["config"]
    try:
        canonical = KeyspaceConfig.from_dict(config).to_dict()
    except (KeyspaceConfigError, KeyError, TypeError) as error:
        raise MetadataError(f"invalid keyspace: {error}") from None
    if canonical != config:
        raise MetadataError("a keyspace configuration must be proposed in canonical form")
    name = config["name"]
    existing = metadata.keyspaces.get(name)
    if existing is not None:
        if existing.config == config:
            return {"changed": False, "created": False}
        raise MetadataError(f"keyspace '{name}' exists")
    layout = _checked_layout(document["layout"])
    epochs = {str(partition): 1 for partition in document.get("partitions", [])}
    placed_for = {str(k): int(v) for k, v in document.get("placed_for", {}).items()}
    replica_sets: dict[str, list[str]] = {}
    replicas = KeyspaceConfig.from_dict(config)
    if replicas.replicated:
        placed = layout_from_dict(layout)
        members = list(metadata.active_members())
        try:
            for partition in placed.partition_ids:
                nodes = replica_nodes(placed.owner(partition), members, replicas.replication_factor)
                replica_sets[str(partition)] = nodes
                epochs.setdefault(str(partition), 1)
        except (PlacementError, ValueError) as error:
            raise MetadataError(f"cannot place replicas: {error}") from None
    metadata.keyspaces[name] = KeyspaceRecord(
        config, layout, 1, epochs, {}, placed_for, replica_sets
    )
    return {"created": True}


def _replicated_partition(
    metadata: ClusterMetadata, document: dict[str, Any]
) -> tuple[str, str, KeyspaceRecord, int]:
    """(keyspace, partition, record, epoch) of the partition a command names, checked to
    be replicated and still at the command's `expected_epoch` (two racing changes
    cannot both win)."""
    name, partition = document["keyspace"], str(document["partition"])
    record = metadata.keyspaces.get(name)
    if record is None or partition not in record.replica_sets:
        raise MetadataError(f"'{name}' has no replicated partition {partition}")
    epoch = record.epochs.get(partition, 1)
    expected = document["expected_epoch"]
    if epoch != expected:
        raise MetadataError(f"partition {partition} is at epoch {epoch}, not {expected}")
    return name, partition, record, epoch


def _with_replicas(
    metadata: ClusterMetadata, name: str, partition: str, replicas: list[str], epoch: int
) -> Result:
    record = metadata.keyspaces[name]
    replica_sets = {**record.replica_sets, partition: replicas}
    epochs = {**record.epochs, partition: epoch}
    metadata.keyspaces[name] = replace(record, replica_sets=replica_sets, epochs=epochs)
    return {"epoch": epoch, "replicas": replicas}


def _fail_over(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    """Make another replica the leader of a partition, in a new epoch."""
    name, partition, record, epoch = _replicated_partition(metadata, document)
    leader = document["leader"]
    replicas = record.replica_sets[partition]
    if leader not in replicas:
        raise MetadataError(f"{leader} holds no replica of partition {partition}")
    ordered = replicas
    if replicas[0] != leader:
        ordered = [leader] + [node for node in replicas[1:] if node != leader] + [replicas[0]]
    pending = record.pending_moves.get(partition)
    if pending is not None and pending["remove"] == leader:
        # The follower being replaced now leads: the move is called off.
        moves = {k: v for k, v in record.pending_moves.items() if k != partition}
        metadata.keyspaces[name] = replace(record, pending_moves=moves)
    return _with_replicas(metadata, name, partition, ordered, epoch + 1)


def _move_replica(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    """Start replacing one follower of a partition by another member: the new one joins
    as a learner and catches up from the leader (the log, or a snapshot), while writes
    need both the current and the future followers (see replica.py); the leader then
    completes the move (`complete_move`). Refused for the leader (fail it over first)."""
    name, partition, record, _ = _replicated_partition(metadata, document)
    remove, add = document["remove"], document["add"]
    replicas = record.replica_sets[partition]
    if partition in record.pending_moves:
        raise MetadataError(f"a move of partition {partition} is already under way")
    if remove not in replicas[1:]:
        leads = " (it leads the partition: fail it over first)" if remove == replicas[0] else ""
        raise MetadataError(f"{remove} is not a follower of partition {partition}{leads}")
    if add in replicas:
        raise MetadataError(f"{add} already holds a replica of partition {partition}")
    if add not in metadata.active_members():
        raise MetadataError(f"{add} is not an active member")
    moves = {**record.pending_moves, partition: {"remove": remove, "add": add}}
    metadata.keyspaces[name] = replace(record, pending_moves=moves)
    return {"learner": add, "replaces": remove}


def _complete_move(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    """The learner has caught up: it replaces the follower, in a new epoch."""
    name, partition, record, epoch = _replicated_partition(metadata, document)
    pending = record.pending_moves.get(partition)
    if pending is None or pending != {"remove": document["remove"], "add": document["add"]}:
        raise MetadataError(f"no such move of partition {partition} is under way")
    replicas = record.replica_sets[partition]
    moved = [node for node in replicas if node != pending["remove"]] + [pending["add"]]
    moves = {k: v for k, v in record.pending_moves.items() if k != partition}
    metadata.keyspaces[name] = replace(record, pending_moves=moves)
    return _with_replicas(metadata, name, partition, moved, epoch + 1)


def _set_layout(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    """Install a new layout; `changed_partitions` get their epoch raised (new owners)."""
    name = document["keyspace"]
    record = metadata.keyspaces.get(name)
    if record is None:
        raise MetadataError(f"unknown keyspace '{name}'")
    if document["expected_layout_version"] != record.layout_version:
        raise MetadataError(
            f"layout of '{name}' is at version {record.layout_version},"
            f" not {document['expected_layout_version']}"
        )
    layout = _checked_layout(document["layout"])
    metadata.keyspaces[name] = _with_layout(record, layout, document["changed"])
    return {"layout_version": record.layout_version + 1}


def _with_layout(
    record: KeyspaceRecord, layout: dict[str, Any], changed_partitions: list[int]
) -> KeyspaceRecord:
    epochs = dict(record.epochs)
    for partition in changed_partitions:
        epochs[str(partition)] = epochs.get(str(partition), 0) + 1
    return replace(record, layout=layout, layout_version=record.layout_version + 1, epochs=epochs)


def _salt_key(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    name = document["keyspace"]
    record = metadata.keyspaces.get(name)
    if record is None:
        raise MetadataError(f"unknown keyspace '{name}'")
    key_hex: str = document["key_hex"]
    bytes.fromhex(key_hex)  # malformed hex is refused here, not on every node later
    ways = document["ways"]
    salted = dict(record.salted_keys)
    if ways == 0:
        if salted.pop(key_hex, None) is None:
            return {"changed": False}
    else:
        if isinstance(ways, bool) or not isinstance(ways, int) or not 2 <= ways <= SALT_WAYS_MAX:
            raise MetadataError(f"a salted key spreads over 2 to {SALT_WAYS_MAX} sub-keys")
        if salted.get(key_hex) == ways:
            return {"changed": False}
        if key_hex in salted:
            raise MetadataError("unsalt the key before changing its number of sub-keys")
        salted[key_hex] = ways
    metadata.keyspaces[name] = replace(record, salted_keys=salted)
    return {}


def _set_rebalance_mode(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    mode = document["mode"]
    if mode not in REBALANCE_MODES:
        raise MetadataError(f"rebalance mode must be one of {', '.join(REBALANCE_MODES)}")
    if metadata.rebalance_mode == mode:
        return {"changed": False}
    metadata.rebalance_mode = mode
    return {}


def _set_throttle(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    rate = document["bytes_per_second"]
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1024:
        raise MetadataError("the throttle is at least 1024 bytes per second")
    metadata.throttle_bytes_per_second = rate
    return {}


def _propose_plan(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    if metadata.plan is not None and metadata.plan.state not in ("done", "cancelled"):
        raise MetadataError(f"plan {metadata.plan.plan_id} is still {metadata.plan.state}")
    based_on: dict[str, int] = document["based_on"]
    for name, layout_version in based_on.items():
        record = metadata.keyspaces.get(name)
        if record is None or record.layout_version != layout_version:
            raise MetadataError(f"the plan was computed for an older map of '{name}'")
    transfers = tuple(TransferRecord(**transfer) for transfer in document["transfers"])
    for layout in document["target_layouts"].values():
        _checked_layout(layout)
    for transfer in transfers:
        for node_id in (transfer.source_node, transfer.target_node):
            _member(metadata, node_id)
    state = "approved" if metadata.rebalance_mode == "automatic" else "proposed"
    metadata.plan = PlanRecord(
        metadata.next_plan_id,
        str(document["reason"]),
        dict(document["target_layouts"]),
        dict(based_on),
        transfers,
        state,
        {str(k): int(v) for k, v in document.get("placed_for", {}).items()},
    )
    metadata.next_plan_id += 1
    if state == "approved" and not transfers:
        _switch_ownership(metadata, metadata.plan)  # nothing to copy: switch at once
        metadata.plan = replace(metadata.plan, state="done")
    return {"plan_id": metadata.plan.plan_id, "state": metadata.plan.state}


def _plan_step(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    """approve, pause, resume and cancel: the operator's levers on the current plan."""
    plan = metadata.plan
    if plan is None or plan.plan_id != document["plan_id"]:
        raise MetadataError(f"no plan {document['plan_id']} (see `quorumdb rebalance status`)")
    action = document["action"]
    allowed = {
        "approve": ("proposed",),
        "pause": ("approved", "running"),
        "resume": ("paused",),
        "cancel": ("proposed", "approved", "running", "paused"),
    }
    if action not in allowed:
        raise MetadataError(f"unknown plan action {action!r}")
    if plan.state not in allowed[action]:
        raise MetadataError(f"cannot {action} a plan that is {plan.state}")
    switched = sum(1 for transfer in plan.transfers if transfer.state == "done")
    if action == "cancel" and switched:
        # Their sources may already have deleted what they handed over: going back to
        # the old layout would lose those keys. Pausing is the way to stop.
        raise MetadataError(f"{switched} transfers already switched ownership; pause instead")
    new_state = {"approve": "approved", "pause": "paused", "resume": "running"}.get(
        action, "cancelled"
    )
    plan = replace(plan, state=new_state)
    if new_state == "approved" and not plan.transfers:
        _switch_ownership(metadata, plan)
        plan = replace(plan, state="done")
    metadata.plan = plan
    return {"state": plan.state}


def _transfer_progress(metadata: ClusterMetadata, document: dict[str, Any]) -> Result:
    """A target reports how far a transfer got; the last `done` switches ownership."""
    plan = metadata.plan
    if plan is None or plan.plan_id != document["plan_id"]:
        raise MetadataError(f"no plan {document['plan_id']}")
    if plan.state not in ("approved", "running"):
        raise MetadataError(f"plan {plan.plan_id} is {plan.state}")
    index = document["transfer"]
    if not 0 <= index < len(plan.transfers):
        raise MetadataError(f"plan {plan.plan_id} has no transfer {index}")
    state = document["state"]
    if state not in TRANSFER_STATES:
        raise MetadataError(f"transfer state must be one of {', '.join(TRANSFER_STATES)}")
    transfers = list(plan.transfers)
    transfers[index] = replace(transfers[index], state=state, copied_bytes=document["copied_bytes"])
    plan = replace(plan, transfers=tuple(transfers), state="running")
    if all(transfer.state == "done" for transfer in transfers) or not transfers:
        _switch_ownership(metadata, plan)
        plan = replace(plan, state="done")
    metadata.plan = plan
    return {"state": plan.state}


def _switch_ownership(metadata: ClusterMetadata, plan: PlanRecord) -> None:
    """Install the plan's layouts; every partition that received data gets a new epoch."""
    targets: dict[str, set[int]] = {}
    for transfer in plan.transfers:
        targets.setdefault(transfer.keyspace, set()).add(transfer.target_partition)
    for name, layout in plan.target_layouts.items():
        record = metadata.keyspaces[name]
        installed = _with_layout(record, layout, sorted(targets.get(name, ())))
        metadata.keyspaces[name] = replace(installed, placed_for=dict(plan.placed_for))


_HANDLERS = {
    "add_member": _add_member,
    "set_member_state": _set_member_state,
    "set_weight": _set_weight,
    "create_keyspace": _create_keyspace,
    "set_layout": _set_layout,
    "salt_key": _salt_key,
    "set_rebalance_mode": _set_rebalance_mode,
    "set_throttle": _set_throttle,
    "propose_plan": _propose_plan,
    "plan_step": _plan_step,
    "transfer_progress": _transfer_progress,
    "fail_over": _fail_over,
    "move_replica": _move_replica,
    "complete_move": _complete_move,
}


def _plan_to_dict(plan: PlanRecord | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    document = asdict(plan)
    document["transfers"] = [asdict(transfer) for transfer in plan.transfers]
    return document


def _plan_from_dict(data: dict[str, Any]) -> PlanRecord:
    transfers = tuple(TransferRecord(**transfer) for transfer in data["transfers"])
    return PlanRecord(**{**data, "transfers": transfers})
