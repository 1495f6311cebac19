"""One member of a Raft group, as a pure state machine: inputs in, effects out.

The driver calls `on_tick`, `on_message`, `propose`, `read` and `change_membership`
with its own `now_ms`; each returns the effects to carry out in order (persist, then
send and reply). The node relies on persist-before-send: a vote reply or an
AppendEntries acknowledgement follows the `Persist` of the vote or the entries in the
same batch, so it is released only once they are durable. For the same reason the
leader counts its own unsynced entries toward a majority: nothing that reveals the
commit (a reply, a later AppendEntries) leaves before they are synced.

Implemented: elections with randomized timeouts from the given `rng`, pre-vote and
check-quorum (a follower that heard from a leader within the minimum election timeout
ignores vote requests, so a rejoining or removed node cannot disrupt the group), log
replication with the conflict-term hint, commitment of current-term entries only
(§5.4.2) with a no-op on election, snapshots with compaction and InstallSnapshot,
single-server membership changes with learners, and linearizable reads by ReadIndex.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

from quorumdb.core.controller.raft_config import RaftConfig
from quorumdb.core.controller.raft_configuration import (
    Configuration,
    MembershipChange,
    MembershipChangeError,
    MembershipChangeKind,
    changed_configuration,
)
from quorumdb.core.controller.raft_log import EntryKind, LogEntry, RaftLog, Snapshot
from quorumdb.core.controller.raft_messages import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    RaftMessage,
    RequestVote,
    RequestVoteReply,
)
from quorumdb.core.controller.raft_persistence import (
    HardState,
    PersistedState,
    commit_write,
    entry_delete,
    entry_write,
    hard_state_write,
    snapshot_write,
)
from quorumdb.core.controller.raft_progress import PendingRead, Progress
from quorumdb.core.controller.raft_state_machine import StateMachine
from quorumdb.core.effects import Effect, Persist, Reply, Send
from quorumdb.core.errors import ErrorCode
from quorumdb.core.messages import Outcome, failure
from quorumdb.storage.interface import Write


class RandomSource(Protocol):
    """What the node needs of its generator: a seeded `random.Random` fits. Passed
    in, never the module-level one, so a seed replays exactly."""

    def randint(self, a: int, b: int) -> int: ...


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


def not_leader(leader_hint: str | None) -> Outcome:
    """A definite refusal: nothing was appended. `value` is the leader hint, or None."""
    return Outcome(leader_hint, ErrorCode.MOVED, f"not the leader; leader: {leader_hint or '?'}")


def leader_hint(outcome: Outcome) -> str | None:
    """The node a refused request should go to next, when the refuser knew one."""
    if outcome.error is ErrorCode.MOVED and isinstance(outcome.value, str):
        return outcome.value
    return None


_LEADERSHIP_LOST = failure(
    ErrorCode.UNAVAILABLE, "leadership lost before the entry was applied; it may still commit"
)


class RaftNode:
    """A Raft member over any `StateMachine`; see the module docstring for the contract.

    Outcomes replied: `propose` -> the state machine's result (bytes); `read` -> the
    read index (int): the driver then reads its local state machine, which has applied
    at least that far; `change_membership` -> the index of the configuration entry.
    Refusals: `not_leader` (MOVED, definite); UNAVAILABLE (indefinite) when leadership
    was lost with the request in flight or the node is busy; INVALID_ARGUMENT for a
    membership change that does not fit the configuration.
    """

    def __init__(
        self,
        node_id: str,
        config: RaftConfig,
        persisted_state: PersistedState,
        state_machine: StateMachine,
        rng: RandomSource,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.state_machine = state_machine
        self.rng = rng
        self.current_term = persisted_state.hard_state.term
        self.voted_for = persisted_state.hard_state.voted_for
        snapshot = persisted_state.snapshot
        if snapshot is None:
            bootstrap = Configuration(
                frozenset(config.bootstrap_voters), frozenset(config.bootstrap_learners)
            )
            snapshot = Snapshot(0, 0, bootstrap, b"")
        else:
            state_machine.restore(snapshot.data)
        self.log = RaftLog(snapshot, list(persisted_state.entries))
        self.configuration, self.configuration_index = self.log.configuration_at(
            self.log.last_index
        )
        self.commit_index = snapshot.index
        self.applied_index = snapshot.index
        # Entries known committed before a restart are applied at once (no replies are
        # owed for them): the metadata is back without waiting for a leader.
        known_committed = min(persisted_state.commit_index, self.log.last_index)
        while self.applied_index < known_committed:
            self.applied_index += 1
            entry = self.log.entry(self.applied_index)
            if entry.kind is EntryKind.COMMAND:
                state_machine.apply(entry.index, entry.command)
        self.commit_index = self.applied_index
        self._persisted_commit_index = self.commit_index
        self.role = Role.FOLLOWER
        self.leader_id: str | None = None
        self._now_ms = 0
        self._effects: list[Effect] = []
        self._writes: list[Write] = []
        self._election_deadline_ms: int | None = None
        self._last_leader_contact_ms: int | None = None
        self._votes: set[str] = set()
        self._rejections: set[str] = set()
        # Leader state, reset by _become_leader.
        self._progress: dict[str, Progress] = {}
        self._heartbeat_round = 0
        self._heartbeat_deadline_ms = 0
        self._check_quorum_deadline_ms = 0
        self._pending_proposals: dict[int, int] = {}
        self._pending_reads: list[PendingRead] = []
        self._pending_membership: tuple[int, int] | None = None

    # --- inputs ---------------------------------------------------------------------------

    def on_tick(self, now_ms: int) -> list[Effect]:
        self._begin(now_ms)
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()
        return self._finish()

    def on_message(self, now_ms: int, source: str, message: RaftMessage) -> list[Effect]:
        self._begin(now_ms)
        self._step(source, message)
        return self._finish()

    def propose(self, now_ms: int, request_id: int, command: bytes) -> list[Effect]:
        """Append `command`; its result is replied once applied here (as leader)."""
        self._begin(now_ms)
        if self.role is not Role.LEADER:
            self._reply(request_id, not_leader(self.leader_id))
        elif self._pending_count() >= self.config.pending_requests_max:
            self._reply(request_id, failure(ErrorCode.UNAVAILABLE, "too many pending requests"))
        else:
            entry = self._append(EntryKind.COMMAND, command)
            self._pending_proposals[entry.index] = request_id
            self._broadcast_append()
            self._advance_commit()
        return self._finish()

    def read(self, now_ms: int, request_id: int) -> list[Effect]:
        """Linearizable read by ReadIndex (§6.4): reply once leadership is confirmed by a
        quorum after the read arrived and the state machine has applied the read index."""
        self._begin(now_ms)
        if self.role is not Role.LEADER:
            self._reply(request_id, not_leader(self.leader_id))
        elif self._pending_count() >= self.config.pending_requests_max:
            self._reply(request_id, failure(ErrorCode.UNAVAILABLE, "too many pending requests"))
        elif not self._committed_in_current_term():
            self._pending_reads.append(PendingRead(request_id, 0, 0))
        else:
            self._heartbeat_round += 1
            self._pending_reads.append(
                PendingRead(request_id, self.commit_index, self._heartbeat_round)
            )
            self._broadcast_append()
            self._check_reads()
        return self._finish()

    def change_membership(
        self, now_ms: int, request_id: int, change: MembershipChange
    ) -> list[Effect]:
        """Append a one-server configuration change; replied when it commits."""
        self._begin(now_ms)
        refusal = self._membership_refusal(change)
        if refusal is not None:
            self._reply(request_id, refusal)
            return self._finish()
        configuration = changed_configuration(self.configuration, change)
        entry = self._append(EntryKind.CONFIGURATION, configuration=configuration)
        self._pending_membership = (entry.index, request_id)
        self._broadcast_append()
        self._advance_commit()
        return self._finish()

    # --- read-only views ------------------------------------------------------------------

    def applied_everywhere(self, index: int) -> bool:
        """Leader only: has every other member that answers applied `index`? A member
        silent for an election timeout is down or cut off; it catches up when back."""
        if self.role is not Role.LEADER:
            return False
        silent_before_ms = self._now_ms - self.config.election_timeout_ms_min
        return all(
            progress.applied_index >= index
            for node_id, progress in self._progress.items()
            if node_id != self.node_id and progress.last_reply_ms >= silent_before_ms
        )

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    def progress_of(self, node_id: str) -> Progress | None:
        """The leader's view of a follower's log (None when not leader or not a member)."""
        return self._progress.get(node_id)

    # --- effects --------------------------------------------------------------------------

    def _begin(self, now_ms: int) -> None:
        assert not self._effects and not self._writes
        self._now_ms = now_ms
        if self._election_deadline_ms is None:
            self._reset_election_deadline()

    def _finish(self) -> list[Effect]:
        if self.commit_index > self._persisted_commit_index:
            self._persisted_commit_index = self.commit_index
            self._writes.append(commit_write(self.commit_index))
        self._flush_writes()
        effects, self._effects = self._effects, []
        return effects

    def _flush_writes(self) -> None:
        if self._writes:
            self._effects.append(Persist(tuple(self._writes)))
            self._writes = []

    def _send(self, destination: str, message: RaftMessage) -> None:
        self._flush_writes()  # what the message reveals must be durable first
        self._effects.append(Send(destination, message))

    def _reply(self, request_id: int, outcome: Outcome) -> None:
        self._flush_writes()
        self._effects.append(Reply(request_id, outcome))

    def _persist_hard_state(self) -> None:
        self._writes.append(hard_state_write(HardState(self.current_term, self.voted_for)))

    # --- roles ----------------------------------------------------------------------------

    def _reset_election_deadline(self) -> None:
        timeout_ms = self.rng.randint(
            self.config.election_timeout_ms_min, self.config.election_timeout_ms_max
        )
        self._election_deadline_ms = self._now_ms + timeout_ms

    def _become_follower(self, term: int, leader_id: str | None) -> None:
        was_leader = self.role is Role.LEADER
        if term > self.current_term:
            self.current_term = term
            self.voted_for = None
            self._persist_hard_state()
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        if was_leader:
            self._abandon_leadership()
        self._reset_election_deadline()

    def _become_pre_candidate(self) -> None:
        self.role = Role.PRE_CANDIDATE
        self.leader_id = None
        self._votes = {self.node_id}
        self._rejections = set()
        if self.configuration.has_quorum(self._votes):
            self._become_candidate()
            return
        request = RequestVote(
            self.current_term + 1, self.log.last_index, self.log.last_term, pre_vote=True
        )
        for peer in sorted(self.configuration.voters - {self.node_id}):
            self._send(peer, request)

    def _become_candidate(self) -> None:
        self.current_term += 1
        self.voted_for = self.node_id
        self._persist_hard_state()
        self.role = Role.CANDIDATE
        self.leader_id = None
        self._votes = {self.node_id}
        self._rejections = set()
        if self.configuration.has_quorum(self._votes):
            self._become_leader()
            return
        request = RequestVote(self.current_term, self.log.last_index, self.log.last_term)
        for peer in sorted(self.configuration.voters - {self.node_id}):
            self._send(peer, request)

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader_id = self.node_id
        self._progress = {}
        self._sync_progress()
        self._heartbeat_round = 0
        self._heartbeat_deadline_ms = self._now_ms + self.config.heartbeat_interval_ms
        self._check_quorum_deadline_ms = self._now_ms + self.config.election_timeout_ms_min
        self._pending_proposals = {}
        self._pending_reads = []
        self._pending_membership = None
        self._append(EntryKind.NOOP)
        self._broadcast_append()
        self._advance_commit()

    def _abandon_leadership(self) -> None:
        """Answer everything in flight: writes may still commit, reads did nothing."""
        for index in sorted(self._pending_proposals):
            self._reply(self._pending_proposals[index], _LEADERSHIP_LOST)
        for read in self._pending_reads:
            self._reply(read.request_id, not_leader(None))
        if self._pending_membership is not None:
            self._reply(self._pending_membership[1], _LEADERSHIP_LOST)
        self._pending_proposals = {}
        self._pending_reads = []
        self._pending_membership = None
        self._progress = {}

    def _sync_progress(self) -> None:
        """Track exactly the members other than this node (after a configuration change)."""
        peers = self.configuration.members - {self.node_id}
        for peer in sorted(peers - set(self._progress)):
            self._progress[peer] = Progress(next_index=self.log.last_index + 1)
        for peer in sorted(set(self._progress) - peers):
            del self._progress[peer]

    def _pending_count(self) -> int:
        return len(self._pending_proposals) + len(self._pending_reads)

    # --- timers ---------------------------------------------------------------------------

    def _tick_election(self) -> None:
        assert self._election_deadline_ms is not None
        if self._now_ms < self._election_deadline_ms:
            return
        self._reset_election_deadline()
        if not self._may_campaign():
            return
        if self.config.pre_vote:
            self._become_pre_candidate()
        else:
            self._become_candidate()

    def _may_campaign(self) -> bool:
        """Voters campaign; so does a voter whose removal is not yet committed (§4.2.2):
        it may hold entries the remaining voters lack and be needed to commit them. It
        then counts only the votes of its latest configuration, not its own."""
        if self.configuration.is_voter(self.node_id):
            return True
        if self.configuration_index <= self.commit_index:
            return False
        previous, _ = self.log.configuration_at(self.configuration_index - 1)
        return previous.is_voter(self.node_id)

    def _tick_leader(self) -> None:
        if self.config.check_quorum and self._now_ms >= self._check_quorum_deadline_ms:
            self._check_quorum_deadline_ms = self._now_ms + self.config.election_timeout_ms_min
            active = {self.node_id}
            for peer, progress in self._progress.items():
                if progress.recently_active:
                    active.add(peer)
                progress.recently_active = False
            if not self.configuration.has_quorum(active):
                self._become_follower(self.current_term, None)
                return
        if self._now_ms >= self._heartbeat_deadline_ms:
            self._heartbeat_deadline_ms = self._now_ms + self.config.heartbeat_interval_ms
            self._heartbeat_round += 1
            self._broadcast_append()

    def _in_leader_lease(self) -> bool:
        """True while this node believes a leader is alive (check-quorum's lease)."""
        if not self.config.check_quorum or self.leader_id is None:
            return False
        if self.role is Role.LEADER:
            return True
        contact_ms = self._last_leader_contact_ms
        return contact_ms is not None and (
            self._now_ms - contact_ms < self.config.election_timeout_ms_min
        )

    # --- messages -------------------------------------------------------------------------

    def _step(self, source: str, message: RaftMessage) -> None:
        if isinstance(message, RequestVote):
            self._on_request_vote(source, message)
            return
        if message.term > self.current_term:
            granted_pre_vote = isinstance(message, RequestVoteReply) and (
                message.pre_vote and message.granted
            )
            if not granted_pre_vote:
                from_leader = isinstance(message, AppendEntries | InstallSnapshot)
                self._become_follower(message.term, source if from_leader else None)
        elif message.term < self.current_term:
            if isinstance(message, AppendEntries | InstallSnapshot):
                # A deposed leader learns the newer term from the rejection.
                self._send(source, AppendEntriesReply(self.current_term, False))
            return
        if isinstance(message, RequestVoteReply):
            self._on_request_vote_reply(source, message)
        elif isinstance(message, AppendEntries):
            self._on_append_entries(source, message)
        elif isinstance(message, AppendEntriesReply):
            self._on_append_entries_reply(source, message)
        elif isinstance(message, InstallSnapshot):
            self._on_install_snapshot(source, message)
        else:
            self._on_install_snapshot_reply(source, message)

    def _log_up_to_date(self, request: RequestVote) -> bool:
        mine = (self.log.last_term, self.log.last_index)
        return (request.last_log_term, request.last_log_index) >= mine

    def _on_request_vote(self, source: str, request: RequestVote) -> None:
        if request.term > self.current_term and self._in_leader_lease():
            return  # a leader is alive: ignore, without adopting the term
        if request.pre_vote:
            granted = request.term > self.current_term and self._log_up_to_date(request)
            reply_term = request.term if granted else self.current_term
            self._send(source, RequestVoteReply(reply_term, granted, pre_vote=True))
            return
        if request.term > self.current_term:
            self._become_follower(request.term, None)
        if request.term < self.current_term:
            self._send(source, RequestVoteReply(self.current_term, False))
            return
        granted = self.voted_for in (None, source) and self._log_up_to_date(request)
        if granted:
            self.voted_for = source
            self._persist_hard_state()
            self._reset_election_deadline()
        self._send(source, RequestVoteReply(self.current_term, granted))

    def _on_request_vote_reply(self, source: str, reply: RequestVoteReply) -> None:
        expected_role = Role.PRE_CANDIDATE if reply.pre_vote else Role.CANDIDATE
        if self.role is not expected_role or not self.configuration.is_voter(source):
            return
        if reply.pre_vote and reply.granted and reply.term != self.current_term + 1:
            return  # a grant from an earlier round
        (self._votes if reply.granted else self._rejections).add(source)
        if self.configuration.has_quorum(self._votes):
            if reply.pre_vote:
                self._become_candidate()
            else:
                self._become_leader()
        elif self.configuration.has_quorum(self._rejections):
            self._become_follower(self.current_term, None)

    def _heard_from_leader(self, source: str) -> None:
        if self.role is not Role.FOLLOWER:
            self.role = Role.FOLLOWER  # a candidate of this term defers to its leader
        self.leader_id = source
        self._last_leader_contact_ms = self._now_ms
        self._reset_election_deadline()

    def _on_append_entries(self, source: str, request: AppendEntries) -> None:
        assert self.role is not Role.LEADER, "two leaders in one term"
        self._heard_from_leader(source)
        previous_index, previous_term = request.previous_index, request.previous_term
        entries = request.entries
        if previous_index < self.log.snapshot_index:
            # Our snapshot covers (committed) entries the leader re-sent: skip them.
            skip = self.log.snapshot_index - previous_index
            if len(entries) >= skip:
                assert entries[skip - 1].term == self.log.snapshot.term
            entries = entries[skip:]
            previous_index, previous_term = self.log.snapshot_index, self.log.snapshot.term
        if self.log.term_at(previous_index) != previous_term:
            self._reject_append(source, request, previous_index)
            return
        self._store_entries(entries)
        match_index = previous_index + len(entries)
        if request.leader_commit > self.commit_index:
            self.commit_index = max(self.commit_index, min(request.leader_commit, match_index))
            self._apply_committed()
        reply = AppendEntriesReply(
            self.current_term,
            True,
            match_index,
            heartbeat_round=request.heartbeat_round,
            applied_index=self.applied_index,
        )
        self._send(source, reply)

    def _reject_append(self, source: str, request: AppendEntries, previous_index: int) -> None:
        if previous_index > self.log.last_index:
            conflict_index, conflict_term = self.log.last_index + 1, 0
        else:
            term = self.log.term_at(previous_index)
            assert term is not None
            conflict_index = self.log.first_index_of_term_at(previous_index)
            conflict_term = term
        reply = AppendEntriesReply(
            self.current_term,
            False,
            rejected_index=previous_index,
            conflict_index=conflict_index,
            conflict_term=conflict_term,
            heartbeat_round=request.heartbeat_round,
        )
        self._send(source, reply)

    def _store_entries(self, entries: tuple[LogEntry, ...]) -> None:
        """Append what is new, first dropping a conflicting suffix (never a committed one)."""
        configuration_changed = False
        for entry in entries:
            existing_term = self.log.term_at(entry.index)
            if existing_term == entry.term:
                continue
            if existing_term is not None:
                assert entry.index > self.commit_index, "a committed entry would be overwritten"
                dropped = self.log.truncate_from(entry.index)
                self._writes.extend(entry_delete(index) for index in dropped)
                configuration_changed = True
            self.log.append(entry)
            self._writes.append(entry_write(entry))
            configuration_changed = configuration_changed or entry.configuration is not None
        if configuration_changed:
            self._reload_configuration()

    def _reload_configuration(self) -> None:
        self.configuration, self.configuration_index = self.log.configuration_at(
            self.log.last_index
        )
        if self.role is Role.LEADER:
            self._sync_progress()

    def _on_append_entries_reply(self, source: str, reply: AppendEntriesReply) -> None:
        progress = self._progress.get(source)
        if self.role is not Role.LEADER or progress is None:
            return
        progress.recently_active = True
        progress.last_reply_ms = self._now_ms
        progress.acked_round = max(progress.acked_round, reply.heartbeat_round)
        progress.applied_index = max(progress.applied_index, reply.applied_index)
        if reply.success:
            progress.match_index = max(progress.match_index, reply.match_index)
            progress.next_index = max(progress.next_index, progress.match_index + 1)
            self._advance_commit()
            if self.role is Role.LEADER and progress.next_index <= self.log.last_index:
                self._send_append(source)
        elif reply.rejected_index > progress.match_index:
            hint = reply.conflict_index
            if reply.conflict_term:
                last = self.log.last_index_of_term(reply.conflict_term)
                if last is not None:
                    hint = last + 1
            hint = min(hint, reply.rejected_index, progress.next_index)
            progress.next_index = max(progress.match_index + 1, hint)
            self._send_append(source)
        self._check_reads()

    def _on_install_snapshot(self, source: str, request: InstallSnapshot) -> None:
        assert self.role is not Role.LEADER, "two leaders in one term"
        self._heard_from_leader(source)
        snapshot = request.snapshot
        if snapshot.index > self.commit_index:
            dropped = self.log.compact(snapshot)
            self._writes.append(snapshot_write(snapshot))
            self._writes.extend(entry_delete(index) for index in dropped)
            self.state_machine.restore(snapshot.data)
            self.commit_index = snapshot.index
            self.applied_index = snapshot.index
            self._reload_configuration()
        # Either way the log matches the leader's up to our commit index.
        self._send(source, InstallSnapshotReply(self.current_term, self.commit_index))

    def _on_install_snapshot_reply(self, source: str, reply: InstallSnapshotReply) -> None:
        progress = self._progress.get(source)
        if self.role is not Role.LEADER or progress is None:
            return
        progress.recently_active = True
        progress.snapshot_retry_at_ms = 0
        progress.match_index = max(progress.match_index, reply.match_index)
        progress.next_index = max(progress.next_index, progress.match_index + 1)
        self._advance_commit()
        if self.role is Role.LEADER and progress.next_index <= self.log.last_index:
            self._send_append(source)

    # --- the leader's log -----------------------------------------------------------------

    def _append(
        self, kind: EntryKind, command: bytes = b"", configuration: Configuration | None = None
    ) -> LogEntry:
        assert self.role is Role.LEADER
        entry = LogEntry(self.log.last_index + 1, self.current_term, kind, command, configuration)
        self.log.append(entry)
        self._writes.append(entry_write(entry))
        if configuration is not None:
            self._reload_configuration()
        return entry

    def _broadcast_append(self) -> None:
        for peer in sorted(self._progress):
            self._send_append(peer)

    def _send_append(self, peer: str) -> None:
        progress = self._progress[peer]
        assert progress.next_index <= self.log.last_index + 1
        previous_index = progress.next_index - 1
        previous_term = self.log.term_at(previous_index)
        if previous_term is None:
            self._send_snapshot(peer, progress)
            return
        entries: tuple[LogEntry, ...] = ()
        if progress.next_index <= self.log.last_index:
            entries = self.log.entries(progress.next_index, self.config.entries_per_message_max)
            # Optimistic: the next message continues after these. If they are lost, the
            # follower rejects the next one and `next_index` backs off to its hint.
            progress.next_index = entries[-1].index + 1
        request = AppendEntries(
            self.current_term,
            previous_index,
            previous_term,
            entries,
            self.commit_index,
            self._heartbeat_round,
        )
        self._send(peer, request)

    def _send_snapshot(self, peer: str, progress: Progress) -> None:
        if self._now_ms < progress.snapshot_retry_at_ms:
            return  # one is in flight; a reply or the retry time sends the next
        progress.snapshot_retry_at_ms = self._now_ms + self.config.election_timeout_ms_min
        self._send(peer, InstallSnapshot(self.current_term, self.log.snapshot))

    def _commit_allowed(self, index: int) -> bool:
        """Only entries of the leader's term commit by counting replicas (§5.4.2)."""
        return self.log.term_at(index) == self.current_term

    def _advance_commit(self) -> None:
        if self.role is not Role.LEADER:
            return
        voters = self.configuration.voters
        matches = [
            progress.match_index for peer, progress in self._progress.items() if peer in voters
        ]
        if self.node_id in voters:
            matches.append(self.log.last_index)
        if len(matches) < self.configuration.quorum_size():
            return
        matches.sort(reverse=True)
        candidate = matches[self.configuration.quorum_size() - 1]
        if candidate > self.commit_index and self._commit_allowed(candidate):
            self.commit_index = candidate
            self._apply_committed()
            if self.role is Role.LEADER:
                # Tell the followers now rather than at the next heartbeat: they apply
                # (and a change is usable through every node) one round trip sooner.
                self._broadcast_append()

    def _committed_in_current_term(self) -> bool:
        return self.log.term_at(self.commit_index) == self.current_term

    # --- applying -------------------------------------------------------------------------

    def _apply_committed(self) -> None:
        while self.applied_index < self.commit_index:
            self.applied_index += 1
            self._apply_entry(self.log.entry(self.applied_index))
        if self.role is Role.LEADER:
            self._check_reads()
            removed = not self.configuration.is_voter(self.node_id)
            if removed and self.configuration_index <= self.commit_index:
                self._become_follower(self.current_term, None)  # our removal committed
        self._maybe_compact()

    def _apply_entry(self, entry: LogEntry) -> None:
        if entry.kind is EntryKind.COMMAND:
            result = self.state_machine.apply(entry.index, entry.command)
            request_id = self._pending_proposals.pop(entry.index, None)
            if request_id is not None:
                self._reply(request_id, Outcome(result))
        elif entry.kind is EntryKind.CONFIGURATION:
            pending = self._pending_membership
            if pending is not None and pending[0] == entry.index:
                self._reply(pending[1], Outcome(entry.index))
                self._pending_membership = None

    def _maybe_compact(self) -> None:
        if self.applied_index - self.log.snapshot_index < self.config.snapshot_threshold_entries:
            return
        term = self.log.term_at(self.applied_index)
        assert term is not None
        configuration, _ = self.log.configuration_at(self.applied_index)
        snapshot = Snapshot(self.applied_index, term, configuration, self.state_machine.snapshot())
        dropped = self.log.compact(snapshot)
        self._writes.append(snapshot_write(snapshot))
        self._writes.extend(entry_delete(index) for index in dropped)

    # --- reads and membership -------------------------------------------------------------

    def _check_reads(self) -> None:
        """Answer the reads that are confirmed and applied, oldest first."""
        if self.role is not Role.LEADER or not self._pending_reads:
            return
        if self._pending_reads[0].read_index == 0 and self._committed_in_current_term():
            self._heartbeat_round += 1
            self._pending_reads = [
                read
                if read.read_index
                else PendingRead(read.request_id, self.commit_index, self._heartbeat_round)
                for read in self._pending_reads
            ]
            self._broadcast_append()
        while self._pending_reads:
            read = self._pending_reads[0]
            if read.read_index == 0 or read.read_index > self.applied_index:
                break
            if not self._round_confirmed(read.heartbeat_round):
                break
            self._pending_reads.pop(0)
            self._reply(read.request_id, Outcome(read.read_index))

    def _round_confirmed(self, heartbeat_round: int) -> bool:
        acknowledged = {self.node_id}
        for peer, progress in self._progress.items():
            if progress.acked_round >= heartbeat_round:
                acknowledged.add(peer)
        return self.configuration.has_quorum(acknowledged)

    def _membership_refusal(self, change: MembershipChange) -> Outcome | None:
        if self.role is not Role.LEADER:
            return not_leader(self.leader_id)
        if not self._committed_in_current_term():
            return failure(ErrorCode.UNAVAILABLE, "no entry of this term committed yet")
        if self.configuration_index > self.commit_index or self._pending_membership:
            return failure(ErrorCode.UNAVAILABLE, "another membership change is in progress")
        try:
            changed_configuration(self.configuration, change)
        except MembershipChangeError as error:
            return failure(ErrorCode.INVALID_ARGUMENT, str(error))
        if change.kind is MembershipChangeKind.PROMOTE_LEARNER:
            progress = self._progress.get(change.node_id)
            if progress is None or progress.match_index < self.commit_index:
                return failure(ErrorCode.UNAVAILABLE, f"learner {change.node_id} is behind")
        return None
