"""Unit tests of the Raft core: elections, replication, conflicts, snapshots, reads,
membership changes, and restarts from persisted state. Each test drives a small
synchronous cluster (tests/raft_test_cluster.py) with a fixed seed."""

from __future__ import annotations

import random

import pytest

from quorumdb.core.controller.raft import RaftNode, Role, leader_hint
from quorumdb.core.controller.raft_config import RaftConfig, RaftConfigError
from quorumdb.core.controller.raft_configuration import MembershipChange, MembershipChangeKind
from quorumdb.core.controller.raft_log import EntryKind, LogEntry
from quorumdb.core.controller.raft_messages import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    RequestVote,
    RequestVoteReply,
)
from quorumdb.core.controller.raft_persistence import (
    EMPTY_STATE,
    KEYSPACE,
    load_persisted_state,
)
from quorumdb.core.effects import Persist, Send
from quorumdb.core.errors import ErrorCode
from quorumdb.sim.register_state_machine import RegisterStateMachine, cas_command, put_command
from raft_test_cluster import CONFIG, RaftTestCluster


def committed_values(cluster: RaftTestCluster, node_id: str) -> dict[str, str]:
    return dict(cluster.state_machines[node_id].values)


# --- elections ------------------------------------------------------------------------------


@pytest.mark.parametrize("voters", [1, 3, 5])
def test_a_group_elects_exactly_one_leader(voters: int) -> None:
    cluster = RaftTestCluster(voters)
    leader = cluster.elect()
    cluster.advance(1_000)
    assert cluster.leaders() == [leader]
    terms = {node.current_term for node in cluster.nodes.values()}
    assert terms == {cluster.nodes[leader].current_term}
    assert all(node.leader_id == leader for node in cluster.nodes.values())


def test_a_crashed_leader_is_replaced_in_a_higher_term() -> None:
    cluster = RaftTestCluster(3)
    old = cluster.elect()
    old_term = cluster.nodes[old].current_term
    cluster.crash(old)
    new = cluster.elect()
    assert new != old
    assert cluster.nodes[new].current_term > old_term


def test_pre_vote_keeps_an_isolated_node_from_raising_the_term() -> None:
    cluster = RaftTestCluster(3)
    leader = cluster.elect()
    follower = next(node_id for node_id in cluster.voter_ids if node_id != leader)
    term = cluster.nodes[leader].current_term
    cluster.isolate(follower)
    cluster.advance(3_000)
    assert cluster.nodes[follower].current_term == term  # pre-votes went nowhere
    cluster.heal()
    cluster.advance(1_000)
    assert cluster.leader() == leader  # the rejoining node did not disrupt it
    assert cluster.nodes[leader].current_term == term


def test_without_pre_vote_an_isolated_node_raises_its_term() -> None:
    """The contrast that shows what pre-vote buys."""
    config = RaftConfig(election_timeout_ms_min=300, election_timeout_ms_max=600, pre_vote=False)
    cluster = RaftTestCluster(3, config=config)
    leader = cluster.elect()
    follower = next(node_id for node_id in cluster.voter_ids if node_id != leader)
    cluster.isolate(follower)
    cluster.advance(3_000)
    assert cluster.nodes[follower].current_term > cluster.nodes[leader].current_term


def test_check_quorum_makes_an_isolated_leader_step_down() -> None:
    cluster = RaftTestCluster(3)
    leader = cluster.elect()
    cluster.isolate(leader)
    cluster.advance(2_000)
    assert cluster.nodes[leader].role is not Role.LEADER
    others = [node_id for node_id in cluster.leaders() if node_id != leader]
    assert len(others) == 1


def test_a_vote_is_persisted_before_the_vote_reply_is_sent() -> None:
    node = RaftNode(
        "n2",
        RaftConfig(bootstrap_voters=("n1", "n2", "n3")),
        EMPTY_STATE,
        RegisterStateMachine(),
        random.Random(1),
    )
    effects = node.on_message(0, "n1", RequestVote(term=1, last_log_index=0, last_log_term=0))
    assert isinstance(effects[0], Persist)
    assert isinstance(effects[1], Send)
    assert effects[1].message == RequestVoteReply(1, True)
    # A second candidate of the same term is refused: one vote per term.
    effects = node.on_message(1, "n3", RequestVote(term=1, last_log_index=5, last_log_term=1))
    assert [effect.message for effect in effects if isinstance(effect, Send)] == [
        RequestVoteReply(1, False)
    ]


