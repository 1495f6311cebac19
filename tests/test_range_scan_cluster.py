"""Ordered range scans on a real 3-node cluster, through HTTP, RESP (QUORUMDB.RANGE), the
Python clients and the CLI: key order across partitions, one partition for a hash-tagged
range, exact pagination with tiny pages, and clear refusals of bad input."""

from __future__ import annotations

import asyncio
import base64
import random
import subprocess
import sys

import httpx
import pytest
import redis

from quorumdb.client import AsyncClient, Client

USER_KEYS = [b"user:%04d" % number for number in range(300)]
POST_KEYS = [b"{user:7}:post:%03d" % number for number in range(200)]
OTHER_POSTS = [b"{user:%d}:post:%03d" % (user, n) for user in (6, 8) for n in range(20)]
EVERYTHING = sorted(USER_KEYS + POST_KEYS + OTHER_POSTS)  # "{" sorts after "u"


def create(cluster3, name: str, spec: str) -> None:
    created = httpx.post(
        f"{cluster3.http_url(0)}/v1/keyspaces", json={"name": name, "partitioning": spec}
    )
    assert created.status_code == 201, created.text


def seeds(cluster3) -> list[str]:
    return [f"127.0.0.1:{cluster3.resp_port(index)}" for index in range(3)]


@pytest.fixture(scope="module")
def loaded(cluster3):
    """Keyspaces `ranged` (range) and `hashed` (fixed:16) holding the same keys, written
    in a shuffled order."""
    create(cluster3, "ranged", "range:split_bytes=4KiB")
    create(cluster3, "hashed", "fixed:16")
    keys = USER_KEYS + POST_KEYS + OTHER_POSTS
    shuffled = random.Random(5).sample(keys, len(keys))
    for name in ("ranged", "hashed"):
        with Client(seeds(cluster3), keyspace=name) as client:
            for key in shuffled:
                assert client.put(key, key.upper())
    return cluster3


def http_range(cluster, name: str, node: int = 0, **parameters: object) -> httpx.Response:
    return httpx.get(
        f"{cluster.http_url(node)}/v1/keyspaces/{name}/range", params=parameters, timeout=30
    )


def http_all(cluster, name: str, limit: int, **parameters: object) -> tuple[list[str], int]:
    """Every page via `after`; the keys, and the partition requests of the busiest page."""
    keys: list[str] = []
    after: str | None = None
    most_requests = 0
    for node in range(1000):
        extra = {} if after is None else {"after": after}
        response = http_range(cluster, name, node % 3, limit=limit, **parameters, **extra)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= limit
        keys.extend(item["key"] for item in body["items"])
        most_requests = max(most_requests, body["partition_requests"])
        after = body["next"]
        if after is None:
            return keys, most_requests
    raise AssertionError("the scan did not end")


def texts(keys: list[bytes]) -> list[str]:
    return [key.decode() for key in keys]


@pytest.mark.parametrize("name", ["ranged", "hashed"])
def test_http_range_is_in_key_order_across_partitions(loaded, name: str) -> None:
    keys, _ = http_all(loaded, name, 10_000)
    assert keys == texts(EVERYTHING)
    body = http_range(loaded, name, start="user:0100", end="user:0105").json()
    assert body["items"][0] == {
        "key": "user:0100",
        "value": "USER:0100",
        "key_encoding": "utf-8",
        "value_encoding": "utf-8",
    }
    assert [item["key"] for item in body["items"]] == texts(USER_KEYS[100:105])
    assert body["next"] is None
    keys_only = http_range(loaded, name, start="user:0100", end="user:0102", keys_only="true")
    assert keys_only.json()["items"] == [
        {"key": "user:0100", "key_encoding": "utf-8"},
        {"key": "user:0101", "key_encoding": "utf-8"},
    ]


@pytest.mark.parametrize(
    ("name", "limit"), [("ranged", 1), ("ranged", 7), ("hashed", 1), ("hashed", 3), ("hashed", 50)]
)
def test_tiny_pages_give_exactly_the_ordered_set(loaded, name: str, limit: int) -> None:
    keys, most_requests = http_all(loaded, name, limit, start="user:0040", end="user:0090")
    assert keys == texts(USER_KEYS[40:90])
    if name == "ranged":  # one range holds everything until splits run in clusters
        assert most_requests == 1
    else:
        assert most_requests >= 16  # every partition asked at least once per page


@pytest.mark.parametrize("name", ["ranged", "hashed"])
def test_a_hash_tagged_range_asks_one_partition_per_page(loaded, name: str) -> None:
    keys, most_requests = http_all(
        loaded, name, 25, start="{user:7}:post:000", end="{user:7}:post:999"
    )
    assert keys == texts(POST_KEYS)
    assert most_requests == 1
    with Client(seeds(loaded), keyspace=name) as client:
        layout = client.map.layouts[name]
        route = layout.partitions_for_range(b"{user:7}:post:000", b"{user:7}:post:999")
        assert len(route.partition_ids) == 1 and route.in_key_order


