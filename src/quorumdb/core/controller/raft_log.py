"""The replicated log in memory: a snapshot of the compacted prefix plus the entries after it.

Indexes start at 1; index 0 (term 0) is the empty prefix every log shares. After
compaction the log starts at `snapshot.index + 1`, and the term of `snapshot.index` is
still known, which is all the consistency check of AppendEntries needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from quorumdb.core.controller.raft_configuration import Configuration


class EntryKind(Enum):
    COMMAND = 1  # a state-machine command proposed by a client
    NOOP = 2  # appended by every new leader, so it can commit its term (§5.4.2)
    CONFIGURATION = 3  # a whole new configuration, in effect once appended


@dataclass(frozen=True, slots=True)
class LogEntry:
    index: int
    term: int
    kind: EntryKind
    command: bytes = b""
    configuration: Configuration | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """State-machine state after applying every entry up to `index`."""

    index: int
    term: int
    configuration: Configuration
    data: bytes


class RaftLog:
    def __init__(self, snapshot: Snapshot, entries: list[LogEntry]) -> None:
        for offset, entry in enumerate(entries):
            assert entry.index == snapshot.index + 1 + offset, "log entries are contiguous"
        self.snapshot = snapshot
        self._entries = entries
        # Bumped on every change, so observers can skip re-reading an unchanged log.
        self.version = 0

    # --- reading --------------------------------------------------------------------------

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.index

    @property
    def first_index(self) -> int:
        return self.snapshot.index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot.index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot.term

    def __len__(self) -> int:
        return len(self._entries)

    def term_at(self, index: int) -> int | None:
        """The term of entry `index`, or None when compacted away or not yet appended."""
        if index == self.snapshot.index:
            return self.snapshot.term
        if self.snapshot.index < index <= self.last_index:
            return self._entries[index - self.snapshot.index - 1].term
        return None

    def entry(self, index: int) -> LogEntry:
        assert self.snapshot.index < index <= self.last_index, f"no entry {index}"
        return self._entries[index - self.snapshot.index - 1]

    def entries(self, first: int, count_max: int) -> tuple[LogEntry, ...]:
        """Up to `count_max` entries from `first` on; `first` must not be compacted."""
        assert first > self.snapshot.index
        start = first - self.snapshot.index - 1
        return tuple(self._entries[start : start + count_max])

    def all_entries(self) -> tuple[LogEntry, ...]:
        return tuple(self._entries)

    def first_index_of_term_at(self, index: int) -> int:
        """The first retained index holding the same term as `index` (conflict hint)."""
        term = self.term_at(index)
        assert term is not None
        while index - 1 > self.snapshot.index and self.term_at(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int) -> int | None:
        """The last retained index whose term is `term`, or None."""
        for entry in reversed(self._entries):
            if entry.term == term:
                return entry.index
            if entry.term < term:
                return None
        return self.snapshot.index if self.snapshot.term == term else None

    def configuration_at(self, index: int) -> tuple[Configuration, int]:
        """The configuration in effect at `index` and the index of its entry or snapshot."""
        position = min(index, self.last_index) - self.snapshot.index - 1
        while position >= 0:
            entry = self._entries[position]
            if entry.configuration is not None:
                return entry.configuration, entry.index
            position -= 1
        return self.snapshot.configuration, self.snapshot.index

    # --- changing -------------------------------------------------------------------------

    def append(self, entry: LogEntry) -> None:
        assert entry.index == self.last_index + 1, "appends are contiguous"
        assert entry.term >= self.last_term, "terms never decrease along the log"
        self._entries.append(entry)
        self.version += 1

    def truncate_from(self, index: int) -> list[int]:
        """Drop entries `index` and later; returns the dropped indexes."""
        assert index > self.snapshot.index
        dropped = list(range(index, self.last_index + 1))
        del self._entries[index - self.snapshot.index - 1 :]
        self.version += 1
        return dropped

    def compact(self, snapshot: Snapshot) -> list[int]:
        """Replace the prefix up to `snapshot.index` by `snapshot`; returns dropped indexes.

        Entries after the snapshot are kept when the log holds the snapshot's last entry
        (same index and term); otherwise the whole log is replaced (§7).
        """
        assert snapshot.index > self.snapshot.index
        if self.term_at(snapshot.index) == snapshot.term:
            kept = self._entries[snapshot.index - self.snapshot.index :]
            dropped = list(range(self.first_index, snapshot.index + 1))
        else:
            kept = []
            dropped = list(range(self.first_index, self.last_index + 1))
        self.snapshot = snapshot
        self._entries = kept
        self.version += 1
        return dropped
