"""Salted hot keys: writes spread over sub-keys on several nodes, reads gather and sum,
and clients see one counter."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from quorumdb.core.effects import Reply, Send
from quorumdb.core.errors import ErrorCode
from quorumdb.core.messages import (
    Append,
    Delete,
    Get,
    Increment,
    Put,
    PutCondition,
    ScanPartition,
)
from quorumdb.core.node import NOT_LOCAL
from quorumdb.core.salting import SALT_MARKER, sub_key
from test_core_node import Cluster


def salted_cluster(ways: int = 8, key: bytes = b"likes") -> Cluster:
    cluster = Cluster()
    for node in cluster.nodes.values():
        node.salted_keys = {"default": {key: ways}}
    return cluster


def stored_sub_keys(cluster: Cluster) -> dict[str, set[bytes]]:
    return {
        node_id: {
            key
            for (keyspace, _), table in storage.data.items()
            for key in table
            if keyspace == "default" and key.startswith(b"likes")
        }
        for node_id, storage in cluster.storages.items()
    }


def test_increments_spread_over_nodes_and_reads_sum_them() -> None:
    cluster = salted_cluster()
    replies = [
        cluster.request(f"node{index % 3}", Increment("default", b"likes", 1)).value
        for index in range(800)
    ]
    assert replies == list(range(1, 801))  # sequential: each reply is the exact total
    for node_id in cluster.nodes:
        assert cluster.request(node_id, Get("default", b"likes")).value == b"800"
    placed = stored_sub_keys(cluster)
    assert set().union(*placed.values()) == {sub_key(b"likes", index) for index in range(8)}
    assert all(placed.values()), placed  # every node holds some of the sub-keys
    counts = [
        int(cluster.storages[owner].get("default", partition, key)[1:])
        for key in (sub_key(b"likes", index) for index in range(8))
        for owner, partition in [
            cluster.nodes["node0"].partition_map.keyspaces["default"].owner_of_key(key)[::-1]
        ]
    ]
    assert sum(counts) == 800 and max(counts) - min(counts) <= 8  # rotation spreads evenly


def test_a_counter_keeps_its_value_when_salted_and_other_commands_behave() -> None:
    cluster = Cluster()
    assert cluster.request("node0", Put("default", b"likes", b"5")).value is True
    for node in cluster.nodes.values():
        node.salted_keys = {"default": {b"likes": 4}}
    assert cluster.request("node1", Increment("default", b"likes", 2)).value == 7
    assert cluster.request("node2", Increment("default", b"likes", -10)).value == -3
    assert cluster.request("node0", Put("default", b"likes", b"42")).value is True
    assert cluster.request("node1", Get("default", b"likes")).value == b"42"
    assert sum(len(keys) for keys in stored_sub_keys(cluster).values()) == 1  # reset to one
    refused = cluster.request("node0", Put("default", b"likes", b"many"))
    assert refused.error is ErrorCode.INVALID_ARGUMENT and "integer" in (refused.message or "")
    conditional = Put("default", b"likes", b"1", condition=PutCondition.IF_ABSENT)
    assert cluster.request("node0", conditional).error is ErrorCode.INVALID_ARGUMENT
    appended = cluster.request("node2", Append("default", b"likes", b"x"))
    assert appended.error is ErrorCode.INVALID_ARGUMENT and "APPEND" in (appended.message or "")
    assert cluster.request("node1", Get("default", b"likes")).value == b"42"
    cluster.request("node0", Increment("default", b"likes", 1))
    cluster.request("node0", Increment("default", b"likes", 1))
    assert cluster.request("node2", Delete("default", b"likes")).value is True
    assert stored_sub_keys(cluster) == {"node0": set(), "node1": set(), "node2": set()}
    assert cluster.request("node2", Delete("default", b"likes")).value is False
    assert cluster.request("node0", Get("default", b"likes")).value is None
    # Fast paths never serve a salted key as a plain one.
    assert cluster.request("node0", Put("default", b"likes", b"3")).value is True
    node = cluster.nodes["node0"]
    assert node.write_local("default", b"likes", b"9") is None
    assert node.read_local(cluster.now_ms, "default", b"likes") is NOT_LOCAL


def test_scans_show_a_salted_key_once() -> None:
    cluster = salted_cluster(ways=6)
    for _ in range(12):
        cluster.request("node1", Increment("default", b"likes", 1))
    cluster.request("node1", Put("default", b"plain" + SALT_MARKER + b"1", b"kept"))
    seen: list[bytes] = []
    for partition in range(64):
        page = cluster.request("node0", ScanPartition("default", partition, b"", 100)).value
        seen += [key for key, _ in page.items]
    assert sorted(seen) == [b"likes", b"plain" + SALT_MARKER + b"1"]  # unsalted keys stay


def test_an_unreachable_sub_key_owner_fails_the_request_clearly() -> None:
    cluster = salted_cluster()
    node = cluster.nodes["node0"]
    effects = node.on_client_request(cluster.now_ms, 7, Get("default", b"likes"))
    assert not [effect for effect in effects if isinstance(effect, Reply)]  # waits for peers
    remote = {effect.destination for effect in effects if isinstance(effect, Send)}
    assert remote == {"node1", "node2"}
    for peer in sorted(remote):
        answered = node.on_peer_unreachable(cluster.now_ms, peer)
    replies = [effect for effect in answered if isinstance(effect, Reply)]
    assert len(replies) == 1 and replies[0].request_id == 7
    assert replies[0].outcome.error is ErrorCode.UNAVAILABLE
    assert node._gather_parts == {}  # nothing left behind


_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["incr", "get", "set", "del"]),
        st.integers(0, 2),
        st.integers(-1000, 1000),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(steps=_STEPS, ways=st.integers(2, 8))
def test_salted_counter_matches_a_plain_counter(
    steps: list[tuple[str, int, int]], ways: int
) -> None:
    salted, plain = salted_cluster(ways), Cluster()
    for action, entry, amount in steps:
        node_id = f"node{entry}"
        if action == "incr":
            operation: object = Increment("default", b"likes", amount)
        elif action == "get":
            operation = Get("default", b"likes")
        elif action == "set":
            operation = Put("default", b"likes", str(amount).encode())
        else:
            operation = Delete("default", b"likes")
        assert salted.request(node_id, operation) == plain.request(node_id, operation)
