"""Which epoch wrote each sequence of a log, kept after the entries are dropped.

A follower that installs a snapshot discards its whole log. Of the entries it held,
those in the leader's log are not lost (their writes are in the snapshot, or the leader
replays them); the others are a divergent tail, acknowledged perhaps by an old
asynchronous leader, and must go to lost+found. Log matching names an entry by (epoch,
sequence): the leader's log holds it iff the leader's log has that epoch at that
sequence. The leader has dropped most of those entries (that is why it sends a
snapshot), so, like Kafka's leader-epoch cache, every replica keeps the *epoch starts*
of its log, the position of the first entry of each epoch, and the leader sends them
with the snapshot. A log's epochs never decrease, so the starts say which epoch every
sequence holds.

A replica persists the starts at or below its base (`ReplicaState.epoch_starts`) and
derives the rest from its entries. It keeps the newest `EPOCH_STARTS_MAX`: the oldest
kept start then stands for "this epoch from here on", and of a sequence below it
nothing is known, so an entry there cannot be shown to be in the leader's log.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

from quorumdb.core.replication.log_format import EPOCH_STARTS_MAX, Entry, Position


def extended(starts: tuple[Position, ...], entries: Iterable[Entry]) -> tuple[Position, ...]:
    """`starts` followed by the position of each of `entries` (the log right after
    them, in order) that begins a new epoch; the newest `EPOCH_STARTS_MAX` of them."""
    result = list(starts)
    for entry in entries:
        if not result or result[-1].epoch != entry.epoch:
            result.append(entry.position)
    return tuple(result[-EPOCH_STARTS_MAX:])


def epoch_at(starts: tuple[Position, ...], sequence: int) -> int | None:
    """The epoch at `sequence` of a log (reaching that far) whose epochs start at
    `starts`; None when the sequence is below the first start known."""
    index = bisect_right(starts, sequence, key=lambda start: start.sequence)
    return starts[index - 1].epoch if index else None


def in_leader_log(
    position: Position,
    leader_starts: tuple[Position, ...],
    leader_base: Position,
    leader_epoch: int,
) -> bool:
    """Does the log of the leader of `leader_epoch` hold the entry at `position`?
    Through `leader_base` its epochs start at `leader_starts`. Past it the leader has
    logged only entries of its own epoch, and a leader never undoes one of those.
    Unknown (below the first start) counts as not held: the entry is filed."""
    if position.sequence > leader_base.sequence:
        return position.epoch == leader_epoch
    return epoch_at(leader_starts, position.sequence) == position.epoch
