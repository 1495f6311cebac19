"""One partition's replica in a single-leader keyspace: the leader's log shipping and
the followers' copies, fenced by epochs.

The controller gives each partition a replica set (a leader, followers, a mode) and an
epoch, raised on every failover. The leader logs each write as an entry (row-based:
the records the write produced), persists the entry with the data in one batch, and
ships entries to the followers in order; a follower persists them the same way and
acknowledges the sequence through which its log matches the leader's. A write is
answered when its mode is satisfied:

- `all`: every follower has it; `majority`: a majority of the replica set (the leader
  included); `semi`: one synchronous follower, the first one the failure detector does
  not call down (so another takes the role when it fails); `async`: only the leader.

Log matching works as in Raft: an entry is named by (epoch, sequence), a follower
accepts entries only after one it holds with the same name, and a mismatch makes the
leader back up a whole epoch at a time. Entries are applied on arrival, so a replica
that learns its tail was never on the new leader undoes it with the before-images it
kept, newest first, and files the undone writes in lost+found. A follower that installs
a snapshot instead files the entries of its log that the leader's log does not hold,
judged by the epoch starts the leader sends (`epoch_history.py`).

Fencing: a replica promises never to accept entries of an older epoch than the newest
it has seen (in a message or a failover's position query), and persists the promise
before answering. A leader that hears of a newer epoch stops acknowledging at once.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from quorumdb.core.effects import Effect, Persist, Send
from quorumdb.core.replication.epoch_history import extended, in_leader_log
from quorumdb.core.replication.log_format import (
    Change,
    Entry,
    LocalEntry,
    Position,
    ReplicaState,
    load_log,
    record_delete,
    record_write,
    state_write,
)
from quorumdb.core.replication.lost_found import LostWrite
from quorumdb.core.replication.messages import (
    PositionQuery,
    PositionReply,
    ReplicaSnapshot,
    ReplicaSnapshotAck,
    Replicate,
    ReplicateReply,
)
from quorumdb.core.replication.quorums import answers_needed
from quorumdb.core.replication.statement import StatementError
from quorumdb.storage.interface import StorageReader, Write

MODES = ("all", "majority", "semi", "async")


@dataclass(frozen=True, slots=True)
class ReplicaSet:
    """`learner`, during a move: the member catching up to replace `removing`. It gets
    the log but neither votes in a failover nor counts alone: until the move completes,
    a write needs its mode satisfied by the current followers *and* by the followers
    the set will have after the move (a joint configuration), so neither loses it."""

    epoch: int
    leader: str
    followers: tuple[str, ...]
    mode: str
    learner: str | None = None
    removing: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"replication mode must be one of {', '.join(MODES)}")
        if self.leader in self.followers or len(set(self.followers)) != len(self.followers):
            raise ValueError("a replica set names each node once")
        if (self.learner is None) != (self.removing is None):
            raise ValueError("a move names both the learner and the follower it replaces")
        if self.learner is not None and (
            self.learner in (self.leader, *self.followers) or self.removing not in self.followers
        ):
            raise ValueError("a learner is new to the set and replaces one of its followers")

    def after_move(self) -> tuple[str, ...]:
        """The followers once the move completes (the current ones when none is on)."""
        if self.learner is None:
            return self.followers
        return (*(n for n in self.followers if n != self.removing), self.learner)


@dataclass(frozen=True, slots=True)
class ReplicationLimits:
    heartbeat_interval_ms: int = 100
    retransmit_after_ms: int = 300  # no progress for this long: resend from the match
    entries_per_message_max: int = 256
    write_timeout_ms: int = 5_000  # a write not replicated as its mode asks by then fails
    trim_batch_entries: int = 256  # drop the common prefix of the log in batches this big
    # The log keeps at most this many entries for a follower that is away; one further
    # behind catches up from a snapshot of the data instead.
    log_entries_max: int = 100_000
    snapshot_chunk_keys: int = 256
    pipeline_messages: int = 2  # unanswered messages of entries to one follower at a time
    # A follower that heard from the leader promises no successor anything for this long
    # (by its own clock); the leader serves linearizable reads while enough such grants
    # hold. It must be shorter than failure detection, or failovers wait for it.
    lease_ms: int = 1_000
    # The assumed bound on how far two nodes' clock rates differ (0.01: one clock may
    # run 1 % faster): the leader counts its lease that much shorter. Beyond the bound a
    # deposed leader may serve a stale read for up to the excess (docs/replication.md).
    max_clock_drift: float = 0.01
    # A follower that has not heard from its leader for this long suspects it and tells
    # the controller; two such sources (or the failure detector) start a failover.
    leader_timeout_ms: int = 1_000


# --- the replica ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteResult:
    """How a write ended: `error` None when its mode was satisfied."""

    position: Position
    follower_acks: int  # followers holding the write when it was answered
    error: str | None = None


Complete = Callable[[WriteResult], list[Effect]]
# Runs a logged statement on this replica: (now, statement, read a key's stored record
# as of this batch) -> the changes it makes here.
StatementRunner = Callable[[int, bytes, Callable[[bytes], bytes | None]], tuple[Change, ...]]


@dataclass(slots=True)
class _Waiter:
    sequence: int
    deadline_ms: int
    complete: Complete
    mode: str | None = None  # a write's own mode, overriding the keyspace's


@dataclass(slots=True)
class _Follower:
    next: int  # the next sequence to send
    match: int = 0  # the highest sequence known to match and be durable there
    sent_ms: int | None = None
    progress_ms: int = 0  # when `match` last grew (or the leader started)
    grant_end_ms: int = -1  # until when (leader's clock) it promises no successor anything
    caught_up_ms: int = 0  # when it last held everything this leader had logged
    retransmitted_ms: int = 0  # when it was last sent back to its match for lack of progress
    in_flight: int = 0  # messages of entries sent and not yet answered
    snapshot: _SnapshotSend | None = None  # copying the data to it: it is past the log
    rows_through: int = 0  # ship statements up to here as rows (applied over a snapshot)


@dataclass(slots=True)
class _SnapshotSend:
    """A snapshot in flight to one follower: stop-and-wait, a chunk per round trip."""

    snapshot_id: int
    base: Position  # the leader's last entry when the copy began: replication resumes after
    epoch_starts: tuple[Position, ...]  # of the leader's log through `base`
    cursor: bytes = b""  # the first key of the chunk being sent
    chunk: int = 0
    next_cursor: bytes | None = b""  # where the next chunk starts (None: this is the last)
    sent_ms: int | None = None


@dataclass(slots=True)
class _SnapshotReceive:
    snapshot_id: int
    expected: int = 0  # the next chunk to apply


@dataclass(slots=True)
class _Batch:
    """The writes one message produces, applied in order; `overlay` is what they make
    the data look like, so before-images of later changes see earlier ones."""

    writes: list[Write] = field(default_factory=list)
    overlay: dict[bytes, bytes | None] = field(default_factory=dict)
    logged: list[LocalEntry] = field(default_factory=list)  # applied, for one log record


class PartitionReplica:
    def __init__(
        self,
        node_id: str,
        keyspace: str,
        partition: int,
        storage: StorageReader,
        limits: ReplicationLimits | None = None,
        run_statement: StatementRunner | None = None,
    ) -> None:
        self.node_id = node_id
        self.run_statement = run_statement
        self.keyspace = keyspace
        self.partition = partition
        self.storage = storage
        self.limits = limits or ReplicationLimits()
        persisted = load_log(storage, keyspace, partition)
        self.promised_epoch = persisted.state.promised_epoch
        self.base = persisted.state.base
        # Where each epoch begins, at or below the base (later ones: see the entries).
        # A state from before they were kept knows the base's epoch alone.
        legacy_starts = (self.base,) if self.base.sequence else ()
        self.epoch_starts = persisted.state.epoch_starts or legacy_starts
        self.entries: list[LocalEntry] = list(persisted.entries)
        self._records: list[int] = list(persisted.records)  # first sequence of each record
        self.replica_set: ReplicaSet | None = None
        self.unavailable: frozenset[str] = frozenset()  # followers the detector calls down
        self.lost_count = 0  # writes this replica has undone into lost+found
        self._followers: dict[str, _Follower] = {}
        self._waiters: deque[_Waiter] = deque()
        self._read_waiters: deque[_Waiter] = deque()
        self._override_waiters: list[_Waiter] = []  # writes with their own mode, any order
        # A follower's view: when (its clock) it last held all the leader had logged,
        # and when it last heard from the leader of its epoch.
        self.caught_up_ms: int | None = None
        self._heard_ms: int | None = None
        # Until when this replica must not promise a successor (its own clock). Unknown
        # after a start: it may have granted a lease just before, so it waits a full one.
        self._granted_until_ms: int | None = None
        self._held_queries: dict[str, PositionQuery] = {}  # asker -> its newest query
        self._receiving: _SnapshotReceive | None = None
        self._next_snapshot_id = 1
        self.snapshots_sent = 0

    # --- what the node asks ---------------------------------------------------------------

    @property
    def last(self) -> Position:
        return self.entries[-1].entry.position if self.entries else self.base

    @property
    def last_sequence(self) -> int:
        """`last.sequence` without building a Position: asked several times per write."""
        return self.entries[-1].entry.sequence if self.entries else self.base.sequence

    @property
    def is_leader(self) -> bool:
        """Leading the current epoch: no replica has promised a newer one to anyone."""
        replica_set = self.replica_set
        return (
            replica_set is not None
            and replica_set.leader == self.node_id
            and replica_set.epoch == self.promised_epoch
        )

    def epoch_at(self, sequence: int) -> int | None:
        if sequence == self.base.sequence:
            return self.base.epoch
        index = sequence - self.base.sequence - 1
        if 0 <= index < len(self.entries):
            return self.entries[index].entry.epoch
        return None

    def _epoch_history(self) -> tuple[Position, ...]:
        """Where each epoch of this log begins, through its last entry."""
        return extended(self.epoch_starts, (local.entry for local in self.entries))

    def follower_matches(self) -> dict[str, int]:
        return {node_id: follower.match for node_id, follower in self._followers.items()}

    def follower_lag_ms(self, now_ms: int) -> dict[str, int]:
        """How long since each follower last held everything logged here (0: it does)."""
        last = self.last_sequence
        return {
            node_id: 0 if f.match >= last else max(0, now_ms - f.caught_up_ms)
            for node_id, f in self._followers.items()
        }

    def staleness_ms(self, now_ms: int) -> int | None:
        """A follower's bound on how far behind the leader it is, by its own clock: the
        time since it last held everything the leader had (None: never, since it started)."""
        if self.caught_up_ms is None:
            return None
        return now_ms - self.caught_up_ms

    def sync_follower(self) -> str | None:
        """In `semi` mode, the follower whose acknowledgement a write waits for."""
        replica_set = self.replica_set
        if replica_set is None or not replica_set.followers:
            return None
        for node_id in replica_set.followers:
            if node_id not in self.unavailable:
                return node_id
        return replica_set.followers[0]

    # --- configuration --------------------------------------------------------------------

    def configure(self, now_ms: int, replica_set: ReplicaSet) -> list[Effect]:
        """Adopt the replica set the metadata gives this partition."""
        if replica_set == self.replica_set:
            return []
        was_leading = self.is_leader
        old = self.replica_set
        self.replica_set = replica_set
        effects: list[Effect] = []
        if replica_set.leader == self.node_id and replica_set.epoch >= self.promised_epoch:
            if replica_set.epoch > self.promised_epoch:
                self.promised_epoch = replica_set.epoch
                effects.append(Persist((self._state_write(),)))
            same_epoch = was_leading and old is not None and old.epoch == replica_set.epoch
            kept = self._followers if same_epoch else {}
            receivers = replica_set.followers + (
                (replica_set.learner,) if replica_set.learner is not None else ()
            )
            self._followers = {
                node_id: kept.get(node_id)
                or _Follower(self.last_sequence + 1, progress_ms=now_ms, caught_up_ms=now_ms)
                for node_id in receivers
            }
            effects += self._release(now_ms)  # fewer followers may satisfy waiting writes
        else:
            if old is None or (old.epoch, old.leader) != (replica_set.epoch, replica_set.leader):
                self._heard_ms = now_ms  # a new leader: give it a timeout to speak
            self._followers = {}
            effects += self._fail_waiters("this replica no longer leads the partition")
            if replica_set.epoch > self.promised_epoch:  # committed metadata: a promise too
                self.promised_epoch = replica_set.epoch
                effects.append(Persist((self._state_write(),)))
        return effects

    # --- the leader -----------------------------------------------------------------------

    def append(
        self,
        now_ms: int,
        writes: Sequence[Write],
        complete: Complete,
        mode: str | None = None,
        statement: bytes | None = None,
    ) -> list[Effect]:
        """Log a write's changes (and, statement-based, the statement the followers will
        run instead) and start replicating them; `complete` runs when the mode (the
        keyspace's, or `mode`) is satisfied, or the write fails. The caller checked
        `is_leader`."""
        assert self.is_leader and self.replica_set is not None
        for write in writes:
            assert (write.keyspace, write.partition) == (self.keyspace, self.partition)
        entry = Entry(
            self.promised_epoch,
            self.last_sequence + 1,
            tuple(Change(write.key, write.value) for write in writes),
            statement,
        )
        batch = _Batch()
        self._apply(entry, batch)
        self._log(batch)
        effects: list[Effect] = [Persist(tuple(batch.writes))]
        deadline_ms = now_ms + self.limits.write_timeout_ms
        if mode is None or mode == self._mode():
            self._waiters.append(_Waiter(entry.sequence, deadline_ms, complete))
        else:
            self._override_waiters.append(_Waiter(entry.sequence, deadline_ms, complete, mode))
        for node_id, follower in self._followers.items():
            # At most `pipeline_messages` unanswered messages of entries per follower:
            # under load, entries wait for an answer and leave together, one message, one
            # persist and one acknowledgement for many writes.
            if (
                follower.next == entry.sequence
                and follower.in_flight < self.limits.pipeline_messages
                and node_id not in self.unavailable
            ):
                effects.append(self._send(now_ms, node_id, follower))
        replica_set = self.replica_set
        if (mode or replica_set.mode) == "async" or not replica_set.after_move():
            # Only then can a write be done before any follower answers: spare the
            # quorum count on every append of a busy partition.
            effects += self._release(now_ms)
        return effects

    def when_replicated(self, now_ms: int, complete: Complete) -> list[Effect]:
        """Run `complete` (a linearizable read) once everything logged so far is
        replicated as the mode asks, so the read never shows a write a failover could
        undo, and while the lease holds, so no successor can have taken any write yet."""
        assert self.is_leader
        effects: list[Effect] = []
        if self.entries and self.entries[-1].entry.epoch != self.promised_epoch:
            # Raft's "Figure 8": entries of an older epoch held by a majority may still be
            # undone, by a later leader holding an entry of an epoch in between. They are
            # safe only behind an entry of this epoch held as the mode asks; a leader
            # that has none yet logs an empty one, and the read waits for it. (What the
            # log trimmed, every replica held: nothing there can be undone.)
            effects += self.append(now_ms, (), _nothing_to_answer)
        sequence = self.last_sequence
        if self._readable(now_ms, sequence):
            return effects + complete(self._result(sequence, None))
        deadline_ms = now_ms + self.limits.write_timeout_ms
        self._read_waiters.append(_Waiter(sequence, deadline_ms, complete))
        return effects

    def lease_end_ms(self) -> int | None:
        """Until when (this clock) no successor can be elected; None: no followers."""
        voting = self._voting()
        if not voting:
            return None
        needed = answers_needed(self._mode(), 1 + len(voting))
        ends = sorted(follower.grant_end_ms for follower in voting)
        return ends[needed - 1]  # a successor needs `needed` expired grants

    def _voting(self) -> list[_Follower]:
        """The followers a failover asks (a learner is not one of them)."""
        replica_set = self.replica_set
        if replica_set is None:
            return []
        return [self._followers[n] for n in replica_set.followers if n in self._followers]

    def learner_caught_up(self) -> bool:
        """A move can complete: the learner holds everything logged here."""
        replica_set = self.replica_set
        if not self.is_leader or replica_set is None or replica_set.learner is None:
            return False
        learner = self._followers.get(replica_set.learner)
        return (
            learner is not None
            and learner.snapshot is None
            and (learner.match >= self.last_sequence)
        )

    def _readable(self, now_ms: int, sequence: int) -> bool:
        if not self.is_leader or not self._satisfied(sequence):
            return False
        lease_end_ms = self.lease_end_ms()
        return lease_end_ms is None or now_ms < lease_end_ms

    def on_reply(self, now_ms: int, source: str, reply: ReplicateReply) -> list[Effect]:
        if reply.epoch > self.promised_epoch:
            return self._promise(reply.epoch)
        follower = self._followers.get(source)
        if not self.is_leader or follower is None or reply.epoch != self.promised_epoch:
            return []
        follower.in_flight = max(0, follower.in_flight - 1)
        if reply.echo_ms:
            limits = self.limits
            lease_ms = int(limits.lease_ms * (1.0 - limits.max_clock_drift))
            follower.grant_end_ms = max(follower.grant_end_ms, reply.echo_ms + lease_ms)
        if reply.success:
            if reply.match > follower.match:
                follower.match = min(reply.match, self.last_sequence)
                follower.progress_ms = now_ms
            if follower.match >= self.last_sequence:
                follower.caught_up_ms = now_ms
            follower.next = max(follower.next, follower.match + 1)
            effects = self._release(now_ms)
            if follower.next <= self.last_sequence:  # more to send: keep the stream going
                effects.append(self._send(now_ms, source, follower))
            return effects
        follower.next = self._resume_point(reply)
        return [self._send(now_ms, source, follower)]

    def on_tick(self, now_ms: int) -> list[Effect]:
        effects: list[Effect] = self._answer_held_queries(now_ms)
        if not self.is_leader:
            return effects
        limits = self.limits
        for node_id, follower in self._followers.items():
            behind = follower.match < self.last_sequence
            since_progress_ms = now_ms - max(follower.progress_ms, follower.retransmitted_ms)
            if behind and since_progress_ms >= limits.retransmit_after_ms:
                # No progress for a while, however much was sent since: something was
                # lost; go back to what it is known to hold.
                follower.retransmitted_ms = now_ms
                follower.in_flight = 0  # what was lost will never be answered
                # Known to hold something: resend from there. Never heard from: probe
                # from the end, and let its answer say where the logs part (jumping to
                # the start would mean a needless snapshot of everything).
                follower.next = follower.match + 1 if follower.match else self.last_sequence + 1
                effects.append(self._send(now_ms, node_id, follower))
            elif follower.sent_ms is None or (
                now_ms - follower.sent_ms >= limits.heartbeat_interval_ms
            ):
                effects.append(self._send(now_ms, node_id, follower))
        effects += self._release(now_ms)
        while self._waiters and self._waiters[0].deadline_ms <= now_ms:
            waiter = self._waiters.popleft()
            message = f"not replicated as the {self._mode()} mode asks within the write timeout"
            effects += waiter.complete(self._result(waiter.sequence, message))
        while self._read_waiters and self._read_waiters[0].deadline_ms <= now_ms:
            waiter = self._read_waiters.popleft()
            message = "the leader could not confirm its lease in time; retry"
            effects += waiter.complete(self._result(waiter.sequence, message))
        expired = [waiter for waiter in self._override_waiters if waiter.deadline_ms <= now_ms]
        for waiter in expired:
            self._override_waiters.remove(waiter)
            message = f"not replicated as the {waiter.mode} mode asks within the write timeout"
            effects += waiter.complete(self._result(waiter.sequence, message))
        effects += self._trim()
        return effects

    def _mode(self) -> str:
        return self.replica_set.mode if self.replica_set is not None else "async"

    def _satisfied(self, sequence: int, mode: str | None = None) -> bool:
        mode = mode or self._mode()
        replica_set = self.replica_set
        if mode == "async" or replica_set is None:
            return True
        followers = self._followers

        def holding(nodes: tuple[str, ...]) -> list[str]:
            return [n for n in nodes if n in followers and followers[n].match >= sequence]

        current = replica_set.followers
        if not _quorum(mode, current, holding(current), self.sync_follower()):
            return False
        after = replica_set.after_move()
        return after == current or _quorum(mode, after, holding(after), None)

    def _release(self, now_ms: int) -> list[Effect]:
        effects: list[Effect] = []
        waiters = self._waiters
        if waiters and self.is_leader and self._satisfied(waiters[-1].sequence):
            # The newest is satisfied, so is every older one: one quorum count for all
            # the writes an acknowledgement covers (tens of them under load).
            while waiters:
                waiter = waiters.popleft()
                effects += waiter.complete(self._result(waiter.sequence, None))
        while waiters and self.is_leader and self._satisfied(waiters[0].sequence):
            waiter = waiters.popleft()
            effects += waiter.complete(self._result(waiter.sequence, None))
        while self._read_waiters and self._readable(now_ms, self._read_waiters[0].sequence):
            waiter = self._read_waiters.popleft()
            effects += waiter.complete(self._result(waiter.sequence, None))
        if self._override_waiters and self.is_leader:
            waiting: list[_Waiter] = []
            for waiter in self._override_waiters:
                if self._satisfied(waiter.sequence, waiter.mode):
                    effects += waiter.complete(self._result(waiter.sequence, None))
                else:
                    waiting.append(waiter)
            self._override_waiters = waiting
        return effects

    def _result(self, sequence: int, error: str | None) -> WriteResult:
        acks = sum(1 for follower in self._voting() if follower.match >= sequence)
        # An empty log answers at the origin, (0, 0), as a follower's read does: not at the
        # promised epoch, which would rank it above entries of older epochs a later leader
        # may still hold (an unacknowledged write, say).
        epoch = self.epoch_at(sequence)
        if epoch is None:  # trimmed away meanwhile
            epoch = self.promised_epoch
        return WriteResult(Position(epoch, sequence), acks, error)

    def _fail_waiters(self, message: str) -> list[Effect]:
        effects: list[Effect] = []
        for waiters in (self._waiters, self._read_waiters):
            while waiters:
                waiter = waiters.popleft()
                effects += waiter.complete(self._result(waiter.sequence, message))
        overrides, self._override_waiters = self._override_waiters, []
        for waiter in overrides:
            effects += waiter.complete(self._result(waiter.sequence, message))
        return effects

    def _resume_point(self, reply: ReplicateReply) -> int:
        """Where to resume after a mismatch: skip the follower's whole conflicting epoch
        unless this log has entries of it too (then resume after its last one here)."""
        resume = reply.conflict_first
        if reply.conflict_epoch:
            ours = [local.entry.sequence for local in self.entries]
            ours = [s for s in ours if self.epoch_at(s) == reply.conflict_epoch]
            if ours:
                resume = ours[-1] + 1
        # At or below the base, the entries are gone: `_send` switches to a snapshot.
        return max(1, min(resume, self.last_sequence + 1))

    def _send(self, now_ms: int, node_id: str, follower: _Follower) -> Send:
        if follower.snapshot is not None or follower.next <= self.base.sequence:
            return self._send_snapshot(now_ms, node_id, follower)
        start = max(follower.next, self.base.sequence + 1)
        first = start - self.base.sequence - 1
        chosen = self.entries[first : first + self.limits.entries_per_message_max]
        prev_epoch = self.epoch_at(start - 1)
        assert prev_epoch is not None
        message = Replicate(
            self.keyspace,
            self.partition,
            self.promised_epoch,
            Position(prev_epoch, start - 1),
            tuple(_shipped(local.entry, follower.rows_through) for local in chosen),
            self.last,
            self.base.sequence,
            now_ms,
        )
        follower.next = start + len(chosen)
        follower.sent_ms = now_ms
        if chosen:
            follower.in_flight += 1
        return Send(node_id, message)

    def _send_snapshot(self, now_ms: int, node_id: str, follower: _Follower) -> Send:
        """The current chunk of a snapshot to `node_id` (a new one if none is running)."""
        snapshot = follower.snapshot
        if snapshot is None:
            snapshot = follower.snapshot = _SnapshotSend(
                self._next_snapshot_id, self.last, self._epoch_history()
            )
            self._next_snapshot_id += 1
            self.snapshots_sent += 1
        limit = self.limits.snapshot_chunk_keys
        rows = self.storage.scan(self.keyspace, self.partition, snapshot.cursor, None, limit + 1)
        snapshot.next_cursor = rows[limit][0] if len(rows) > limit else None
        done = snapshot.next_cursor is None
        message = ReplicaSnapshot(
            self.keyspace,
            self.partition,
            self.promised_epoch,
            snapshot.snapshot_id,
            snapshot.chunk,
            tuple(rows[:limit]),
            done,
            snapshot.base,
            snapshot.epoch_starts,
        )
        snapshot.sent_ms = now_ms
        follower.sent_ms = now_ms
        return Send(node_id, message)

    def on_snapshot_ack(self, now_ms: int, source: str, ack: ReplicaSnapshotAck) -> list[Effect]:
        if ack.epoch > self.promised_epoch:
            return self._promise(ack.epoch)
        follower = self._followers.get(source)
        snapshot = follower.snapshot if follower is not None else None
        if (
            not self.is_leader
            or follower is None
            or snapshot is None
            or ack.snapshot_id != snapshot.snapshot_id
            or ack.chunk != snapshot.chunk
        ):
            return []
        follower.progress_ms = now_ms
        if snapshot.next_cursor is None:  # the last chunk is durable there
            follower.snapshot = None
            follower.match = snapshot.base.sequence
            follower.next = follower.match + 1
            # Entries since the copy began may or may not be in it (it was read while
            # they were written): replay them all as rows, which land on the same
            # values however often they are applied.
            follower.rows_through = self.last_sequence
            return self._release(now_ms) + [self._send(now_ms, source, follower)]
        snapshot.chunk += 1
        snapshot.cursor = snapshot.next_cursor
        return [self._send(now_ms, source, follower)]

    def _trim(self) -> list[Effect]:
        """Drop the prefix every replica holds, a batch at a time; past `log_entries_max`
        also what a far-behind follower still lacks (it will get a snapshot)."""
        if not self._followers:
            through = self.last_sequence
        else:
            through = min(follower.match for follower in self._followers.values())
            capped = self.last_sequence - self.limits.log_entries_max
            through = max(through, capped)
        if through - self.base.sequence < self.limits.trim_batch_entries:
            return []
        return [Persist(tuple(self._drop_through(through)))]

    def _drop_through(self, sequence: int) -> list[Write]:
        """Move the base to `sequence`, deleting the records wholly at or below it (one
        that straddles it stays: loading skips its entries the base has passed)."""
        count = sequence - self.base.sequence
        dropped, self.entries = self.entries[:count], self.entries[count:]
        self.base = dropped[-1].entry.position
        # The dropped entries' epochs stay known: a snapshot's receiver needs them.
        self.epoch_starts = extended(self.epoch_starts, (local.entry for local in dropped))
        records = self._records
        if not self.entries:
            whole = len(records)
        else:  # record i ends where record i + 1 begins
            whole = max(0, bisect.bisect_right(records, sequence + 1) - 1)
        writes = [record_delete(self.keyspace, self.partition, first) for first in records[:whole]]
        del records[:whole]
        writes.append(self._state_write())
        return writes

    # --- followers -------------------------------------------------------------------------

    def on_replicate(self, now_ms: int, source: str, message: Replicate) -> list[Effect]:
        if message.epoch < self.promised_epoch:
            return [Send(source, self._reply(False, 0))]
        effects = self._heard_from_leader(now_ms, message.epoch)
        batch = _Batch()
        echo = message.sent_ms
        prev = message.prev
        if prev.sequence > self.last_sequence:
            reply = self._reply(False, 0, 0, self.last_sequence + 1, echo)
            return effects + [Send(source, reply)]
        held = self.epoch_at(prev.sequence)
        if prev.sequence >= self.base.sequence and held != prev.epoch:
            assert held is not None
            first = prev.sequence
            while first - 1 > self.base.sequence and self.epoch_at(first - 1) == held:
                first -= 1
            return effects + [Send(source, self._reply(False, 0, held, first, echo))]
        for entry in message.entries:
            if entry.sequence <= self.base.sequence:
                continue
            held = self.epoch_at(entry.sequence)
            if held == entry.epoch:
                continue
            if held is not None:
                self._undo_from(entry.sequence, batch)
            if entry.statement is not None:
                entry = entry._replace(changes=self._run(now_ms, entry.statement, batch))
            self._apply(entry, batch)
        # A tail beyond the leader's last entry from an older epoch was never the
        # leader's: undo it (entries of this epoch there are the leader's, pipelined).
        beyond = max(message.leader_last.sequence, self.base.sequence) + 1
        if self.last_sequence >= beyond and (self.epoch_at(beyond) or 0) < message.epoch:
            self._undo_from(beyond, batch)
        self._log(batch)
        match = max(prev.sequence + len(message.entries), self.base.sequence)
        if match >= message.leader_last.sequence:
            self.caught_up_ms = now_ms  # everything the leader had when it sent this
        if self.base.sequence < message.trim_through <= match:
            batch.writes += self._drop_through(message.trim_through)
        if batch.writes:
            effects.append(Persist(tuple(batch.writes)))
        effects.append(Send(source, self._reply(True, match, echo_ms=echo)))
        return effects

    def on_snapshot(self, now_ms: int, source: str, message: ReplicaSnapshot) -> list[Effect]:
        """A chunk of the leader's data: the first clears this copy and its log, the
        last sets where the log starts. Each is acknowledged once durable."""
        if message.epoch < self.promised_epoch:
            return [Send(source, self._reply(False, 0))]
        effects = self._heard_from_leader(now_ms, message.epoch)
        receiving = self._receiving
        if message.chunk == 0 and (
            receiving is None or receiving.snapshot_id != message.snapshot_id
        ):
            receiving = self._receiving = _SnapshotReceive(message.snapshot_id)
            # Filed in the batch that clears the log, before the acknowledgement: a
            # crash leaves the entries and no filing, or the filing and no entries.
            effects.append(Persist(tuple(self._file_divergent(message) + self._clear())))
        ack = ReplicaSnapshotAck(
            self.keyspace, self.partition, self.promised_epoch, message.snapshot_id, message.chunk
        )
        if receiving is None or receiving.snapshot_id != message.snapshot_id:
            return effects  # a chunk of a snapshot this replica never began: ignore
        if message.chunk < receiving.expected:
            return effects + [Send(source, ack)]  # a repeat: acknowledge again
        if message.chunk > receiving.expected:
            return effects  # ahead of a lost chunk: the leader resends that one
        writes = [Write(self.keyspace, self.partition, k, record) for k, record in message.items]
        receiving.expected += 1
        if message.done:
            self._receiving = None
            self.base = message.base
            self.epoch_starts = message.epoch_starts
            self.caught_up_ms = now_ms
            writes.append(self._state_write())
        effects.append(Persist(tuple(writes)))
        effects.append(Send(source, ack))
        return effects

    def _file_divergent(self, snapshot: ReplicaSnapshot) -> list[Write]:
        """Lost+found records of the entries of this log that the leader's log does not
        hold: a snapshot is about to replace them, and the ones the leader holds reach
        this copy again through it. An entry that cannot be shown to be held is filed."""
        writes: list[Write] = []
        for local in self.entries:
            entry = local.entry
            held = in_leader_log(
                entry.position, snapshot.epoch_starts, snapshot.base, snapshot.epoch
            )
            if not held:
                for index in range(len(entry.changes)):
                    writes += self._file(entry, index)
        return writes

    def _clear(self) -> list[Write]:
        """Every record and log entry of this copy, deleted: a snapshot replaces them."""
        writes: list[Write] = []
        start = b""
        while True:
            rows = self.storage.scan(self.keyspace, self.partition, start, None, 1024)
            writes += [Write(self.keyspace, self.partition, key, None) for key, _ in rows]
            if len(rows) < 1024:
                break
            start = rows[-1][0] + b"\x00"
        writes += [record_delete(self.keyspace, self.partition, first) for first in self._records]
        self.entries = []
        self._records = []
        return writes

    def on_position_query(self, now_ms: int, source: str, query: PositionQuery) -> list[Effect]:
        """Promise the coming epoch (so the old leader gets no more acknowledgements
        here), then say how far this log goes; the promise is durable first. While a
        lease granted to the current leader runs, the answer waits (see `on_tick`)."""
        if query.epoch > self.promised_epoch:
            if self._granted_until_ms is None:
                self._granted_until_ms = now_ms + self.limits.lease_ms
            if now_ms < self._granted_until_ms:
                self._held_queries[source] = query
                return []
        effects = self._promise(query.epoch) if query.epoch > self.promised_epoch else []
        reply = PositionReply(self.keyspace, self.partition, self.promised_epoch, self.last)
        return effects + [Send(source, reply)]

    def leader_silent(self, now_ms: int) -> bool:
        """A follower that has not heard from its leader for the leader timeout (counted
        from its first tick if it never has)."""
        replica_set = self.replica_set
        if replica_set is None or replica_set.leader == self.node_id:
            return False
        if self._heard_ms is None:
            self._heard_ms = now_ms
        return now_ms - self._heard_ms >= self.limits.leader_timeout_ms

    def _heard_from_leader(self, now_ms: int, epoch: int) -> list[Effect]:
        """A message from the leader of `epoch` (not older than our promise): adopt a
        newer epoch, and, the leader being alive, promise no successor anything for a
        lease."""
        effects = self._promise(epoch) if epoch > self.promised_epoch else []
        self._heard_ms = now_ms
        granted = now_ms + self.limits.lease_ms
        self._granted_until_ms = max(self._granted_until_ms or granted, granted)
        return effects

    def _answer_held_queries(self, now_ms: int) -> list[Effect]:
        if self._granted_until_ms is None:
            self._granted_until_ms = now_ms + self.limits.lease_ms  # just started
        if not self._held_queries or now_ms < self._granted_until_ms:
            return []
        held, self._held_queries = self._held_queries, {}
        effects: list[Effect] = []
        for source, query in held.items():
            effects += self.on_position_query(now_ms, source, query)
        return effects

    def _promise(self, epoch: int) -> list[Effect]:
        self.promised_epoch = epoch
        effects: list[Effect] = [Persist((self._state_write(),))]
        return effects + self._fail_waiters("a newer leader took over; the write may be lost")

    def _reply(
        self,
        success: bool,
        match: int,
        conflict_epoch: int = 0,
        conflict_first: int = 0,
        echo_ms: int = 0,
    ) -> ReplicateReply:
        return ReplicateReply(
            self.keyspace,
            self.partition,
            self.promised_epoch,
            success,
            match,
            conflict_epoch,
            conflict_first,
            echo_ms,
        )

    # --- applying and undoing ---------------------------------------------------------------

    def _apply(self, entry: Entry, batch: _Batch) -> None:
        before: list[bytes | None] = []
        for change in entry.changes:
            before.append(self._current(change.key, batch))
            batch.overlay[change.key] = change.record
            batch.writes.append(Write(self.keyspace, self.partition, change.key, change.record))
        local = LocalEntry(entry, tuple(before))
        self.entries.append(local)
        batch.logged.append(local)

    def _log(self, batch: _Batch) -> None:
        """The entries applied in `batch`, as one log record."""
        if batch.logged:
            batch.writes.append(record_write(self.keyspace, self.partition, batch.logged))
            self._records.append(batch.logged[0].entry.sequence)
            batch.logged = []

    def _unlog_from(self, sequence: int, batch: _Batch) -> None:
        """Take the entries from `sequence` on out of the log: delete the records that
        begin there or later, rewrite the one that straddles it. Before `_log` of the
        batch: the log's last entry must be the last record's."""
        assert not batch.logged
        records = self._records
        kept = bisect.bisect_left(records, sequence)  # records[:kept] begin before it
        for first in records[kept:]:
            batch.writes.append(record_delete(self.keyspace, self.partition, first))
        del records[kept:]
        if not records or self.last_sequence < sequence:
            return
        first = records.pop()  # begins before `sequence`, ends at the log's last entry
        start = max(first, self.base.sequence + 1)
        offset = self.base.sequence + 1
        remaining = self.entries[start - offset : sequence - offset]
        if start != first or not remaining:
            batch.writes.append(record_delete(self.keyspace, self.partition, first))
        if remaining:
            batch.writes.append(record_write(self.keyspace, self.partition, remaining))
            records.append(start)

    def _undo_from(self, sequence: int, batch: _Batch) -> None:
        """Undo the entries from `sequence` on, newest first, and file them as lost."""
        self._unlog_from(sequence, batch)
        count = sequence - self.base.sequence - 1
        undone, self.entries = self.entries[count:], self.entries[:count]
        for local in reversed(undone):
            entry = local.entry
            for index in reversed(range(len(entry.changes))):
                change = entry.changes[index]
                restored = local.before[index]
                batch.overlay[change.key] = restored
                batch.writes.append(Write(self.keyspace, self.partition, change.key, restored))
                batch.writes += self._file(entry, index)

    def _file(self, entry: Entry, index: int) -> tuple[Write, Write]:
        """The lost+found record of the `index`th change of a discarded entry."""
        change = entry.changes[index]
        lost = LostWrite(
            self.keyspace,
            self.partition,
            entry.epoch,
            entry.sequence,
            index,
            change.key,
            change.record,
        )
        self.lost_count += 1
        return lost.writes()

    def _run(self, now_ms: int, statement: bytes, batch: _Batch) -> tuple[Change, ...]:
        """A statement's changes here. One that cannot run (an increment of what is not
        a number here) changes nothing: the replicas have already diverged."""
        if self.run_statement is None:
            return ()
        try:
            return self.run_statement(now_ms, statement, lambda key: self._current(key, batch))
        except (StatementError, ValueError, KeyError):
            return ()

    def _current(self, key: bytes, batch: _Batch) -> bytes | None:
        if key in batch.overlay:
            return batch.overlay[key]
        return self.storage.get(self.keyspace, self.partition, key)

    def _state_write(self) -> Write:
        state = ReplicaState(self.promised_epoch, self.base, self.epoch_starts)
        return state_write(self.keyspace, self.partition, state)


def _nothing_to_answer(result: WriteResult) -> list[Effect]:
    """The completion of a leader's own empty entry: nobody waits for it."""
    return []


def _shipped(entry: Entry, rows_through: int) -> Entry:
    """What a follower gets: a statement without the changes it made here; or, for
    entries it may already hold from a snapshot, the rows without the statement."""
    if entry.statement is None:
        return entry
    if entry.sequence <= rows_through:
        return entry._replace(statement=None)
    return entry._replace(changes=())


def _quorum(mode: str, followers: tuple[str, ...], holding: list[str], sync: str | None) -> bool:
    """Does the leader plus `holding` satisfy `mode` over this set of followers?"""
    if not followers:
        return True
    if mode == "all":
        return len(holding) == len(followers)
    if mode == "majority":
        return 1 + len(holding) >= (1 + len(followers)) // 2 + 1
    if sync is not None:  # semi: the designated synchronous follower
        return sync in holding
    return bool(holding)