def test_resp_range_command(loaded) -> None:
    for index in range(3):
        with redis.Redis(port=loaded.resp_port(index)) as plain:
            plain.execute_command("QUORUMDB.KEYSPACE", "hashed")
            token, flat = plain.execute_command("QUORUMDB.RANGE", "user:0010", "user:0013")
            assert token == b""
            assert flat == [b"user:0010", b"USER:0010", b"user:0011", b"USER:0011",
                            b"user:0012", b"USER:0012"]  # fmt: skip
            token, flat = plain.execute_command(
                "QUORUMDB.RANGE", "user:0010", "user:0020", "LIMIT", "4", "KEYSONLY"
            )
            assert flat == USER_KEYS[10:14] and token
            token, flat = plain.execute_command(
                "QUORUMDB.RANGE", "user:0010", "user:0020", "limit", "100", "after", token,
                "keysonly",
            )  # fmt: skip
            assert flat == USER_KEYS[14:20] and token == b""
            # An empty end: to the end of the keyspace.
            token, flat = plain.execute_command(
                "QUORUMDB.RANGE", "{user:8}:post:015", "", "KEYSONLY"
            )
            assert flat == EVERYTHING[-5:] and token == b""


def test_python_clients_iterate_in_order(loaded) -> None:
    with Client(seeds(loaded), keyspace="hashed") as client:
        pairs = list(client.range("user:0000", "user:0100", page_size=13))
        assert pairs == [(key, key.upper()) for key in USER_KEYS[:100]]
        assert list(client.range_keys("{user:7}:", "{user:7};")) == POST_KEYS
        assert list(client.range_keys("user:", limit=5)) == USER_KEYS[:5]
        assert list(client.range_keys("{user:8}:post:019\x00")) == []

    async def asynchronous() -> list[tuple[bytes, bytes]]:
        client = await AsyncClient.connect(seeds(loaded), keyspace="ranged")
        try:
            keys = [key async for key in client.range_keys("user:0200", "user:0203")]
            assert keys == USER_KEYS[200:203]
            return [pair async for pair in client.range("user:0200", "user:0210", page_size=3)]
        finally:
            await client.close()

    assert asyncio.run(asynchronous()) == [(key, key.upper()) for key in USER_KEYS[200:210]]


def test_cli_scan_with_bounds_prints_keys_in_order(loaded) -> None:
    def quorumdb(*arguments: str) -> subprocess.CompletedProcess[str]:
        node = ["--node", f"127.0.0.1:{loaded.resp_port(1)}", "--keyspace", "hashed"]
        return subprocess.run(
            [sys.executable, "-m", "quorumdb", "scan", *arguments, *node],
            capture_output=True,
            text=True,
            timeout=60,
        )

    bounded = quorumdb("--start", "user:0050", "--end", "user:0060")
    assert bounded.returncode == 0, bounded.stderr
    assert bounded.stdout.split() == texts(USER_KEYS[50:60])
    limited = quorumdb("--start", "user:0295", "--limit", "3")
    assert limited.stdout.split() == texts(USER_KEYS[295:298])
    backwards = quorumdb("--start", "b", "--end", "a")
    assert backwards.returncode == 2 and "--end must be greater" in backwards.stderr


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"start": "b", "end": "a"}, "end must be greater than start"),
        ({"start": "a", "end": "a"}, "end must be greater than start"),
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"start": "not base64!", "encoding": "base64"}, "start is not valid base64"),
        ({"end": "%%%", "encoding": "base64"}, "end is not valid base64"),
        ({"after": "!!"}, "malformed continuation token"),
    ],
)
def test_bad_http_input_is_refused_clearly(loaded, parameters: dict, message: str) -> None:
    response = http_range(loaded, "hashed", **parameters)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid-argument"
    assert message in response.json()["message"]


def test_binary_bounds_and_unknown_keyspace_over_http(loaded) -> None:
    start = base64.b64encode(b"user:0007").decode()
    end = base64.b64encode(b"user:0009").decode()
    body = http_range(loaded, "hashed", start=start, end=end, encoding="base64").json()
    assert [base64.b64decode(item["key"]) for item in body["items"]] == USER_KEYS[7:9]
    missing = http_range(loaded, "no-such-keyspace")
    assert missing.status_code == 404 and missing.json()["error"] == "unknown-keyspace"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["b", "a"], "end must be greater than start"),
        (["a", "b", "LIMIT", "0"], "limit must be between 1 and 10000"),
        (["a", "b", "LIMIT", "x"], "syntax error"),
        (["a", "b", "LIMIT"], "syntax error"),
        (["a", "b", "KEYSONLY", "KEYSONLY"], "syntax error"),
        (["a", "b", "AFTER", "!!"], "malformed continuation token"),
        (["a"], "wrong number of arguments"),
    ],
)
def test_bad_resp_input_is_refused_clearly(loaded, arguments: list[str], message: str) -> None:
    with (
        redis.Redis(port=loaded.resp_port(0)) as plain,
        pytest.raises(redis.ResponseError) as error,
    ):
        plain.execute_command("QUORUMDB.RANGE", *arguments)
    assert message in str(error.value)
