"""The Raft invariant checker must flag each broken property (it can fail), and stay
quiet on healthy nodes. Nodes are built from hand-made persisted state."""

from __future__ import annotations

import random

from quorumdb.check.raft_invariants import RaftInvariantChecker
from quorumdb.core.controller.raft import RaftNode, Role
from quorumdb.core.controller.raft_config import RaftConfig
from quorumdb.core.controller.raft_log import EntryKind, LogEntry
from quorumdb.core.controller.raft_persistence import HardState, PersistedState
from quorumdb.sim.register_state_machine import RegisterStateMachine

VOTERS = ("n1", "n2", "n3")


def node(
    node_id: str,
    terms: list[int],
    term: int | None = None,
    commit_index: int = 0,
    leader: bool = False,
    commands: list[bytes] | None = None,
) -> RaftNode:
    commands = commands or [f"put k v{index + 1}".encode() for index in range(len(terms))]
    entries = tuple(
        LogEntry(index + 1, entry_term, EntryKind.COMMAND, commands[index])
        for index, entry_term in enumerate(terms)
    )
    current_term = term if term is not None else (terms[-1] if terms else 0)
    state = PersistedState(HardState(current_term, None), None, entries)
    raft = RaftNode(
        node_id,
        RaftConfig(bootstrap_voters=VOTERS),
        state,
        RegisterStateMachine(),
        random.Random(0),
    )
    raft.commit_index = commit_index
    if leader:
        raft.role = Role.LEADER
    return raft


def test_healthy_nodes_raise_nothing() -> None:
    checker = RaftInvariantChecker()
    checker.observe("n1", node("n1", [1, 1, 2], commit_index=3, leader=True))
    checker.observe("n2", node("n2", [1, 1], commit_index=2))
    checker.observe("n3", node("n3", [1, 1, 2, 2], term=3, commit_index=3), [(1, b"put k v1")])
    assert checker.violations == []


def test_two_leaders_in_one_term_are_flagged() -> None:
    checker = RaftInvariantChecker()
    checker.observe("n1", node("n1", [1], leader=True))
    checker.observe("n2", node("n2", [1], leader=True))
    assert any("election safety" in text for text in checker.violations)


def test_same_index_and_term_with_different_content_breaks_log_matching() -> None:
    checker = RaftInvariantChecker()
    checker.observe("n1", node("n1", [1, 1], commands=[b"put k a", b"put k b"]))
    checker.observe("n2", node("n2", [1, 1], commands=[b"put k a", b"put k DIFFERENT"]))
    assert any("log matching" in text for text in checker.violations)


def test_same_entry_after_different_prefixes_breaks_log_matching() -> None:
    checker = RaftInvariantChecker()
    checker.observe("n1", node("n1", [1, 3], commands=[b"x", b"same"]))
    checker.observe("n2", node("n2", [2, 3], commands=[b"x", b"same"]))
    assert any("log matching" in text for text in checker.violations)


def test_a_changed_committed_entry_is_flagged() -> None:
    checker = RaftInvariantChecker()
    checker.observe("n1", node("n1", [1, 1], commit_index=2))
    checker.observe("n2", node("n2", [1, 2], term=2, commit_index=2))  # another entry
    assert any("committed entry changed" in text for text in checker.violations)


def test_a_later_leader_missing_a_committed_entry_is_flagged() -> None:
    checker = RaftInvariantChecker()
    checker.observe("n1", node("n1", [1, 1, 1], term=1, commit_index=3))
    checker.observe("n2", node("n2", [1, 1], term=2, leader=True))
    assert any("committed entry lost" in text for text in checker.violations)


def test_a_stale_leader_of_an_older_term_is_not_blamed() -> None:
    checker = RaftInvariantChecker()
    checker.observe("n1", node("n1", [1, 1, 3], term=3, commit_index=3))
    checker.observe("n2", node("n2", [1, 1], term=2, leader=True))  # deposed, unaware
    assert checker.violations == []


def test_different_commands_applied_at_one_index_are_flagged() -> None:
    checker = RaftInvariantChecker()
    checker.observe("n1", node("n1", [1]), [(1, b"put k a")])
    checker.observe("n2", node("n2", [1]), [(1, b"put k b")])
    assert any("state-machine safety" in text for text in checker.violations)