def test_a_vote_is_refused_to_a_candidate_with_an_older_log() -> None:
    entry = LogEntry(1, 2, EntryKind.NOOP)
    node = RaftNode(
        "n2",
        RaftConfig(bootstrap_voters=("n1", "n2", "n3")),
        EMPTY_STATE,
        RegisterStateMachine(),
        random.Random(1),
    )
    node.on_message(0, "n1", AppendEntries(2, 0, 0, (entry,), 0))
    node._last_leader_contact_ms = None  # the leader is long gone
    effects = node.on_message(9_000, "n3", RequestVote(term=3, last_log_index=5, last_log_term=1))
    assert [effect.message for effect in effects if isinstance(effect, Send)] == [
        RequestVoteReply(3, False)
    ]


# --- replication and conflicts --------------------------------------------------------------


def test_a_proposal_is_applied_everywhere_and_answered_with_its_result() -> None:
    cluster = RaftTestCluster(3)
    leader = cluster.elect()
    cluster.propose(leader, 1, put_command("k", "a"))
    cluster.propose(leader, 2, cas_command("k", "a", "b"))
    cluster.propose(leader, 3, cas_command("k", "a", "c"))
    cluster.advance(200)
    assert [cluster.replies[index].value for index in (1, 2, 3)] == [b"ok", b"ok", b"mismatch"]
    for node_id in cluster.voter_ids:
        assert committed_values(cluster, node_id) == {"k": "b"}


def test_a_follower_refuses_a_proposal_with_a_leader_hint() -> None:
    cluster = RaftTestCluster(3)
    leader = cluster.elect()
    follower = next(node_id for node_id in cluster.voter_ids if node_id != leader)
    cluster.propose(follower, 7, put_command("k", "x"))
    outcome = cluster.replies[7]
    assert outcome.error is ErrorCode.MOVED and outcome.error.definite
    assert leader_hint(outcome) == leader


def test_conflicting_uncommitted_entries_are_replaced_by_the_new_leaders() -> None:
    cluster = RaftTestCluster(3)
    old = cluster.elect()
    cluster.isolate(old)
    for request_id in range(1, 4):  # appended on the old leader only: never committed
        cluster.propose(old, request_id, put_command("k", f"lost{request_id}"))
    cluster.advance(2_000)
    new = cluster.leader()
    assert new != old
    cluster.propose(new, 10, put_command("k", "kept"))
    cluster.heal()
    cluster.advance(1_000)
    assert cluster.leader() == new
    for request_id in range(1, 4):
        assert cluster.replies[request_id].error is ErrorCode.UNAVAILABLE  # indefinite
    new_log = cluster.nodes[new].log.all_entries()
    assert cluster.nodes[old].log.all_entries() == new_log
    assert committed_values(cluster, old) == {"k": "kept"}


def test_a_rejection_carries_the_conflict_term_hint() -> None:
    node = RaftNode(
        "n2",
        RaftConfig(bootstrap_voters=("n1", "n2", "n3")),
        EMPTY_STATE,
        RegisterStateMachine(),
        random.Random(1),
    )
    entries = tuple(LogEntry(index, 1, EntryKind.NOOP) for index in range(1, 6))
    node.on_message(0, "n1", AppendEntries(1, 0, 0, entries, 0))
    effects = node.on_message(1, "n3", AppendEntries(2, 5, 2, (), 0))
    (reply,) = [effect.message for effect in effects if isinstance(effect, Send)]
    assert reply == AppendEntriesReply(
        2, False, rejected_index=5, conflict_index=1, conflict_term=1
    )
    effects = node.on_message(2, "n3", AppendEntries(2, 9, 2, (), 0))
    (reply,) = [effect.message for effect in effects if isinstance(effect, Send)]
    assert isinstance(reply, AppendEntriesReply)
    assert (reply.conflict_index, reply.conflict_term) == (6, 0)


def test_entries_are_persisted_before_they_are_acknowledged() -> None:
    node = RaftNode(
        "n2",
        RaftConfig(bootstrap_voters=("n1", "n2")),
        EMPTY_STATE,
        RegisterStateMachine(),
        random.Random(1),
    )
    effects = node.on_message(0, "n1", AppendEntries(1, 0, 0, (LogEntry(1, 1, EntryKind.NOOP),), 0))
    kinds = [type(effect).__name__ for effect in effects]
    assert kinds == ["Persist", "Send"]
    persist = effects[0]
    assert isinstance(persist, Persist)
    assert {write.keyspace for write in persist.writes} == {KEYSPACE}


