"""What a leader knows about each follower's log, and which reads wait for what."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Progress:
    """Replication state of one follower or learner, kept by the leader only.

    `match_index` only grows within a term; `next_index` is where the next
    AppendEntries starts: it moves past entries as soon as they are sent (pipelining)
    and backs off on rejections, never below match + 1.
    """

    next_index: int
    match_index: int = 0
    acked_round: int = 0
    applied_index: int = 0
    recently_active: bool = False
    last_reply_ms: int = -1
    snapshot_retry_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class PendingRead:
    """A ReadIndex read: answerable once a quorum acked `heartbeat_round` and the
    state machine applied `read_index`. `read_index` is 0 until the leader has
    committed an entry of its own term (before that its commit index may be stale)."""

    request_id: int
    read_index: int
    heartbeat_round: int
