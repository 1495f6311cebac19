"""The Python clients (`Client`, `AsyncClient`) against real clusters: owner routing,
fallback when an owner is down, and keyspaces."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from cluster_harness import LocalTestCluster
from quorumdb.client import AsyncClient, Client
from quorumdb.core.partitioning import FixedLayout, layout_from_dict


def seeds(cluster) -> list[str]:
    return [f"127.0.0.1:{cluster.resp_port(index)}" for index in range(cluster.node_count)]


def layout(cluster, keyspace: str = "default"):
    document = httpx.get(f"{cluster.http_url(0)}/v1/cluster", timeout=10).json()
    return layout_from_dict(document["keyspaces"][keyspace]["layout"])


def keys_by_owner(cluster, prefix: str, per_node: int, keyspace: str = "default"):
    """`per_node` keys for each node, according to the cluster's own map."""
    table = layout(cluster, keyspace)
    found: dict[str, list[bytes]] = {f"node{i}": [] for i in range(cluster.node_count)}
    index = 0
    while any(len(keys) < per_node for keys in found.values()):
        key = f"{prefix}:{index}".encode()
        owner = table.owner(table.locate(key))
        if len(found[owner]) < per_node:
            found[owner].append(key)
        index += 1
    return found


def commands_processed(cluster) -> list[int]:
    counts = []
    for index in range(cluster.node_count):
        with redis.Redis(port=cluster.resp_port(index)) as client:
            counts.append(client.info("stats")["total_commands_processed"])
    return counts


@pytest.fixture
def client(cluster3) -> Iterator[Client]:
    with Client(seeds(cluster3)) as connected:
        yield connected


def test_sync_client_basic_operations(client, cluster3) -> None:
    assert client.get("basic") is None
    assert client.put("basic", "one") is True
    assert client.get("basic") == b"one"
    assert client.put("basic", "two", if_absent=True) is False
    assert client.put("basic-missing", "x", if_present=True) is False
    assert client.get("basic-missing") is None
    assert client.put("basic", b"\x00\r\nthree", if_present=True) is True
    assert client.get(b"basic") == b"\x00\r\nthree"
    assert client.append("basic", "!") == 9
    assert client.incr("basic-counter") == 1
    assert client.incr("basic-counter", 41) == 42
    with pytest.raises(redis.ResponseError, match="not an integer"):
        client.incr("basic")
    assert client.delete("basic") is True
    assert client.delete("basic") is False
    assert client.put("basic-ttl", "v", expire_ms=300) is True
    assert client.get("basic-ttl") == b"v"
    time.sleep(0.5)
    assert client.get("basic-ttl") is None
    names = {f"basic-scan:{i}".encode() for i in range(60)}
    for name in names:
        client.put(name, "v")
    assert set(client.scan(match="basic-scan:*", count=7)) == names
    with redis.Redis(port=cluster3.resp_port(2)) as direct:
        assert client.dbsize() == direct.dbsize() >= 61


def test_sync_client_sends_each_key_to_its_owner(client, cluster3) -> None:
    keys = keys_by_owner(cluster3, "routed", per_node=20)
    for owner, owned in keys.items():
        for key in owned:
            assert client.owner_of(key) == owner
    for owner, owned in keys.items():
        before = commands_processed(cluster3)
        for key in owned:
            client.put(key, owner)
            assert client.get(key) == owner.encode()
        after = commands_processed(cluster3)
        deltas = [a - b for a, b in zip(after, before, strict=True)]
        owner_index = int(owner.removeprefix("node"))
        assert deltas[owner_index] >= 2 * len(owned), deltas
        for index, delta in enumerate(deltas):
            if index != owner_index:
                assert delta <= 2, deltas  # nothing routed there (INFO may count itself)


def test_async_client_routes_and_operates(cluster3) -> None:
    keys = keys_by_owner(cluster3, "async-routed", per_node=10)

    async def scenario() -> None:
        client = await AsyncClient.connect(seeds(cluster3))
        try:
            assert await client.get("async-basic") is None
            assert await client.put("async-basic", "a") is True
            assert await client.put("async-basic", "b", if_absent=True) is False
            assert await client.get("async-basic") == b"a"
            assert await client.incr("async-counter", 5) == 5
            assert await client.delete("async-basic") is True
            for owner, owned in keys.items():
                before = commands_processed(cluster3)
                await asyncio.gather(*(client.put(key, owner) for key in owned))
                values = await asyncio.gather(*(client.get(key) for key in owned))
                assert values == [owner.encode()] * len(owned)
                after = commands_processed(cluster3)
                deltas = [a - b for a, b in zip(after, before, strict=True)]
                owner_index = int(owner.removeprefix("node"))
                assert deltas[owner_index] >= 2 * len(owned), deltas
                assert sum(deltas) - deltas[owner_index] <= 4, deltas
                for key in owned:
                    assert client.owner_of(key) == owner
            scanned = {key async for key in client.scan(match="async-routed:*")}
            assert scanned == {key for owned in keys.values() for key in owned}
            assert await client.dbsize() >= len(scanned)
        finally:
            await client.close()

    asyncio.run(scenario())