def test_only_current_term_entries_commit_by_counting() -> None:
    """Raft §5.4.2: a new leader holding an entry of an earlier term does not commit it
    by counting replicas; the no-op of its own term commits it."""
    cluster = RaftTestCluster(3)
    old = cluster.elect()
    cluster.propose(old, 1, put_command("k", "v"))
    # The entry reaches the followers, but no acknowledgement reaches the old leader.
    cluster.deliver(drop=lambda source, destination, message: destination == old)
    entry_index = cluster.nodes[old].log.last_index
    cluster.crash(old)
    new = cluster.elect()
    node = cluster.nodes[new]
    assert node.log.term_at(entry_index) < node.current_term
    assert not node._commit_allowed(entry_index)
    cluster.advance(200)
    assert node.commit_index > entry_index
    assert node.log.entry(node.commit_index).term == node.current_term
    assert committed_values(cluster, new) == {"k": "v"}


# --- reads ----------------------------------------------------------------------------------


def test_a_read_waits_for_a_quorum_heartbeat_round() -> None:
    cluster = RaftTestCluster(3)
    leader = cluster.elect()
    cluster.propose(leader, 1, put_command("k", "v"))
    cluster.advance(100)
    cluster.read(leader, 2)
    assert 2 not in cluster.replies  # not before a quorum confirmed the leadership
    cluster.deliver()
    assert cluster.replies[2].value == cluster.nodes[leader].commit_index
    assert committed_values(cluster, leader) == {"k": "v"}


def test_a_partitioned_leader_never_answers_a_read() -> None:
    cluster = RaftTestCluster(3)
    leader = cluster.elect()
    cluster.isolate(leader)
    cluster.read(leader, 5)
    cluster.advance(2_000)
    outcome = cluster.replies[5]
    assert not outcome.ok and outcome.error is ErrorCode.MOVED


def test_a_single_voter_answers_reads_at_once() -> None:
    cluster = RaftTestCluster(1)
    leader = cluster.elect()
    cluster.read(leader, 1)
    assert cluster.replies[1].ok


# --- snapshots ------------------------------------------------------------------------------


def snapshot_config(threshold: int) -> RaftConfig:
    return RaftConfig(snapshot_threshold_entries=threshold, entries_per_message_max=4)


def test_the_log_is_compacted_and_a_lagging_follower_gets_a_snapshot() -> None:
    cluster = RaftTestCluster(3, config=snapshot_config(5))
    leader = cluster.elect()
    laggard = next(node_id for node_id in cluster.voter_ids if node_id != leader)
    cluster.isolate(laggard)
    for request_id in range(1, 21):
        cluster.propose(leader, request_id, put_command(f"k{request_id % 3}", f"v{request_id}"))
        cluster.advance(20)
    leader_log = cluster.nodes[leader].log
    assert leader_log.snapshot_index >= 15
    stored = load_persisted_state(cluster.disks[leader])
    assert stored.snapshot is not None and stored.snapshot.index == leader_log.snapshot_index
    assert stored.entries[0].index == leader_log.snapshot_index + 1  # compacted keys deleted
    cluster.heal()
    sent_before = len(cluster.sent)
    cluster.advance(1_000)
    snapshots = [m for _, d, m in cluster.sent[sent_before:] if isinstance(m, InstallSnapshot)]
    assert snapshots and all(d == laggard for d in [laggard])
    assert committed_values(cluster, laggard) == committed_values(cluster, leader)
    assert cluster.nodes[laggard].applied_index == cluster.nodes[leader].applied_index


# --- restarts -------------------------------------------------------------------------------


def test_a_restarted_node_rebuilds_term_vote_log_and_state() -> None:
    cluster = RaftTestCluster(3, config=snapshot_config(4))
    leader = cluster.elect()
    for request_id in range(1, 11):
        cluster.propose(leader, request_id, put_command("k", f"v{request_id}"))
    cluster.advance(300)
    follower = next(node_id for node_id in cluster.voter_ids if node_id != leader)
    before = cluster.nodes[follower]
    cluster.crash(follower)
    after = cluster.start(follower)
    assert (after.current_term, after.voted_for) == (before.current_term, before.voted_for)
    assert after.log.all_entries() == before.log.all_entries()
    assert after.log.snapshot == before.log.snapshot
    cluster.advance(300)
    assert committed_values(cluster, follower) == {"k": "v10"}


def test_every_node_restarting_at_once_keeps_the_committed_state() -> None:
    cluster = RaftTestCluster(3)
    leader = cluster.elect()
    cluster.propose(leader, 1, put_command("k", "durable"))
    cluster.advance(200)
    assert cluster.replies[1].ok
    for node_id in cluster.voter_ids:
        cluster.crash(node_id)
    for node_id in cluster.voter_ids:
        cluster.start(node_id)
    leader = cluster.elect()
    cluster.advance(300)
    assert committed_values(cluster, leader) == {"k": "durable"}


