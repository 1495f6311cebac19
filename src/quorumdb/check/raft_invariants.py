"""Raft's safety properties (Raft paper, figure 3), checked on every observed node state.

The driver calls `observe` after every simulation step for each node whose state may
have changed - but only while that node has no unsynced writes. A node's state before
its writes are durable is invisible to everyone else (persist-before-send holds back
every message and reply), and a crash may take it back; judging it would report
"leaders" and "commits" that never existed. Observed that way, these must always hold:

- election safety: at most one leader per term, over the whole run;
- log matching: two logs holding an entry with the same index and term hold the same
  entry there and the same entries before it;
- committed entries are never lost or changed: once any node reports index i
  committed, every later report of i names the same entry, and every leader of a
  later term holds it (leader completeness);
- state-machine safety: no two nodes apply different commands at one index.

Log matching is checked through identities: each (index, term) must always map to
the same entry and the same previous term, which by induction gives equal prefixes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from quorumdb.core.controller.raft import RaftNode, Role
from quorumdb.core.controller.raft_log import EntryKind, LogEntry

# What identifies an entry's content: kind, command, configuration, previous term.
EntryIdentity = tuple[EntryKind, bytes, object, int]

VIOLATIONS_KEPT_MAX = 20


@dataclass(slots=True)
class _NodeCursor:
    """What was already checked for one node, so unchanged state costs nothing."""

    log_version: int = -1
    term: int = -1
    commit_index: int = 0


@dataclass(slots=True)
class RaftInvariantChecker:
    leaders: dict[int, str] = field(default_factory=dict)
    identities: dict[tuple[int, int], EntryIdentity] = field(default_factory=dict)
    # index -> (term, identity, the observer's term when first seen committed)
    committed: dict[int, tuple[int, EntryIdentity, int]] = field(default_factory=dict)
    applied: dict[int, bytes] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    violation_count: int = 0
    observations: int = 0
    _cursors: dict[str, _NodeCursor] = field(default_factory=dict)

    @property
    def commit_index_max(self) -> int:
        return max(self.committed, default=0)

    def observe(
        self, node_id: str, node: RaftNode, newly_applied: Iterable[tuple[int, bytes]] = ()
    ) -> None:
        self.observations += 1
        cursor = self._cursors.setdefault(node_id, _NodeCursor())
        if node.role is Role.LEADER:
            self._check_single_leader(node_id, node.current_term)
        log_changed = node.log.version != cursor.log_version
        if log_changed:
            self._check_log_matching(node_id, node)
        if node.commit_index != cursor.commit_index or log_changed:
            self._record_committed(node_id, node, cursor)
        if node.role is Role.LEADER and (log_changed or node.current_term != cursor.term):
            self._check_leader_completeness(node_id, node)
        for index, command in newly_applied:
            self._check_applied(node_id, index, command)
        cursor.log_version = node.log.version
        cursor.term = node.current_term
        cursor.commit_index = node.commit_index

    def forget_node(self, node_id: str) -> None:
        """A restarted node is a new observation: re-check everything it holds."""
        self._cursors.pop(node_id, None)

    # --- the properties -------------------------------------------------------------------

    def _violation(self, text: str) -> None:
        self.violation_count += 1
        if len(self.violations) < VIOLATIONS_KEPT_MAX:
            self.violations.append(text)

    def _check_single_leader(self, node_id: str, term: int) -> None:
        leader = self.leaders.setdefault(term, node_id)
        if leader != node_id:
            self._violation(f"election safety: {leader} and {node_id} both led term {term}")

    @staticmethod
    def _identity(entry: LogEntry, previous_term: int) -> EntryIdentity:
        return (entry.kind, entry.command, entry.configuration, previous_term)

    def _check_log_matching(self, node_id: str, node: RaftNode) -> None:
        previous_term = node.log.snapshot.term
        for entry in node.log.all_entries():
            identity = self._identity(entry, previous_term)
            known = self.identities.setdefault((entry.index, entry.term), identity)
            if known != identity:
                self._violation(
                    f"log matching: {node_id} holds a different entry {entry.index}"
                    f" of term {entry.term} (or a different prefix)"
                )
            previous_term = entry.term

    def _record_committed(self, node_id: str, node: RaftNode, cursor: _NodeCursor) -> None:
        log = node.log
        first = max(log.first_index, min(cursor.commit_index + 1, log.last_index + 1))
        if cursor.log_version != log.version:
            first = log.first_index  # re-read everything committed that the log holds
        for index in range(first, min(node.commit_index, log.last_index) + 1):
            entry = log.entry(index)
            previous_term = log.term_at(index - 1)
            assert previous_term is not None
            identity = self._identity(entry, previous_term)
            known = self.committed.setdefault(index, (entry.term, identity, node.current_term))
            if known[:2] != (entry.term, identity):
                self._violation(
                    f"committed entry changed: {node_id} has index {index} term {entry.term}"
                    f" committed, earlier term {known[0]} was committed there"
                )

    def _check_leader_completeness(self, node_id: str, node: RaftNode) -> None:
        log = node.log
        for index in range(log.first_index, self.commit_index_max + 1):
            known = self.committed.get(index)
            if known is None or known[2] >= node.current_term:
                continue  # committed in this leader's term or later: it may not know yet
            if index > log.last_index or log.entry(index).term != known[0]:
                self._violation(
                    f"committed entry lost: leader {node_id} of term {node.current_term}"
                    f" lacks index {index} (term {known[0]})"
                )
                return

    def _check_applied(self, node_id: str, index: int, command: bytes) -> None:
        known = self.applied.setdefault(index, command)
        if known != command:
            self._violation(
                f"state-machine safety: {node_id} applied {command!r} at {index},"
                f" another node applied {known!r}"
            )
        committed = self.committed.get(index)
        if committed is not None and committed[1][0] is EntryKind.COMMAND:
            if committed[1][1] != command:
                self._violation(f"{node_id} applied {command!r} at {index}, not the committed one")
