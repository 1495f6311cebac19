"""Moving keys between nodes while they keep being read and written: one transfer's two ends.

A transfer copies the keys of one source partition that a new layout places in one
target partition (on the target node). The source streams a snapshot of the partition
in key order, throttled, and interleaves every write it applies meanwhile to a moving
key; each message carries the values as stored *when the message is built*, so the
target, applying messages in sequence order, always converges to the source's state as
of the last message. Sequence numbers, cumulative acks and go-back-N retransmission
make this hold over a network that loses, duplicates and reorders (the simulator's),
not only over TCP.

Cut-over: when the snapshot is done and the target has acknowledged everything, the
node seals the transfer: it stops serving the moving keys (requests for them wait),
and the last message says `sealed`. A target that has applied the sealed message holds
every moving key exactly as the source last had it, and reports the transfer done to
the controller; the ownership switch commits there, atomically for every node, with a
new epoch. Until then the source stays the owner; if the transfer is abandoned the
source unseals only after the controller has recorded that, so two owners never exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from quorumdb.storage.interface import StorageReader, Write

DEFAULT_CHUNK_KEYS = 256
DEFAULT_CHUNK_BYTES = 256 * 1024
DEFAULT_WINDOW_MESSAGES = 8
DEFAULT_RETRANSMIT_MS = 500
# Messages a target keeps while it waits for an earlier one: a default window's worth.
REORDER_WINDOW_MESSAGES = DEFAULT_WINDOW_MESSAGES


class TransferKey(NamedTuple):
    """Names one attempt of one transfer of one plan; a retry is a new attempt."""

    plan_id: int
    transfer_index: int
    attempt: int


@dataclass(frozen=True, slots=True)
class TransferOpen:
    """Target -> source: start streaming (the target has cleared stale leftovers)."""

    key: TransferKey
    keyspace: str
    source_partition: int
    target_partition: int


@dataclass(frozen=True, slots=True)
class TransferData:
    """Source -> target: stored records (None: deleted) in sequence order."""

    key: TransferKey
    sequence: int
    items: tuple[tuple[bytes, bytes | None], ...]
    snapshot_done: bool
    sealed: bool


@dataclass(frozen=True, slots=True)
class TransferAck:
    """Target -> source: every message up to `sequence` is applied and durable."""

    key: TransferKey
    sequence: int


@dataclass(frozen=True, slots=True)
class TransferAbort:
    """Either way: this attempt is over (the other end restarted, or the plan changed)."""

    key: TransferKey
    reason: str


TransferMessage = TransferOpen | TransferData | TransferAck | TransferAbort


@dataclass(frozen=True, slots=True)
class TransferLimits:
    chunk_keys: int = DEFAULT_CHUNK_KEYS
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    window_messages: int = DEFAULT_WINDOW_MESSAGES
    retransmit_ms: int = DEFAULT_RETRANSMIT_MS


class OutgoingTransfer:
    """The source end: snapshot cursor, live writes, the unacknowledged window, the seal."""

    def __init__(
        self,
        key: TransferKey,
        keyspace: str,
        source_partition: int,
        moves: Callable[[bytes], bool],
        throttle_bytes_per_second: int,
        limits: TransferLimits,
        now_ms: int,
    ) -> None:
        self.key = key
        self.keyspace = keyspace
        self.source_partition = source_partition
        self.moves = moves
        self.throttle_bytes_per_second = throttle_bytes_per_second
        self.limits = limits
        self.cursor: bytes | None = b""  # None once the snapshot has been read to the end
        self.paused = False
        self.seal_requested = False
        self.sealed_sequence: int | None = None
        self.copied_bytes = 0
        self._pending: dict[bytes, bytes | None] = {}
        self._unacked: list[TransferData] = []
        self._next_sequence = 1
        self._last_send_ms = now_ms
        self._tokens = float(self._burst_bytes())
        self._tokens_at_ms = now_ms

    @property
    def caught_up(self) -> bool:
        """Snapshot sent and everything sent acknowledged: ready to seal. Writes still
        waiting do not count: they go out before the sealed message, and under steady
        writes to a moving key some are always waiting, so requiring none never seals."""
        return self.cursor is None and not self._unacked

    @property
    def acknowledged_sealed(self) -> bool:
        return self.sealed_sequence is not None and not self._unacked

    def on_write(self, key: bytes, record: bytes | None) -> None:
        """A write the source applied; a moving key's latest record must reach the target."""
        if self.moves(key):
            self._pending[key] = record

    def on_ack(self, sequence: int) -> None:
        self._unacked = [message for message in self._unacked if message.sequence > sequence]

    def seal(self) -> None:
        """The node has stopped serving the moving keys: send what is left, then `sealed`."""
        self.seal_requested = True

    def on_tick(self, now_ms: int, storage: StorageReader) -> list[TransferData]:
        """Messages to send now: retransmissions, pending writes, snapshot chunks, seal."""
        if self._unacked and now_ms - self._last_send_ms >= self.limits.retransmit_ms:
            self._last_send_ms = now_ms
            return list(self._unacked)  # go-back-N: everything the target may have missed
        out: list[TransferData] = []
        while len(self._unacked) < self.limits.window_messages:
            message = self._next_message(now_ms, storage)
            if message is None:
                break
            self._unacked.append(message)
            out.append(message)
        if out:
            self._last_send_ms = now_ms
        return out

    def _next_message(self, now_ms: int, storage: StorageReader) -> TransferData | None:
        if self.sealed_sequence is not None:
            return None
        if self._pending:
            items = tuple(self._pending.items())
            self._pending = {}
            return self._message(items, sealed=False)
        if self.cursor is not None:
            if self.paused or not self._take_tokens(now_ms):
                return None
            return self._chunk(storage)
        if self.seal_requested:
            message = self._message((), sealed=True)
            self.sealed_sequence = message.sequence
            return message
        return None

    def _burst_bytes(self) -> int:
        """A tenth of a second's worth, and never more than one chunk: the rate holds
        over any window longer than that."""
        return max(1, min(self.limits.chunk_bytes, self.throttle_bytes_per_second // 10))

    def _take_tokens(self, now_ms: int) -> bool:
        elapsed_ms = now_ms - self._tokens_at_ms
        self._tokens_at_ms = now_ms
        refill = self.throttle_bytes_per_second * elapsed_ms / 1000.0
        self._tokens = min(float(self._burst_bytes()), self._tokens + refill)
        return self._tokens > 0

    def _chunk(self, storage: StorageReader) -> TransferData:
        assert self.cursor is not None
        rows = storage.scan(
            self.keyspace, self.source_partition, self.cursor, None, self.limits.chunk_keys + 1
        )
        items: list[tuple[bytes, bytes | None]] = []
        size_bytes = 0
        next_cursor: bytes | None = None
        size_limit = self._burst_bytes()
        for index, (key, record) in enumerate(rows):
            if index == self.limits.chunk_keys or (items and size_bytes >= size_limit):
                next_cursor = key
                break
            if self.moves(key):
                items.append((key, record))
                size_bytes += len(key) + len(record)
        self.cursor = next_cursor
        self._tokens -= size_bytes
        self.copied_bytes += size_bytes
        return self._message(tuple(items), sealed=False)

    def _message(self, items: tuple[tuple[bytes, bytes | None], ...], sealed: bool) -> TransferData:
        message = TransferData(self.key, self._next_sequence, items, self.cursor is None, sealed)
        self._next_sequence += 1
        return message


class IncomingTransfer:
    """The target end: applies messages strictly in sequence and acknowledges them.

    Messages that arrive ahead of a gap wait (at most a window's worth) until the gap is
    filled: the source sends a window at once, the network reorders it, and applying
    only the next one would leave one message applied per retransmission, slower than
    writes arrive at a busy source, which then never catches up enough to seal."""

    def __init__(self, key: TransferKey, keyspace: str, target_partition: int) -> None:
        self.key = key
        self.keyspace = keyspace
        self.target_partition = target_partition
        self.applied_sequence = 0
        self.received_bytes = 0
        self.snapshot_done = False
        self.complete = False  # the sealed message is applied: every moving key is here
        self._early: dict[int, TransferData] = {}  # sequence -> message ahead of a gap

    def on_data(self, message: TransferData) -> tuple[tuple[Write, ...], TransferAck]:
        """Writes to persist (before the ack is sent) and the cumulative ack. A message
        ahead of a gap waits; one beyond the reorder window or already applied is
        dropped, and the last in-order sequence acknowledged again."""
        ahead = message.sequence - self.applied_sequence
        if 1 <= ahead <= REORDER_WINDOW_MESSAGES:
            self._early[message.sequence] = message
        records: dict[bytes, bytes | None] = {}  # in sequence order: the last one wins
        while self.applied_sequence + 1 in self._early:
            ready = self._early.pop(self.applied_sequence + 1)
            self.applied_sequence = ready.sequence
            self.snapshot_done = ready.snapshot_done
            self.complete = ready.sealed
            for key, record in ready.items:
                records[key] = record
                self.received_bytes += len(key) + len(record or b"")
        writes = tuple(
            Write(self.keyspace, self.target_partition, key, record)
            for key, record in records.items()
        )
        return writes, TransferAck(self.key, self.applied_sequence)