# --- membership -----------------------------------------------------------------------------


def change(kind: MembershipChangeKind, node_id: str) -> MembershipChange:
    return MembershipChange(kind, node_id)


def run_change(cluster: RaftTestCluster, request_id: int, membership: MembershipChange) -> None:
    leader = cluster.leader()
    cluster.carry_out(
        leader, cluster.nodes[leader].change_membership(cluster.now_ms, request_id, membership)
    )
    cluster.advance(300)


def test_a_learner_catches_up_then_is_promoted_to_voter() -> None:
    cluster = RaftTestCluster(3, learners_to_be=1)
    leader = cluster.elect()
    for request_id in range(1, 6):
        cluster.propose(leader, request_id, put_command("k", f"v{request_id}"))
    cluster.advance(100)
    run_change(cluster, 100, change(MembershipChangeKind.ADD_LEARNER, "n4"))
    assert cluster.replies[100].ok
    assert cluster.nodes["n4"].configuration.learners == {"n4"}
    assert committed_values(cluster, "n4") == {"k": "v5"}
    assert cluster.nodes["n4"].role is Role.FOLLOWER  # learners never campaign
    run_change(cluster, 101, change(MembershipChangeKind.PROMOTE_LEARNER, "n4"))
    assert cluster.replies[101].ok
    assert cluster.nodes[leader].configuration.voters == {"n1", "n2", "n3", "n4"}


def test_only_one_uncommitted_membership_change_at_a_time() -> None:
    cluster = RaftTestCluster(3, learners_to_be=2)
    leader = cluster.elect()
    node = cluster.nodes[leader]
    cluster.carry_out(
        leader,
        node.change_membership(cluster.now_ms, 1, change(MembershipChangeKind.ADD_LEARNER, "n4")),
    )
    cluster.carry_out(
        leader,
        node.change_membership(cluster.now_ms, 2, change(MembershipChangeKind.ADD_LEARNER, "n5")),
    )
    assert cluster.replies[2].error is ErrorCode.UNAVAILABLE
    assert node.configuration.learners == {"n4"}  # in effect once appended


def test_invalid_membership_changes_are_refused() -> None:
    cluster = RaftTestCluster(1)
    cluster.elect()
    run_change(cluster, 1, change(MembershipChangeKind.REMOVE, "n1"))
    assert cluster.replies[1].error is ErrorCode.INVALID_ARGUMENT  # the last voter
    run_change(cluster, 2, change(MembershipChangeKind.PROMOTE_LEARNER, "n9"))
    assert cluster.replies[2].error is ErrorCode.INVALID_ARGUMENT


def test_a_removed_leader_steps_down_after_the_change_commits() -> None:
    cluster = RaftTestCluster(3)
    leader = cluster.elect()
    run_change(cluster, 1, change(MembershipChangeKind.REMOVE, leader))
    assert cluster.replies[1].ok
    assert cluster.nodes[leader].role is Role.FOLLOWER
    cluster.advance(2_000)
    new = cluster.leader()
    assert new != leader
    assert cluster.nodes[new].configuration.voters == set(cluster.voter_ids) - {leader}
    cluster.propose(new, 2, put_command("k", "after"))
    cluster.advance(200)
    assert cluster.replies[2].ok


def test_a_removed_voter_can_be_added_back() -> None:
    cluster = RaftTestCluster(3)
    leader = cluster.elect()
    removed = next(node_id for node_id in cluster.voter_ids if node_id != leader)
    run_change(cluster, 1, change(MembershipChangeKind.REMOVE, removed))
    cluster.propose(leader, 2, put_command("k", "while-away"))
    cluster.advance(200)
    run_change(cluster, 3, change(MembershipChangeKind.ADD_LEARNER, removed))
    run_change(cluster, 4, change(MembershipChangeKind.PROMOTE_LEARNER, removed))
    assert all(cluster.replies[index].ok for index in (1, 2, 3, 4))
    assert committed_values(cluster, removed) == {"k": "while-away"}
    assert cluster.nodes[leader].configuration.voters == set(cluster.voter_ids)


# --- configuration --------------------------------------------------------------------------


def test_unsafe_tuning_is_refused_in_one_place() -> None:
    with pytest.raises(RaftConfigError):
        RaftConfig(election_timeout_ms_min=100, heartbeat_interval_ms=50)
    with pytest.raises(RaftConfigError):
        RaftConfig(election_timeout_ms_min=300, election_timeout_ms_max=300)
    assert CONFIG.pre_vote and CONFIG.check_quorum
