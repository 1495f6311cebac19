"""HTTP/JSON API of a real 3-node cluster: keys, keyspaces, scans, cluster view, metrics."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from quorumdb.core.partitioning import partition_of


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def nodes(cluster3) -> Iterator[list[httpx.Client]]:
    clients = [httpx.Client(base_url=cluster3.http_url(i), timeout=20) for i in range(3)]
    yield clients
    for client in clients:
        client.close()


def key_url(key: str, keyspace: str = "default") -> str:
    return f"/v1/keyspaces/{keyspace}/keys/{key}"


def test_put_get_delete_utf8(nodes) -> None:
    first, second, third = nodes
    assert first.put(key_url("greeting"), json={"value": "héllo wörld ✓"}).json() == {
        "written": True
    }
    for node in nodes:
        response = node.get(key_url("greeting"))
        assert response.status_code == 200
        assert response.json() == {
            "key": "greeting",
            "value": "héllo wörld ✓",
            "encoding": "utf-8",
        }
    assert second.delete(key_url("greeting")).json() == {"deleted": True}
    assert third.delete(key_url("greeting")).json() == {"deleted": False}
    missing = first.get(key_url("greeting"))
    assert missing.status_code == 404
    assert missing.json()["error"] == "not-found"


def test_binary_keys_and_values_round_trip(nodes, cluster3) -> None:
    key = b"bin\r\n\x00\xff/key"
    value = os.urandom(4096) + b"\r\n\x00"
    url = key_url(b64(key))
    written = nodes[0].put(
        url, params={"key_encoding": "base64"}, json={"value": b64(value), "encoding": "base64"}
    )
    assert written.json() == {"written": True}
    read = nodes[1].get(url, params={"encoding": "base64"}).json()
    assert read["encoding"] == "base64"
    assert base64.b64decode(read["value"]) == value
    with redis.Redis(port=cluster3.resp_port(2)) as client:
        assert client.get(key) == value  # the same bytes through RESP
        client.set(b"text-key", b"\xfe\xff not utf-8")
    # A value that is not UTF-8 comes back as base64 even when UTF-8 was asked for.
    fallback = nodes[2].get(key_url("text-key")).json()
    assert fallback["encoding"] == "base64"
    assert base64.b64decode(fallback["value"]) == b"\xfe\xff not utf-8"
    assert nodes[2].delete(url, params={"key_encoding": "base64"}).json() == {"deleted": True}
    assert nodes[0].get(url, params={"encoding": "base64"}).status_code == 404


def test_conditional_writes_and_expiry(nodes) -> None:
    first, second, _ = nodes
    assert first.put(key_url("cond"), json={"value": "a", "if_present": True}).json() == {
        "written": False
    }
    assert second.get(key_url("cond")).status_code == 404
    assert first.put(key_url("cond"), json={"value": "a", "if_absent": True}).json() == {
        "written": True
    }
    assert second.put(key_url("cond"), json={"value": "b", "if_absent": True}).json() == {
        "written": False
    }
    assert first.get(key_url("cond")).json()["value"] == "a"
    assert second.put(key_url("cond"), json={"value": "c", "if_present": True}).json() == {
        "written": True
    }
    assert first.get(key_url("cond")).json()["value"] == "c"
    both = first.put(key_url("cond"), json={"value": "d", "if_absent": True, "if_present": True})
    assert both.status_code == 400
    assert first.get(key_url("cond")).json()["value"] == "c"

    started = time.monotonic()
    written = first.put(key_url("ttl"), json={"value": "soon gone", "expire_ms": 700})
    assert written.status_code == 200
    assert second.get(key_url("ttl")).status_code == 200
    assert time.monotonic() - started < 0.7, "machine too slow for this check"
    time.sleep(max(0.0, started + 1.0 - time.monotonic()))
    assert second.get(key_url("ttl")).status_code == 404
    for bad_expiry in (0, -5, 2**63 - 1):
        response = first.put(key_url("ttl2"), json={"value": "x", "expire_ms": bad_expiry})
        assert response.status_code == 400, response.text
    assert first.get(key_url("ttl2")).status_code == 404


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b'{"value": "x"', JSON),  # truncated JSON
        (b"not json at all", JSON),
        (b'["value", "x"]', JSON),
        (b'{"value": 5}', JSON),
        (b'{"value": null}', JSON),
        (b'{"value": "x", "expire_ms": "soon"}', JSON),
        (b'{"value": "x", "expire_ms": 1.5}', JSON),
        (b'{"value": "x", "if_absent": "maybe"}', JSON),
        (b'{"value": "x", "encoding": "latin-1"}', JSON),
        (b'{"value": "!!not base64!!", "encoding": "base64"}', JSON),
        (b'{"value": "YWJj", "encoding": "base64"}', {}),  # valid JSON, no JSON content type
        (b"{}", JSON),
    ],
)
def test_malformed_writes_are_rejected_and_write_nothing(nodes, body, headers) -> None:
    response = nodes[1].put(key_url("malformed"), content=body, headers=headers)
    assert response.status_code == 400, response.text
    document = response.json()
    assert document["error"] == "invalid-argument"
    assert document["message"]
    assert nodes[0].get(key_url("malformed")).status_code == 404


def test_invalid_base64_key_is_rejected(nodes) -> None:
    response = nodes[0].put(key_url("%%%"), params={"key_encoding": "base64"}, json={"value": "x"})
    assert response.status_code == 400
    assert response.json()["message"] == "key is not valid base64"
    assert nodes[0].get(key_url("%%%"), params={"encoding": "base64"}).status_code == 400
    assert nodes[0].get(key_url("bad"), params={"encoding": "utf-16"}).status_code == 400


def test_keyspaces_create_list_and_use(nodes, cluster3) -> None:
    first, second, third = nodes
    body = {"name": "orders", "partitioning": "fixed:16"}
    created = first.post("/v1/keyspaces", json=body)
    assert created.status_code == 201
    assert created.json() == {
        "created": True,
        "keyspace": {
            "name": "orders",
            "partitioning": "fixed:16",
            "replication_factor": 1,
        },
    }
    again = second.post("/v1/keyspaces", json=body)
    assert again.status_code == 200
    assert again.json()["created"] is False
    conflict = third.post("/v1/keyspaces", json={"name": "orders", "partitioning": "fixed:8"})
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "keyspace-exists"
    for bad in (
        {"name": "bad name!"},
        {"name": ""},
        {"name": "x" * 65},
        {"name": "ok", "partitioning": "hash:4"},
        {"name": "ok", "partitioning": "fixed:0"},
        {"name": "ok", "partitioning": "fixed:many"},
        {"partitioning": "fixed:4"},
    ):
        response = first.post("/v1/keyspaces", json=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"] == "invalid-argument"
    for node in nodes:
        listed = node.get("/v1/keyspaces").json()["keyspaces"]
        names = [keyspace["name"] for keyspace in listed]
        assert "default" in names and "orders" in names and "ok" not in names
    # Written through one node, read through the others, invisible in "default".
    assert third.put(key_url("o-1", "orders"), json={"value": "widget"}).json()["written"]
    assert second.get(key_url("o-1", "orders")).json()["value"] == "widget"
    assert first.get(key_url("o-1")).status_code == 404
    with redis.Redis(port=cluster3.resp_port(0), single_connection_client=True) as client:
        client.execute_command("QUORUMDB.KEYSPACE", "orders")
        assert client.get("o-1") == b"widget"
    unknown = first.get(key_url("o-1", "no-such-keyspace"))
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown-keyspace"


def test_scan_pages_return_every_key_once(nodes) -> None:
    first = nodes[0]
    assert first.post("/v1/keyspaces", json={"name": "scanned"}).status_code == 201
    written = {f"k{index:04d}": f"v{index}" for index in range(250)}
    for index, (key, value) in enumerate(written.items()):
        response = nodes[index % 3].put(key_url(key, "scanned"), json={"value": value})
        assert response.status_code == 200
    seen: list[tuple[str, str]] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, object] = {"limit": 40}
        if cursor is not None:
            params["cursor"] = cursor
        # Each page through another node: a cursor is not tied to the node that made it.
        page = nodes[pages % 3].get("/v1/keyspaces/scanned/scan", params=params)
        assert page.status_code == 200, page.text
        document = page.json()
        assert len(document["items"]) <= 40
        seen += [(item["key"], item["value"]) for item in document["items"]]
        pages += 1
        cursor = document["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(written)
    assert dict(seen) == written
    assert pages >= len(written) // 40
    everything = first.get("/v1/keyspaces/scanned/scan", params={"limit": 10_000}).json()
    assert len(everything["items"]) == 250 and everything["next_cursor"] is None
    assert first.get("/v1/keyspaces/scanned/scan", params={"limit": 0}).status_code == 400
    assert first.get("/v1/keyspaces/scanned/scan", params={"cursor": "garbage"}).status_code == 400
    assert first.get("/v1/keyspaces/nope/scan").status_code == 404


def test_cluster_view_and_health(nodes, cluster3) -> None:
    for index, node in enumerate(nodes):
        document = node.get("/v1/cluster").json()
        assert document["node"] == f"node{index}"
        assert isinstance(document["version"], int) and document["version"] >= 1
        members = document["members"]
        assert [m["node_id"] for m in members] == ["node0", "node1", "node2"]
        for position, member in enumerate(members):
            harness = cluster3.members[position]
            assert member == {
                "node_id": harness.node_id,
                "host": "127.0.0.1",
                "peer_port": harness.peer_port,
                "resp_port": harness.resp_port,
                "http_port": harness.http_port,
                "health": "alive",  # the failure detector's view from the asked node
            }
        default = document["keyspaces"]["default"]
        owners = default["layout"]["owners"]
        assert default["partition_count"] == len(owners) == 64
        assert default["partitioning"] == "fixed:64" and set(owners) == {"node0", "node1", "node2"}
        # The owner listed for a key's partition is the node that holds it.
        owner = owners[partition_of(b"where-am-i", 64)]
        owner_index = int(owner.removeprefix("node"))
        with redis.Redis(port=cluster3.resp_port(owner_index)) as client:
            client.set("where-am-i", "here")
        assert nodes[owner_index].get(key_url("where-am-i")).json()["value"] == "here"
        health = node.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "node": f"node{index}"}


def scrape(node: httpx.Client) -> dict[str, object]:
    response = node.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def sample_value(family, name: str, **labels: str) -> float:
    for sample in family.samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise AssertionError(f"no sample {name} {labels}")


def test_metrics_exposition(nodes, cluster3) -> None:
    node = nodes[2]

    def requests_of(families: dict[str, object], operation: str) -> float:
        if "quorumdb_requests" not in families:
            return 0.0
        samples = families["quorumdb_requests"].samples  # type: ignore[attr-defined]
        found = [s.value for s in samples if s.labels["operation"] == operation]
        return found[0] if found else 0.0

    before = scrape(node)
    node.put(key_url("metric-key"), json={"value": "v"})
    for _ in range(30):
        assert node.get(key_url("metric-key")).status_code == 200
    with redis.Redis(port=cluster3.resp_port(2)) as client:
        # Commands over several keys or partitions are counted too, one per command.
        client.mset({"metric-a": "1", "metric-b": "2"})
        client.mget("metric-a", "metric-b")
        client.exists("metric-a")
        client.delete("metric-a")
        client.dbsize()
        client.scan(0)
        families = scrape(node)  # with this RESP connection open
        for operation, at_least in (("get", 30), ("set", 1), ("mset", 1), ("mget", 1)):
            assert requests_of(families, operation) >= requests_of(before, operation) + at_least
        for operation in ("exists", "del", "count", "scan"):
            assert requests_of(families, operation) >= requests_of(before, operation) + 1
        requests = families["quorumdb_requests"]
        assert requests.type == "counter"
        assert sample_value(requests, "quorumdb_requests_total", operation="get", node="node2")
        latency = families["quorumdb_request_latency_seconds"]
        assert latency.type == "histogram"
        buckets = [
            s for s in latency.samples
            if s.name.endswith("_bucket") and s.labels["operation"] == "get"
        ]  # fmt: skip
        assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value >= 30
        assert [b.value for b in buckets] == sorted(b.value for b in buckets)
        count = sample_value(latency, "quorumdb_request_latency_seconds_count", operation="get")
        assert count == buckets[-1].value
        assert sample_value(latency, "quorumdb_request_latency_seconds_sum", operation="get") > 0
        clients = families["quorumdb_active_clients"]
        assert clients.type == "gauge"
        assert sample_value(clients, "quorumdb_active_clients", node="node2") >= 1
        assert sample_value(families["quorumdb_storage_bytes"], "quorumdb_storage_bytes") > 0
        ratio = families["quorumdb_read_write_ratio"]
        assert ratio.type == "gauge"
        assert sample_value(ratio, "quorumdb_read_write_ratio") > 0
        assert families["quorumdb_fsync_seconds"].type == "counter"
        # fsync 'always' (the cluster's): groups are made durable by the write-ahead log.
        assert sample_value(families["quorumdb_wal_bytes"], "quorumdb_wal_bytes") > 0
        assert families["quorumdb_wal_spare_bytes"].type == "gauge"
        assert families["quorumdb_event_loop_stalls"].type == "counter"
        assert families["quorumdb_event_loop_stall_seconds"].type == "counter"
        assert families["quorumdb_event_loop_longest_stall_seconds"].type == "gauge"
        assert families["quorumdb_checkpoints"].type == "counter"
        assert families["quorumdb_checkpoint_seconds"].type == "counter"
        assert families["quorumdb_wal_records_replayed"].type == "counter"
        assert families["quorumdb_memtable_writes"].type == "gauge"
        assert families["quorumdb_memtable_bytes"].type == "gauge"
        assert families["quorumdb_memtable_flushes"].type == "counter"
        pauses = families["quorumdb_gc_pause_seconds"]
        assert pauses.type == "counter"
        assert {s.labels["generation"] for s in pauses.samples} == {"0", "1", "2"}
    # Rates are sampled once a second: within a few seconds the burst shows.
    deadline = time.monotonic() + 3.0
    rate = 0.0
    while time.monotonic() < deadline:
        for _ in range(20):
            node.get(key_url("metric-key"))
        per_second = scrape(node)["quorumdb_requests_per_second"]
        assert per_second.type == "gauge"
        rate = sample_value(per_second, "quorumdb_requests_per_second", operation="get")
        if rate > 0:
            break
        time.sleep(0.2)
    assert rate > 0


def test_openapi_lists_the_paths(nodes) -> None:
    document = nodes[0].get("/openapi.json").json()
    paths = document["paths"]
    key_path = "/v1/keyspaces/{keyspace}/keys/{key}"
    assert set(paths[key_path]) >= {"get", "put", "delete"}
    assert "get" in paths["/v1/keyspaces/{keyspace}/scan"]
    assert set(paths["/v1/keyspaces"]) >= {"get", "post"}
    for path in ("/v1/cluster", "/healthz", "/metrics"):
        assert path in paths
    assert document["info"]["title"] == "quorumdb"


def test_lost_found_routes_on_every_node(nodes) -> None:
    """No failover has undone anything here: every node lists nothing, counts 0, and
    refuses malformed, misdirected and unknown ids without writing (the routes over
    real lost writes: tests/test_lost_found_api.py)."""
    entry_key = b"orders\x00" + bytes(24)
    for index, node in enumerate(nodes):
        listing = node.get("/v1/lostfound")
        assert listing.status_code == 200
        assert listing.json() == {
            "node": f"node{index}",
            "pending": 0,
            "entries": [],
            "next": None,
        }
        gauge = scrape(node)["quorumdb_lost_found_entries"]
        assert gauge.type == "gauge"
        assert sample_value(gauge, "quorumdb_lost_found_entries", node=f"node{index}") == 0
    first = nodes[0]
    for entry_id, status, error in (
        ("no-colon", 400, "invalid-argument"),
        ("node0:zz", 400, "invalid-argument"),
        ("node1:" + entry_key.hex(), 421, "wrong-node"),
        ("node0:" + entry_key.hex(), 404, "not-found"),
    ):
        for response in (
            first.post(f"/v1/lostfound/{entry_id}/replay"),
            first.delete(f"/v1/lostfound/{entry_id}"),
        ):
            assert response.status_code == status, (entry_id, response.text)
            assert response.json()["error"] == error
    assert first.get("/v1/lostfound", params={"limit": 0}).status_code == 400
    assert first.get("/v1/lostfound", params={"after": "xyz"}).status_code == 400
    assert first.get("/v1/lostfound").json()["entries"] == []
    paths = first.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/lostfound/{entry_id}"]) == {"get", "delete"}
    assert "post" in paths["/v1/lostfound/{entry_id}/replay"]
