"""What the Raft core replicates: any deterministic state machine over byte commands."""

from __future__ import annotations

from typing import Protocol


class StateMachine(Protocol):
    """Applied on every member, leader and followers alike, in log order.

    `apply` must be deterministic: every node applies the same commands in the same
    order and must reach the same state and results. Its result travels back to the
    proposer when the entry is applied on the leader that accepted the proposal.
    """

    def apply(self, index: int, command: bytes) -> bytes: ...

    def snapshot(self) -> bytes:
        """The whole state as of the last applied command."""
        ...

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's."""
        ...
