"""A key-range keyspace on real processes grows past its split size: it splits on its
own (automatic mode), the ranges spread over the nodes, and reads, ordered scans and
the Python client keep finding every key."""

from __future__ import annotations

import time

import httpx
import redis

from quorumdb.client import Client

SPEC = "range:split_bytes=16384,split_ops_per_second=1000000,merge_bytes=4096"
SPLIT_TIMEOUT_SECONDS = 90.0


def test_a_range_keyspace_splits_while_it_grows(cluster3) -> None:
    url = cluster3.http_url(0)
    mode = httpx.put(f"{url}/v1/rebalance", json={"mode": "automatic"})
    assert mode.status_code == 200, mode.text
    created = httpx.post(f"{url}/v1/keyspaces", json={"name": "events", "partitioning": SPEC})
    assert created.status_code == 201, created.text
    seeds = [f"127.0.0.1:{cluster3.resp_port(index)}" for index in range(3)]
    expected = {b"event:%05d" % ((index * 7919) % 50_000): b"x" * 200 for index in range(500)}
    deadline = time.monotonic() + SPLIT_TIMEOUT_SECONDS
    layout: dict[str, object] = {}
    with Client(seeds, keyspace="events") as client:
        for key, value in expected.items():
            assert client.put(key, value) is True
        while time.monotonic() < deadline:
            document = httpx.get(f"{cluster3.http_url(1)}/v1/cluster").json()
            layout = document["keyspaces"]["events"]["layout"]
            rebalance = document["rebalance"]
            if layout["strategy"] != "range":  # a plan is switching it ("transition")
                time.sleep(0.2)
                continue
            owners = set(layout["owners"])  # type: ignore[arg-type]
            if len(owners) == 3 and rebalance["state"] in (None, "done"):
                break
            time.sleep(0.5)
        print("layout:", layout)
        assert len(set(layout["owners"])) == 3, layout  # type: ignore[arg-type]
        assert len(layout["partition_ids"]) >= 3, layout  # type: ignore[arg-type]
        # The client's map was the single first range: it follows redirects to the rest.
        for key, value in expected.items():
            assert client.get(key) == value
        assert [key for key, _ in client.range()] == sorted(expected)
    for index in range(3):
        with redis.Redis(port=cluster3.resp_port(index)) as plain:
            plain.execute_command("QUORUMDB.KEYSPACE", "events")
            keys = sorted(expected)[::37]
            assert plain.mget(keys) == [expected[key] for key in keys]
            # Counts converge once the sources have swept out the keys they handed over.
            settle_deadline = time.monotonic() + 10.0
            while plain.dbsize() != len(expected) and time.monotonic() < settle_deadline:
                time.sleep(0.2)
            assert plain.dbsize() == len(expected)
