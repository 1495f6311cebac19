"""Keeping replica sets on active members, spread evenly: a duty of the controller leader.

Every check (once a second) it proposes, through the metadata log, a few changes:

1. a follower on a leaving (or departed) member is replaced by the active member that
   holds the fewest replicas;
2. otherwise, when one active member holds two or more replicas more than another (a
   member joined), a follower moves from the fullest to the emptiest member.

A partition led by a leaving member is handed over by the failover coordinator
(failover.py), which asks every replica, the leaving leader first, for its position
and picks the most up-to-date follower, as for a failed leader.

Each proposal names the epoch it was computed for, so one that races a failover or
another move is refused and recomputed at the next check. A new follower catches up
from the leader's log, or from a snapshot when the log no longer reaches back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from quorumdb.core.cluster_metadata import ClusterMetadata, command
from quorumdb.core.effects import Effect

CHECK_INTERVAL_MS = 1_000
MOVES_PER_CHECK = 2

Propose = Callable[[bytes], list[Effect]]


def replica_moves(metadata: ClusterMetadata, limit: int = MOVES_PER_CHECK) -> list[bytes]:
    """The commands that bring replica sets closer to active, even placement."""
    active = metadata.active_members()
    counts = {node_id: 0 for node_id in active}
    partitions: list[tuple[str, str, int, list[str]]] = []
    for name, record in sorted(metadata.keyspaces.items()):
        for partition, nodes in sorted(record.replica_sets.items(), key=lambda i: int(i[0])):
            move = record.pending_moves.get(partition)
            for node_id in [*nodes, *([move["add"]] if move else [])]:
                if node_id in counts:
                    counts[node_id] += 1
            if move is None:  # one move at a time per partition
                partitions.append((name, partition, record.epochs.get(partition, 1), nodes))
    proposals: list[bytes] = []
    for name, partition, epoch, nodes in partitions:
        if len(proposals) >= limit:
            return proposals
        step = _repair(name, partition, epoch, nodes, active, counts)
        if step is not None:
            proposals.append(step)
    for name, partition, epoch, nodes in partitions:
        if len(proposals) >= limit:
            break
        step = _balance(name, partition, epoch, nodes, counts)
        if step is not None:
            proposals.append(step)
    return proposals


def _repair(
    name: str,
    partition: str,
    epoch: int,
    nodes: list[str],
    active: dict[str, int],
    counts: dict[str, int],
) -> bytes | None:
    for node_id in nodes[1:]:
        if node_id not in active:
            target = _emptiest(counts, exclude=nodes)
            if target is None:
                return None
            counts[target] += 1
            return _move(name, partition, epoch, node_id, target)
    return None


def _balance(
    name: str, partition: str, epoch: int, nodes: list[str], counts: dict[str, int]
) -> bytes | None:
    target = _emptiest(counts, exclude=nodes)
    followers = [node_id for node_id in nodes[1:] if node_id in counts]
    if target is None or not followers:
        return None
    fullest = max(followers, key=lambda node_id: (counts[node_id], node_id))
    if counts[fullest] - counts[target] < 2:
        return None
    counts[fullest] -= 1
    counts[target] += 1
    return _move(name, partition, epoch, fullest, target)


def _emptiest(counts: dict[str, int], exclude: list[str]) -> str | None:
    candidates = [node_id for node_id in counts if node_id not in exclude]
    if not candidates:
        return None
    return min(candidates, key=lambda node_id: (counts[node_id], node_id))


def _move(name: str, partition: str, epoch: int, remove: str, add: str) -> bytes:
    return command(
        "move_replica",
        keyspace=name,
        partition=int(partition),
        expected_epoch=epoch,
        remove=remove,
        add=add,
    )


@dataclass(slots=True)
class ReplicaPlacer:
    moves_proposed: int = 0
    _next_check_ms: int = 0

    def on_tick(
        self, now_ms: int, is_controller_leader: bool, metadata: ClusterMetadata, propose: Propose
    ) -> list[Effect]:
        if not is_controller_leader or now_ms < self._next_check_ms:
            return []
        self._next_check_ms = now_ms + CHECK_INTERVAL_MS
        effects: list[Effect] = []
        for proposal in replica_moves(metadata):
            self.moves_proposed += 1
            effects += propose(proposal)
        return effects
