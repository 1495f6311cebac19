"""Tuning of one Raft node (timeouts, batch sizes), validated in one place.

Not to be confused with `raft_configuration`, which says who is a member.
"""

from __future__ import annotations

from dataclasses import dataclass


class RaftConfigError(ValueError):
    """A tuning value that would make the protocol unsafe or unable to progress."""


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Times are in the driver's milliseconds (`now_ms`); ticks may come at any rate.

    `bootstrap_voters` (and `bootstrap_learners`, members that only receive the log) is
    the first configuration, the same on every founding member; a node joining later
    leaves both empty and waits to be added as a learner.
    """

    election_timeout_ms_min: int = 300
    election_timeout_ms_max: int = 600
    heartbeat_interval_ms: int = 50
    snapshot_threshold_entries: int = 64
    entries_per_message_max: int = 32
    pending_requests_max: int = 1_000
    bootstrap_voters: tuple[str, ...] = ()
    bootstrap_learners: tuple[str, ...] = ()
    pre_vote: bool = True
    check_quorum: bool = True

    def __post_init__(self) -> None:
        if self.heartbeat_interval_ms < 1:
            raise RaftConfigError("heartbeat_interval_ms must be positive")
        if self.election_timeout_ms_min <= 2 * self.heartbeat_interval_ms:
            raise RaftConfigError("election timeout must exceed two heartbeat intervals")
        if self.election_timeout_ms_max <= self.election_timeout_ms_min:
            raise RaftConfigError("election_timeout_ms_max must exceed the minimum")
        if self.snapshot_threshold_entries < 1:
            raise RaftConfigError("snapshot_threshold_entries must be positive")
        if self.entries_per_message_max < 1:
            raise RaftConfigError("entries_per_message_max must be positive")
        if self.pending_requests_max < 1:
            raise RaftConfigError("pending_requests_max must be positive")
        if len(set(self.bootstrap_voters)) != len(self.bootstrap_voters):
            raise RaftConfigError("bootstrap_voters has duplicates")
        if set(self.bootstrap_learners) & set(self.bootstrap_voters):
            raise RaftConfigError("a bootstrap learner cannot also be a voter")
