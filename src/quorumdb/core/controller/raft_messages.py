"""Messages between members of the Raft group (the controller's consensus core).

Frozen slotted dataclasses, like the rest of `core.messages`. Every message carries the
sender's term; a receiver that sees a larger one adopts it (§5.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from quorumdb.core.controller.raft_log import LogEntry, Snapshot


@dataclass(frozen=True, slots=True)
class RequestVote:
    """A vote request; with `pre_vote` a dry run that changes no state (§9.6).

    A pre-vote carries the term the candidate would campaign in (its term + 1), so a
    partitioned node rejoining cannot force the group into a new term by itself.
    """

    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteReply:
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Entries after (previous_index, previous_term); also the heartbeat.

    `heartbeat_round` is echoed in the reply: a quorum of replies to round r confirms
    that the sender was still leader after round r was sent (ReadIndex, §6.4).
    """

    term: int
    previous_index: int
    previous_term: int
    entries: tuple[LogEntry, ...]
    leader_commit: int
    heartbeat_round: int = 0


@dataclass(frozen=True, slots=True)
class AppendEntriesReply:
    """`match_index` on success; on rejection a hint where the logs may diverge.

    On rejection `conflict_term` is the follower's term at `rejected_index` (0 when
    its log is shorter) and `conflict_index` the first index it holds of that term.
    """

    term: int
    success: bool
    match_index: int = 0
    rejected_index: int = 0
    conflict_index: int = 0
    conflict_term: int = 0
    heartbeat_round: int = 0
    # How far the follower has applied the log: lets the leader tell when a change has
    # reached every member's state machine (so a client may use it through any node).
    applied_index: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """The leader's whole snapshot, in one message, for a follower it compacted past."""

    term: int
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class InstallSnapshotReply:
    term: int
    match_index: int


RaftMessage = (
    RequestVote
    | RequestVoteReply
    | AppendEntries
    | AppendEntriesReply
    | InstallSnapshot
    | InstallSnapshotReply
)

RAFT_MESSAGE_TYPES = (
    RequestVote,
    RequestVoteReply,
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
)


def describe_raft_message(message: RaftMessage) -> str:
    """One short line for traces."""
    if isinstance(message, RequestVote):
        kind = "pre-vote" if message.pre_vote else "vote"
        return f"{kind} t{message.term} last={message.last_log_index}/t{message.last_log_term}"
    if isinstance(message, RequestVoteReply):
        kind = "pre-vote" if message.pre_vote else "vote"
        return f"{kind}-reply t{message.term} {'granted' if message.granted else 'rejected'}"
    if isinstance(message, AppendEntries):
        entries = message.entries
        span = f"{entries[0].index}..{entries[-1].index}" if entries else "-"
        return (
            f"append t{message.term} prev={message.previous_index}/t{message.previous_term}"
            f" entries={span} commit={message.leader_commit} round={message.heartbeat_round}"
        )
    if isinstance(message, AppendEntriesReply):
        if message.success:
            return f"append-ok t{message.term} match={message.match_index}"
        return (
            f"append-reject t{message.term} at={message.rejected_index}"
            f" hint={message.conflict_index}/t{message.conflict_term}"
        )
    if isinstance(message, InstallSnapshot):
        snapshot = message.snapshot
        return f"snapshot t{message.term} upto={snapshot.index}/t{snapshot.term}"
    return f"snapshot-ok t{message.term} match={message.match_index}"
