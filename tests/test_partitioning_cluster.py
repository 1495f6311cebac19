"""Every partitioning strategy serving a real 3-node cluster: clients and nodes agree on
where each key lives, and every node answers for every key."""

from __future__ import annotations

import httpx
import pytest
import redis

from quorumdb.client import Client

SPECS = ["mod-n", "fixed:16", "range", "per-node:4", "ring:vnodes=32", "ring"]


@pytest.mark.parametrize("spec", SPECS)
def test_strategy_serves_reads_and_writes_through_every_node(cluster3, spec: str) -> None:
    name = "ks_" + spec.replace(":", "_").replace("=", "_").replace("-", "_")
    created = httpx.post(
        f"{cluster3.http_url(0)}/v1/keyspaces", json={"name": name, "partitioning": spec}
    )
    assert created.status_code == 201, created.text
    seeds = [f"127.0.0.1:{cluster3.resp_port(index)}" for index in range(3)]
    keys = [f"{spec}:{index}".encode() for index in range(150)]
    keys += [b"{user:7}:post:%03d" % index for index in range(10)]  # one hash tag
    with Client(seeds, keyspace=name) as client:
        for key in keys:
            assert client.put(key, key) is True
        # The client located every key where the nodes do: no redirect was needed.
        assert client.redirects_followed == 0
        owners = {client.owner_of(key) for key in keys}
        if spec != "range":  # one range holds every key until it grows past the split size
            assert owners == {"node0", "node1", "node2"}
        tagged = {client.owner_of(key) for key in keys if key.startswith(b"{user:7}")}
        assert len(tagged) == 1  # a hash tag keeps a compound key's rows together
    for index in range(3):
        with redis.Redis(port=cluster3.resp_port(index)) as plain:
            plain.execute_command("QUORUMDB.KEYSPACE", name)
            assert plain.mget(keys[::7]) == keys[::7]
            assert plain.dbsize() == len(keys)
            assert set(plain.scan_iter(count=50)) == set(keys)
    listed = httpx.get(f"{cluster3.http_url(1)}/v1/keyspaces").json()["keyspaces"]
    assert {
        "name": name,
        "partitioning": created.json()["keyspace"]["partitioning"],
        "replication_factor": 1,
    } in listed


def test_unknown_strategies_and_parameters_are_refused_clearly(cluster3) -> None:
    url = f"{cluster3.http_url(0)}/v1/keyspaces"
    for spec, expected in (
        ("hash-ring", "unknown partitioning"),
        ("ring:vnodes=0", "vnodes"),
        ("fixed:lots", "whole number"),
        ("range:split_bytes=1MiB,colour=red", "unknown parameter"),
    ):
        refused = httpx.post(url, json={"name": "refused", "partitioning": spec})
        assert refused.status_code == 400, (spec, refused.text)
        assert expected in refused.json()["message"], (spec, refused.text)
