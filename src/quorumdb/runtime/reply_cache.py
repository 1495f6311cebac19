"""Encoded RESP replies to GET for hot keys, ready to send.

A pipelined GET of a local key spent most of its Python time finding the key's
partition, checking that this node serves it, reading the record (through the write
overlay and the read cache) and encoding the reply: 1.9 us per command, where a bare
asyncio server over a dict takes about 0.4. This cache maps a key straight to its
encoded reply, so a hit costs one dict lookup (BENCHMARKS.md: GET -P 16 about twice as
fast).

What keeps it correct:
- Only the RESP GET path fills it, after the node said the key is local and not salted
  (`Node.read_local_record`), and only with records that never expire or with the null
  reply of an absent key (a cache's misses are reads too).
- Group commit forgets a key the moment a write to it is added (before the write is
  visible to any read), and forgets everything if a group fails to be stored.
- The RESP server drops it all whenever the node's `fast_path_version` changes (a new
  partition map, a partition moving out, salted keys), checked before each chunk of
  requests and after any command that took the general path.
Durability is judged as for any fast reply: while writes are pending the reply waits
for the covering sync.
"""

from __future__ import annotations

from collections.abc import Iterable

from quorumdb.storage.interface import Write

# Bytes an entry costs beyond its key and reply: the dict slot and two bytes objects'
# headers (about 33 bytes each in CPython), rounded up.
ENTRY_OVERHEAD_BYTES = 112


class ReplyCache:
    def __init__(self, capacity_bytes: int, reply_bytes_max: int = 4096) -> None:
        if capacity_bytes < 0 or reply_bytes_max < 1:
            raise ValueError("cache capacity must be >= 0 and the reply limit positive")
        self.capacity_bytes = capacity_bytes
        self.reply_bytes_max = reply_bytes_max
        # keyspace -> key -> encoded reply, oldest first within a keyspace
        self.keyspaces: dict[str, dict[bytes, bytes]] = {}
        self.size_bytes = 0
        self.routing_version = -1  # the node's fast_path_version the entries were made under
        self.hit_count = 0  # counted by the caller, per batch
        self.miss_count = 0

    def for_keyspace(self, keyspace: str, routing_version: int) -> dict[bytes, bytes]:
        """The keyspace's entries, for lookups; all entries go if the routing changed."""
        if routing_version != self.routing_version:
            self.clear()
            self.routing_version = routing_version
        entries = self.keyspaces.get(keyspace)
        if entries is None:
            entries = self.keyspaces[keyspace] = {}
        return entries

    def put(self, entries: dict[bytes, bytes], key: bytes, reply: bytes) -> None:
        """Remember `reply` in `entries` (from `for_keyspace`); first in, first out."""
        size = len(key) + len(reply) + ENTRY_OVERHEAD_BYTES
        if size > self.reply_bytes_max or size > self.capacity_bytes or key in entries:
            return
        while self.size_bytes + size > self.capacity_bytes:
            victims = entries if entries else self._largest()
            oldest = next(iter(victims))
            self.size_bytes -= len(oldest) + len(victims.pop(oldest)) + ENTRY_OVERHEAD_BYTES
        entries[key] = reply
        self.size_bytes += size

    def _largest(self) -> dict[bytes, bytes]:
        return max(self.keyspaces.values(), key=len)

    def forget(self, keyspace: str, key: bytes) -> None:
        entries = self.keyspaces.get(keyspace)
        if entries:
            reply = entries.pop(key, None)
            if reply is not None:
                self.size_bytes -= len(key) + len(reply) + ENTRY_OVERHEAD_BYTES

    def forget_writes(self, writes: Iterable[Write]) -> None:
        if self.size_bytes:
            for write in writes:
                self.forget(write[0], write[2])

    def clear(self) -> None:
        for entries in self.keyspaces.values():
            entries.clear()  # the same dict objects: callers may hold them
        self.size_bytes = 0

    def __len__(self) -> int:
        return sum(len(entries) for entries in self.keyspaces.values())
