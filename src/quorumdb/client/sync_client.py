"""Blocking Python client: sends each request straight to its key's owner.

It caches the partition map (from any node) and routes by it. A node that does not
own the key answers REDIRECT with its map version; the client then refreshes its map
from that node and retries on the owner. When an owner is unreachable it falls back
to another node (every node forwards). Not thread-safe: use one client per thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis

from quorumdb.client._routing import (
    RANGE_PAGE_SIZE,
    ClientMap,
    Router,
    as_bytes,
    range_command,
    range_items,
)
from quorumdb.client.session import Session

T = TypeVar("T")


class _KeyspaceConnection(redis.Connection):
    """Selects the client's keyspace on every (re)connect."""

    def __init__(
        self, *args: Any, keyspace: str = "default", redirects: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.keyspace = keyspace
        self.redirects = redirects

    # redis-py 8 calls on_connect_check_health() itself on connect, never on_connect().
    def on_connect_check_health(self, check_health: bool = True) -> None:
        super().on_connect_check_health(check_health=check_health)
        if self.redirects:
            self.send_command("QUORUMDB.REDIRECTS", "ON", check_health=False)
            self.read_response()
        if self.keyspace != "default":
            self.send_command("QUORUMDB.KEYSPACE", self.keyspace, check_health=False)
            self.read_response()


class Client:
    def __init__(
        self,
        seeds: list[str] | str = "127.0.0.1:7000",
        keyspace: str = "default",
        timeout_seconds: float = 10.0,
    ) -> None:
        self.router = Router(seeds, keyspace)
        self.keyspace = keyspace
        self.timeout_seconds = timeout_seconds
        self._connections: dict[tuple[str, int, bool], redis.Redis] = {}
        self.redirects_followed = 0  # REDIRECT answers that sent a request elsewhere
        self.refresh_map()

    # --- plumbing ------------------------------------------------------------------------

    def _connection(self, host: str, port: int, redirects: bool = False) -> redis.Redis:
        connection = self._connections.get((host, port, redirects))
        if connection is None:
            pool = redis.ConnectionPool(
                connection_class=_KeyspaceConnection,
                host=host,
                port=port,
                keyspace=self.keyspace,
                redirects=redirects,
                socket_timeout=self.timeout_seconds,
                max_connections=4,
            )
            connection = redis.Redis(connection_pool=pool)
            self._connections[(host, port, redirects)] = connection
        return connection

    def refresh_map(self, order: list[tuple[str, int]] | None = None) -> ClientMap:
        last_error: Exception | None = None
        for host, port in order or self.router.addresses():
            try:
                document = self._connection(host, port).execute_command("QUORUMDB.MAP")
            except redis.ConnectionError as error:
                last_error = error
                continue
            return self.router.adopt(document)
        raise redis.ConnectionError(f"no quorumdb node reachable: {last_error}")

    def _route(self, key: bytes | None, action: Callable[[redis.Redis], T]) -> T:
        attempts = self.router.attempts(key)
        while (attempt := attempts.next()) is not None:
            address, redirects = attempt
            try:
                return action(self._connection(*address, redirects=redirects))
            except redis.ConnectionError as error:
                attempts.failed(address, error, None)
            except redis.ResponseError as error:
                step = attempts.failed(address, error, str(error))
                if step == "raise":
                    raise
                if step == "give-up":
                    break
                if step == "refresh":
                    self.redirects_followed += 1
                    self.refresh_map(attempts.refresh_order())
                    attempts.restart()
        raise redis.ConnectionError(f"request failed on every node: {attempts.last_error}")

    def _command(self, key: bytes | None, arguments: list[bytes | str | int]) -> Any:
        """One raw command, routed like a request for `key`."""
        return self._route(key, lambda connection: connection.execute_command(*arguments))

    def owner_of(self, key: bytes | str) -> str | None:
        return self.router.owner_of(key)

    @property
    def map(self) -> ClientMap | None:
        return self.router.map

    # --- data operations -----------------------------------------------------------------

    def get(self, key: bytes | str) -> bytes | None:
        key = as_bytes(key)
        return self._route(key, lambda connection: connection.get(key))

    def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        expire_ms: int | None = None,
        if_absent: bool = False,
        if_present: bool = False,
    ) -> bool:
        key = as_bytes(key)
        result = self._route(
            key,
            lambda connection: connection.set(
                key, as_bytes(value), px=expire_ms, nx=if_absent, xx=if_present
            ),
        )
        return bool(result)

    def delete(self, key: bytes | str) -> bool:
        key = as_bytes(key)
        return bool(self._route(key, lambda connection: connection.delete(key)))

    def incr(self, key: bytes | str, amount: int = 1) -> int:
        key = as_bytes(key)
        return int(self._route(key, lambda connection: connection.incrby(key, amount)))

    def append(self, key: bytes | str, value: bytes | str) -> int:
        key = as_bytes(key)
        return int(self._route(key, lambda connection: connection.append(key, as_bytes(value))))

    def scan(self, match: str | None = None, count: int = 100) -> Iterator[bytes]:
        """Every key of the keyspace; one node's cursor walks all partitions."""
        host, port = self.router.addresses()[0]
        yield from self._connection(host, port).scan_iter(match=match, count=count)

    def range(
        self,
        start: bytes | str = b"",
        end: bytes | str | None = None,
        *,
        limit: int | None = None,
        page_size: int = RANGE_PAGE_SIZE,
        keys_only: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs of [start, end) in key order across the cluster, fetched a
        page at a time; at most `limit` of them (None: all). Values are empty with
        `keys_only`. End None: to the end of the keyspace."""
        start, end = as_bytes(start), (None if end is None else as_bytes(end))
        route_key = self.router.range_key(start, end)
        token = b""
        count = 0
        while limit is None or count < limit:
            size = page_size if limit is None else min(page_size, limit - count)
            arguments = range_command(start, end, size, token, keys_only)
            reply = self._command(route_key, arguments)
            token, items = range_items(reply, keys_only)
            yield from items
            count += len(items)
            if not token:
                return

    def range_keys(
        self, start: bytes | str = b"", end: bytes | str | None = None, *, limit: int | None = None
    ) -> Iterator[bytes]:
        """The keys of [start, end) in key order (values are not fetched)."""
        for key, _ in self.range(start, end, limit=limit, keys_only=True):
            yield key

    def session(
        self,
        *,
        read_from: str = "any",
        user: str | None = None,
        own_writes_from_leader: bool = False,
    ) -> Session:
        """A session over a replicated keyspace: read-your-writes and monotonic reads at
        any replica (see `quorumdb.client.session`)."""
        return Session(
            self, read_from=read_from, user=user, own_writes_from_leader=own_writes_from_leader
        )

    def dbsize(self) -> int:
        return int(self._route(None, lambda connection: connection.dbsize()))

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