def test_keyspace_switching(cluster3) -> None:
    response = httpx.post(
        f"{cluster3.http_url(1)}/v1/keyspaces",
        json={"name": "client_ks", "partitioning": "fixed:16"},
        timeout=10,
    )
    assert response.status_code == 201
    keys = keys_by_owner(cluster3, "ks", per_node=3, keyspace="client_ks")
    with Client(seeds(cluster3), keyspace="client_ks") as scoped, Client(seeds(cluster3)) as plain:
        for owned in keys.values():
            for key in owned:
                assert scoped.put(key, b"in-ks:" + key) is True
        for owner, owned in keys.items():
            for key in owned:
                assert scoped.owner_of(key) == owner
                assert scoped.get(key) == b"in-ks:" + key
                assert plain.get(key) is None  # not in the default keyspace
        assert scoped.dbsize() == 9
        assert set(scoped.scan()) == {key for owned in keys.values() for key in owned}
    with redis.Redis(port=cluster3.resp_port(2), single_connection_client=True) as direct:
        direct.execute_command("QUORUMDB.KEYSPACE", "client_ks")
        assert direct.get(keys["node0"][0]) == b"in-ks:" + keys["node0"][0]

    async def scenario() -> None:
        client = await AsyncClient.connect(seeds(cluster3), keyspace="client_ks")
        try:
            key = keys["node1"][0]
            assert await client.get(key) == b"in-ks:" + key
            assert await client.put("async-in-ks", "v") is True
            assert await client.dbsize() == 10
        finally:
            await client.close()

    asyncio.run(scenario())
    with Client(seeds(cluster3)) as plain:
        assert plain.get("async-in-ks") is None
    with pytest.raises(redis.ResponseError, match="unknown keyspace 'no_such_ks'"):
        Client(seeds(cluster3), keyspace="no_such_ks")


@pytest.fixture
def cluster_losing_node2(tmp_path) -> Iterator[LocalTestCluster]:
    """A cluster of its own, so that stopping a node leaves the shared one intact."""
    with LocalTestCluster(3, tmp_path / "losing") as cluster:
        yield cluster


def test_owner_down_fails_fast_for_its_keys_only(cluster_losing_node2) -> None:
    cluster = cluster_losing_node2
    keys = keys_by_owner(cluster, "down", per_node=4)
    sync_client = Client(seeds(cluster), timeout_seconds=5)
    try:
        for owned in keys.values():
            for key in owned:
                assert sync_client.put(key, key)
        assert cluster.stop_node(2) == 0
        for owner in ("node0", "node1"):
            for key in keys[owner]:
                assert sync_client.get(key) == key
                assert sync_client.put(key, b"again") is True
        with redis.Redis(port=cluster.resp_port(0)) as plain:
            # A key whose owner is down is not reported missing: MGET fails instead.
            with pytest.raises(redis.ResponseError, match="UNAVAILABLE|TIMEOUT"):
                plain.mget([keys["node0"][0], keys["node2"][0]])
            assert plain.mget(keys["node0"]) == [b"again"] * len(keys["node0"])
        for key in keys["node2"]:
            started = time.monotonic()
            with pytest.raises(redis.ConnectionError, match="UNAVAILABLE|refused|connect"):
                sync_client.get(key)
            with pytest.raises(redis.ConnectionError):
                sync_client.put(key, b"lost")
            assert time.monotonic() - started < 5.0
    finally:
        sync_client.close()

    async def scenario() -> None:
        client = await AsyncClient.connect(seeds(cluster), timeout_seconds=5)
        try:
            for owner in ("node0", "node1"):
                for key in keys[owner]:
                    assert await client.get(key) == b"again"
            for key in keys["node2"]:
                started = time.monotonic()
                with pytest.raises(redis.ConnectionError):
                    await client.get(key)
                with pytest.raises(redis.ConnectionError):
                    await client.incr(key)
                assert time.monotonic() - started < 5.0
        finally:
            await client.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_stale_map_is_corrected_by_moved(client, cluster3) -> None:
    """A client routing by a wrong map is told the owner (REDIRECT, with the map version),
    refreshes its map from that node and from then on goes straight to owners."""
    keys = keys_by_owner(cluster3, "stale", per_node=5)
    true_map = client.map
    assert true_map is not None
    rotated = {
        name: FixedLayout(keyspace_layout.owners[1:] + keyspace_layout.owners[:1])  # type: ignore[attr-defined]
        for name, keyspace_layout in true_map.layouts.items()
    }
    client.router.map = dataclasses.replace(true_map, layouts=rotated)
    first_key = keys["node0"][0]
    assert client.owner_of(first_key) != "node0"  # the map now lies
    assert client.put(first_key, "v") is True
    assert client.redirects_followed == 1
    assert client.owner_of(first_key) == "node0"  # refreshed from the redirecting node
    for owned in keys.values():
        for key in owned:
            client.put(key, "w")
            assert client.get(key) == b"w"
    assert client.redirects_followed == 1


def test_redirects_are_opt_in_per_connection(cluster3) -> None:
    key = keys_by_owner(cluster3, "optin", per_node=1)["node1"][0]
    with redis.Redis(port=cluster3.resp_port(0)) as plain:
        plain.set(key, "forwarded")  # off by default: forwarded, as any Redis client expects
        assert plain.execute_command("QUORUMDB.REDIRECTS") == b"off"
        assert plain.execute_command("QUORUMDB.REDIRECTS", "ON") == b"OK"
        with pytest.raises(redis.ResponseError) as raised:
            plain.get(key)
        message = str(raised.value)
        assert message.startswith("REDIRECT") and "node1" in message
        assert f"127.0.0.1:{cluster3.resp_port(1)}" in message and "map version" in message
        assert plain.execute_command("QUORUMDB.REDIRECTS", "off") == b"OK"
        assert plain.get(key) == b"forwarded"
        with pytest.raises(redis.ResponseError, match="usage"):
            plain.execute_command("QUORUMDB.REDIRECTS", "sometimes")
