"""Client sessions over replicated keyspaces: read your writes and monotonic reads at
any replica, by a session token the client carries.

The token is the newest log position (epoch, sequence) this session wrote or read, per
partition. Every read sends it (`QUORUMDB.GET key AFTER epoch sequence`): a replica
that has not reached it waits briefly for replication, then hands the read to the
leader; and every answer moves it forward. Where reads go is the session's choice:

- `read_from="any"`: a random replica of the key's partition (spreads the load);
- `read_from="sticky"` with `user`: always the same replica for one user, chosen by
  rendezvous hashing of the user id and the replicas' node ids (the notes' "make sure
  each user always reads from the same replica");
- `read_from="leader"`: the leader (linearizable, no token needed).

`own_writes_from_leader=True` is the notes' other simple strategy: keys this session
wrote are read from the leader, the rest from a replica with no token at all
(eventual), which needs no positions but reads every written key at the leader.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any
from zlib import crc32

import redis

from quorumdb.client._routing import as_bytes

if TYPE_CHECKING:
    from quorumdb.client.sync_client import Client

READ_FROM = ("any", "sticky", "leader")


class Session:
    def __init__(
        self,
        client: Client,
        *,
        read_from: str = "any",
        user: str | None = None,
        own_writes_from_leader: bool = False,
    ) -> None:
        if read_from not in READ_FROM:
            raise ValueError(f"read_from must be one of {', '.join(READ_FROM)}")
        if read_from == "sticky" and user is None:
            raise ValueError("read_from='sticky' needs the user whose replica to stick to")
        self.client = client
        self.read_from = read_from
        self.user = user
        self.own_writes_from_leader = own_writes_from_leader
        self.tokens: dict[int, tuple[int, int]] = {}  # partition -> newest position seen
        self.written: set[bytes] = set()
        self.reads_by_node: dict[str, int] = {}
        self._random = random.Random()

    # --- writes: to the leader, like any client write -----------------------------------

    def put(self, key: bytes | str, value: bytes | str, *, sync: str | None = None) -> int:
        """Write and return how many followers held the write when it was acknowledged."""
        key = as_bytes(key)
        arguments: list[Any] = ["QUORUMDB.SET", key, as_bytes(value)]
        if sync is not None:
            arguments += ["SYNC", sync]
        _, acks, epoch, sequence = self.client._command(key, arguments)
        self._advance(key, epoch, sequence)
        self.written.add(key)
        return int(acks or 0)

    def delete(self, key: bytes | str, *, sync: str | None = None) -> bool:
        key = as_bytes(key)
        arguments: list[Any] = ["QUORUMDB.DEL", key]
        if sync is not None:
            arguments += ["SYNC", sync]
        deleted, _, epoch, sequence = self.client._command(key, arguments)
        self._advance(key, epoch, sequence)
        self.written.add(key)
        return bool(deleted)

    # --- reads: at a replica the session chooses -----------------------------------------

    def get(self, key: bytes | str) -> bytes | None:
        key = as_bytes(key)
        client_map = self.client.map
        if client_map is None:
            self.client.refresh_map()
            client_map = self.client.map
        assert client_map is not None
        partition, replicas = client_map.replicas(self.client.keyspace, key)
        arguments: list[Any] = ["QUORUMDB.GET", key]
        if self.read_from == "leader" or (self.own_writes_from_leader and key in self.written):
            node_id = replicas[0]
        else:
            node_id = self._choose(replicas)
            token = self.tokens.get(partition)
            if self.own_writes_from_leader:
                arguments += ["CONSISTENCY", "eventual"]
            elif token is not None:
                arguments += ["AFTER", *token]
            else:
                arguments += ["CONSISTENCY", "eventual"]  # nothing seen yet: any state will do
        reply = self._on(node_id, key, arguments)
        value, epoch, sequence = reply
        self._advance(key, epoch, sequence, partition)
        self.reads_by_node[node_id] = self.reads_by_node.get(node_id, 0) + 1
        return value  # type: ignore[no-any-return]

    def _choose(self, replicas: tuple[str, ...]) -> str:
        if self.read_from == "sticky":
            # Rendezvous hashing: the user's favourite node among those holding the key,
            # so one user reads from one node for every partition that node holds.
            assert self.user is not None
            user = self.user.encode()
            return max(replicas, key=lambda node_id: crc32(user + b"\x00" + node_id.encode()))
        return self._random.choice(replicas)

    def _on(self, node_id: str, key: bytes, arguments: list[Any]) -> Any:
        """Send to one node; if it cannot be reached, route like any request."""
        client_map = self.client.map
        address = client_map.nodes.get(node_id) if client_map is not None else None
        if address is not None:
            try:
                connection = self.client._connection(address.host, address.port)
                return connection.execute_command(*arguments)
            except redis.ConnectionError:
                pass
        return self.client._command(key, arguments)

    def _advance(
        self, key: bytes, epoch: int | None, sequence: int | None, partition: int | None = None
    ) -> None:
        if epoch is None or sequence is None:
            return  # an unreplicated keyspace: one copy, nothing to track
        if partition is None:
            client_map = self.client.map
            assert client_map is not None
            partition, _ = client_map.replicas(self.client.keyspace, key)
        position = (int(epoch), int(sequence))
        if position > self.tokens.get(partition, (0, 0)):
            self.tokens[partition] = position
