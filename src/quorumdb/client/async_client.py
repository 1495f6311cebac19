"""asyncio Python client with the same routing as `Client`: owner first, any node as fallback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from quorumdb.client._routing import (
    RANGE_PAGE_SIZE,
    ClientMap,
    Router,
    as_bytes,
    range_command,
    range_items,
)

T = TypeVar("T")


class _KeyspaceConnection(aioredis.Connection):
    def __init__(
        self, *args: Any, keyspace: str = "default", redirects: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.keyspace = keyspace
        self.redirects = redirects

    # redis-py 8 calls on_connect_check_health() itself on connect, never on_connect().
    async def on_connect_check_health(self, check_health: bool = True) -> None:
        await super().on_connect_check_health(check_health=check_health)
        if self.redirects:
            await self.send_command("QUORUMDB.REDIRECTS", "ON", check_health=False)
            await self.read_response()
        if self.keyspace != "default":
            await self.send_command("QUORUMDB.KEYSPACE", self.keyspace, check_health=False)
            await self.read_response()


class AsyncClient:
    """Create with `await AsyncClient.connect(...)`."""

    def __init__(self, seeds: list[str] | str, keyspace: str, timeout_seconds: float) -> None:
        self.router = Router(seeds, keyspace)
        self.keyspace = keyspace
        self.timeout_seconds = timeout_seconds
        self._connections: dict[tuple[str, int, bool], aioredis.Redis] = {}
        self.redirects_followed = 0  # REDIRECT answers that sent a request elsewhere

    @classmethod
    async def connect(
        cls,
        seeds: list[str] | str = "127.0.0.1:7000",
        keyspace: str = "default",
        timeout_seconds: float = 10.0,
    ) -> AsyncClient:
        client = cls(seeds, keyspace, timeout_seconds)
        await client.refresh_map()
        return client

    def _connection(self, host: str, port: int, redirects: bool = False) -> aioredis.Redis:
        connection = self._connections.get((host, port, redirects))
        if connection is None:
            pool = aioredis.ConnectionPool(
                connection_class=_KeyspaceConnection,
                host=host,
                port=port,
                keyspace=self.keyspace,
                redirects=redirects,
                socket_timeout=self.timeout_seconds,
                max_connections=64,
            )
            connection = aioredis.Redis(connection_pool=pool)
            self._connections[(host, port, redirects)] = connection
        return connection

    async def refresh_map(self, order: list[tuple[str, int]] | None = None) -> ClientMap:
        last_error: Exception | None = None
        for host, port in order or self.router.addresses():
            try:
                document = await self._connection(host, port).execute_command("QUORUMDB.MAP")
            except RedisConnectionError as error:
                last_error = error
                continue
            return self.router.adopt(document)
        raise RedisConnectionError(f"no quorumdb node reachable: {last_error}")

    async def _route(
        self, key: bytes | None, action: Callable[[aioredis.Redis], Awaitable[T]]
    ) -> T:
        attempts = self.router.attempts(key)
        while (attempt := attempts.next()) is not None:
            address, redirects = attempt
            try:
                return await action(self._connection(*address, redirects=redirects))
            except RedisConnectionError as error:
                attempts.failed(address, error, None)
            except ResponseError as error:
                step = attempts.failed(address, error, str(error))
                if step == "raise":
                    raise
                if step == "give-up":
                    break
                if step == "refresh":
                    self.redirects_followed += 1
                    await self.refresh_map(attempts.refresh_order())
                    attempts.restart()
        raise RedisConnectionError(f"request failed on every node: {attempts.last_error}")

    async def _command(self, key: bytes | None, arguments: list[bytes | str | int]) -> Any:
        """One raw command, routed like a request for `key`."""
        return await self._route(key, lambda connection: connection.execute_command(*arguments))

    def owner_of(self, key: bytes | str) -> str | None:
        return self.router.owner_of(key)

    @property
    def map(self) -> ClientMap | None:
        return self.router.map

    async def get(self, key: bytes | str) -> bytes | None:
        key = as_bytes(key)
        return await self._route(key, lambda connection: connection.get(key))

    async def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        expire_ms: int | None = None,
        if_absent: bool = False,
        if_present: bool = False,
    ) -> bool:
        key = as_bytes(key)
        result = await self._route(
            key,
            lambda connection: connection.set(
                key, as_bytes(value), px=expire_ms, nx=if_absent, xx=if_present
            ),
        )
        return bool(result)

    async def delete(self, key: bytes | str) -> bool:
        key = as_bytes(key)
        return bool(await self._route(key, lambda connection: connection.delete(key)))

    async def incr(self, key: bytes | str, amount: int = 1) -> int:
        key = as_bytes(key)
        return int(await self._route(key, lambda connection: connection.incrby(key, amount)))

    async def scan(self, match: str | None = None, count: int = 100) -> AsyncIterator[bytes]:
        host, port = self.router.addresses()[0]
        async for key in self._connection(host, port).scan_iter(match=match, count=count):
            yield key

    async def range(
        self,
        start: bytes | str = b"",
        end: bytes | str | None = None,
        *,
        limit: int | None = None,
        page_size: int = RANGE_PAGE_SIZE,
        keys_only: bool = False,
    ) -> AsyncIterator[tuple[bytes, bytes]]:
        """As `Client.range`: (key, value) pairs of [start, end) in key order."""
        start, end = as_bytes(start), (None if end is None else as_bytes(end))
        route_key = self.router.range_key(start, end)
        token = b""
        count = 0
        while limit is None or count < limit:
            size = page_size if limit is None else min(page_size, limit - count)
            arguments = range_command(start, end, size, token, keys_only)
            reply = await self._command(route_key, arguments)
            token, items = range_items(reply, keys_only)
            for item in items:
                yield item
            count += len(items)
            if not token:
                return

    async def range_keys(
        self, start: bytes | str = b"", end: bytes | str | None = None, *, limit: int | None = None
    ) -> AsyncIterator[bytes]:
        """The keys of [start, end) in key order (values are not fetched)."""
        async for key, _ in self.range(start, end, limit=limit, keys_only=True):
            yield key

    async def dbsize(self) -> int:
        return int(await self._route(None, lambda connection: connection.dbsize()))

    async def close(self) -> None:
        for connection in self._connections.values():
            await connection.aclose()
        self._connections.clear()
