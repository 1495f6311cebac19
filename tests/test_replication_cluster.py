"""A single-leader keyspace on real processes: created from the CLI, writes replicated
to every replica and answered with their acknowledgements, lag in /v1/cluster and
/metrics, and a SIGKILLed leader failed over while the survivors keep every
acknowledged write."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import redis

from cluster_harness import LocalTestCluster
from quorumdb.client import Client

FAILOVER_TIMEOUT_SECONDS = 60.0


def leaders(cluster: LocalTestCluster, index: int) -> dict[int, tuple[int, str]]:
    """partition -> (epoch, leader), as node `index` sees it."""
    document = httpx.get(f"{cluster.http_url(index)}/v1/cluster", timeout=5).json()
    layout = document["keyspaces"]["orders"]["layout"]
    assert layout["strategy"] == "leaders"
    epochs = {row["partition"]: row["epoch"] for row in document["replicas"]}
    return {
        int(partition): (epochs.get(int(partition), 0), leader)
        for partition, leader in layout["leaders"].items()
    }


def test_replicated_writes_survive_a_killed_leader(tmp_path) -> None:
    with LocalTestCluster(3, tmp_path) as cluster:
        created = subprocess.run(
            [
                sys.executable, "-m", "quorumdb", "keyspace", "create", "orders",
                "--partitioning", "fixed:6", "--replication", "single-leader",
                "--replicas", "3", "--sync", "majority",
                "--http", f"127.0.0.1:{cluster.members[0].http_port}",
            ],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        url = cluster.http_url(1)
        written = httpx.put(f"{url}/v1/keyspaces/orders/keys/first", json={"value": "1"})
        assert written.status_code == 200, written.text
        assert written.json()["acks"] >= 1 and written.json()["position"][0] == 1
        keys = [b"order:%d" % index for index in range(60)]
        with redis.Redis(port=cluster.resp_port(0)) as client:
            client.execute_command("QUORUMDB.KEYSPACE", "orders")
            for key in keys:
                assert client.set(key, b"v-" + key)
        cluster_view = httpx.get(f"{cluster.http_url(0)}/v1/cluster").json()
        roles = {row["role"] for row in cluster_view["replicas"]}
        assert roles == {"leader", "follower"}
        metrics = httpx.get(f"{cluster.http_url(0)}/metrics").text
        assert "quorumdb_replication_lag_entries{" in metrics
        assert "quorumdb_replication_changes_proposed{" in metrics
        assert "quorumdb_replica_is_leader{" in metrics
        # Kill a node that leads partitions (not the controller leader, to time only
        # the data failover).
        controller = cluster.wait_controller_leader()
        before = leaders(cluster, 0)
        victim = next(
            index
            for index in range(3)
            if f"node{index}" != controller and f"node{index}" in {n for _, n in before.values()}
        )
        survivor = next(index for index in range(3) if index != victim)
        cluster.kill_node(victim)
        killed_at = time.monotonic()
        deadline = killed_at + FAILOVER_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            now = leaders(cluster, survivor)
            if all(leader != f"node{victim}" for _, leader in now.values()):
                break
            time.sleep(0.2)
        failover_seconds = time.monotonic() - killed_at
        print(f"failover of node{victim}'s partitions took {failover_seconds:.1f} s")
        now = leaders(cluster, survivor)
        assert all(leader != f"node{victim}" for _, leader in now.values()), now
        with redis.Redis(port=cluster.resp_port(survivor), socket_timeout=10) as client:
            client.execute_command("QUORUMDB.KEYSPACE", "orders")
            for key in keys:
                assert client.get(key) == b"v-" + key  # majority: nothing acknowledged lost
                assert client.set(key, b"after-" + key)
        # The dead node comes back as a follower and catches up.
        cluster.start_node(victim)
        deadline = time.monotonic() + FAILOVER_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            rows = httpx.get(f"{cluster.http_url(victim)}/v1/cluster").json()["replicas"]
            if rows and all(row["role"] == "follower" for row in rows):
                break
            time.sleep(0.2)
        assert all(row["role"] == "follower" for row in rows), rows


def test_sessions_and_per_request_modes_over_resp_and_http(tmp_path) -> None:
    with LocalTestCluster(3, tmp_path) as cluster:
        body = {"name": "orders", "partitioning": "fixed:4", "replication": "single-leader",
                "replicas": 3, "sync": "majority"}  # fmt: skip
        created = httpx.post(f"{cluster.http_url(0)}/v1/keyspaces", json=body)
        assert created.status_code == 201, created.text
        assert created.json()["keyspace"]["sync"] == "majority"
        with redis.Redis(port=cluster.resp_port(0)) as writer:
            writer.execute_command("QUORUMDB.KEYSPACE", "orders")
            ok, acks, epoch, sequence = writer.execute_command("QUORUMDB.SET", "cart", "3 items")
            assert ok == b"OK" and acks >= 1 and epoch == 1 and sequence >= 1
            quick = writer.execute_command("QUORUMDB.SET", "cart", "4 items", "SYNC", "async")
            assert quick[0] == b"OK"
            token = (quick[2], quick[3])
            try:
                writer.execute_command("QUORUMDB.SET", "cart", "x", "SYNC", "quorum")
            except redis.ResponseError as error:
                assert "expected SYNC" in str(error)
            else:
                raise AssertionError("an unknown sync mode was accepted")
        # Read your write at every node, wherever the replica: the session token.
        for index in range(3):
            with redis.Redis(port=cluster.resp_port(index)) as reader:
                reader.execute_command("QUORUMDB.KEYSPACE", "orders")
                value, epoch, sequence = reader.execute_command(
                    "QUORUMDB.GET", "cart", "AFTER", *token
                )
                assert value == b"4 items" and (epoch, sequence) >= token
                eventual = reader.execute_command("QUORUMDB.GET", "cart", "CONSISTENCY", "eventual")
                assert eventual[0] in (b"3 items", b"4 items")
        url = f"{cluster.http_url(2)}/v1/keyspaces/orders/keys/cart"
        session = httpx.get(url, params={"after": f"{token[0]}.{token[1]}"})
        assert session.status_code == 200 and session.json()["value"] == "4 items"
        assert session.json()["token"].count(".") == 1
        bounded = httpx.get(url, params={"max_lag_ms": 5000})
        assert bounded.status_code == 200
        bad = httpx.get(url, params={"after": "soon"})
        assert bad.status_code == 400 and "EPOCH.SEQUENCE" in bad.json()["message"]
        written = httpx.put(url, params={"sync": "all"}, json={"value": "5 items"})
        assert written.status_code == 200 and written.json()["acks"] == 2
        # The Python client's sessions: every read sees the session's own last write,
        # wherever it lands (random replicas, or one replica per user).
        seeds = [f"127.0.0.1:{cluster.resp_port(index)}" for index in range(3)]
        with Client(seeds, keyspace="orders") as client:
            for options in ({"read_from": "any"}, {"read_from": "sticky", "user": "ada"}):
                session = client.session(**options)  # type: ignore[arg-type]
                for round_ in range(40):
                    key = f"user:{round_ % 7}"
                    assert session.put(key, f"v{round_}") >= 1
                    assert session.get(key) == f"v{round_}".encode()
                print(options, "reads by node:", session.reads_by_node)
                if options["read_from"] == "any":
                    assert len(session.reads_by_node) >= 2  # spread over replicas
                else:
                    assert len(session.reads_by_node) == 1  # one user, one replica
            own = client.session(own_writes_from_leader=True)
            own.put("cart:ada", "1")
            assert own.get("cart:ada") == b"1"
