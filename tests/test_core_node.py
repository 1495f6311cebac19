"""The node's routing and operations, driven by hand through its effects."""

from __future__ import annotations

import random

from quorumdb.core.cluster import local_members
from quorumdb.core.effects import Effect, Persist, Reply, Send
from quorumdb.core.errors import ErrorCode
from quorumdb.core.keyspace import KeyspaceConfig
from quorumdb.core.messages import (
    Append,
    CountPartition,
    CreateKeyspace,
    Delete,
    ForwardReply,
    ForwardRequest,
    Get,
    Increment,
    Outcome,
    Put,
    PutCondition,
    ScanPartition,
)
from quorumdb.core.node import NOT_LOCAL, Node, NodeLimits
from quorumdb.core.partitioning import partition_of
from quorumdb.storage.interface import Write


class DictStorage:
    """Naive reference storage for driving the core in tests."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, int], dict[bytes, bytes]] = {}

    def get(self, keyspace: str, partition: int, key: bytes) -> bytes | None:
        return self.data.get((keyspace, partition), {}).get(key)

    def scan(self, keyspace: str, partition: int, start: bytes, end: bytes | None, limit: int):
        rows = sorted(self.data.get((keyspace, partition), {}).items())
        return [(k, v) for k, v in rows if k >= start and (end is None or k < end)][:limit]

    def count(self, keyspace: str, partition: int) -> int:
        return len(self.data.get((keyspace, partition), {}))

    def apply(self, writes: tuple[Write, ...]) -> None:
        for write in writes:
            table = self.data.setdefault((write.keyspace, write.partition), {})
            if write.value is None:
                table.pop(write.key, None)
            else:
                table[write.key] = write.value


class Cluster:
    """Delivers effects between nodes immediately, collecting client replies."""

    def __init__(self, count: int = 3, limits: NodeLimits | None = None, seed: int = 1) -> None:
        self.members = local_members(count, 7000)
        self.limits = limits
        self.rng = random.Random(seed)
        self.storages = {m.node_id: DictStorage() for m in self.members}
        self.nodes = {m.node_id: self.start(m.node_id) for m in self.members}
        self.replies: dict[int, Outcome] = {}
        self.next_request_id = 1
        self.now_ms = 1_000
        self.sent: list[tuple[str, str, object]] = []

    def run(self, node_id: str, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Persist):
                self.storages[node_id].apply(effect.writes)
            elif isinstance(effect, Reply):
                self.replies[effect.request_id] = effect.outcome
            elif isinstance(effect, Send):
                self.sent.append((node_id, effect.destination, effect.message))
                target = self.nodes.get(effect.destination)
                if target is None:
                    continue  # a peer outside the cluster (a test plays it)
                self.run(
                    effect.destination, target.on_message(self.now_ms, node_id, effect.message)
                )

    def start(self, node_id: str) -> Node:
        """A node (re)starting on its storage."""
        rng = random.Random(self.rng.random())
        self.starts = getattr(self, "starts", 0) + 1  # a new incarnation per start
        storage = self.storages[node_id]
        return Node(node_id, self.members, storage, self.limits, self.starts, rng=rng)

    def tick(self, elapsed_ms: int = 20) -> None:
        self.now_ms += elapsed_ms
        for node_id, node in list(self.nodes.items()):
            self.run(node_id, node.on_tick(self.now_ms))

    def settle(self) -> str:
        """Tick until every node knows the controller leader and has applied its log."""
        for _ in range(500):
            self.tick()
            leaders = {node.controller.leader_id for node in self.nodes.values()}
            applied = {node.controller.raft.applied_index for node in self.nodes.values()}
            leader = next(iter(leaders))
            if len(leaders) == 1 and leader is not None and len(applied) == 1:
                return leader
        raise AssertionError("no controller leader after 10 virtual seconds")

    def request(self, node_id: str, operation) -> Outcome:
        """Send one request and tick until it is answered (a metadata change needs the
        controller's log to commit)."""
        request_id = self.next_request_id
        self.next_request_id += 1
        self.run(node_id, self.nodes[node_id].on_client_request(self.now_ms, request_id, operation))
        for _ in range(500):
            if request_id in self.replies:
                return self.replies.pop(request_id)
            self.tick()
        raise AssertionError(f"no answer to {operation!r}")


def owner_of(cluster: Cluster, key: bytes) -> str:
    node = cluster.nodes["node0"]
    return node.partition_map.keyspaces["default"].owner_of_key(key)[1]


def test_every_node_answers_for_every_key_and_data_lives_on_the_owner() -> None:
    cluster = Cluster()
    keys = [f"key-{index}".encode() for index in range(60)]
    for index, key in enumerate(keys):
        entry = f"node{index % 3}"
        assert cluster.request(entry, Put("default", key, b"v" + key)).value is True
    for index, key in enumerate(keys):
        entry = f"node{(index + 1) % 3}"
        assert cluster.request(entry, Get("default", key)).value == b"v" + key
        owner = owner_of(cluster, key)
        partition = partition_of(key, 64)
        for node_id, storage in cluster.storages.items():
            present = storage.get("default", partition, key) is not None
            assert present == (node_id == owner)
    assert len({owner_of(cluster, key) for key in keys}) == 3


def test_request_to_non_owner_is_forwarded_once() -> None:
    cluster = Cluster()
    key = next(k for k in (f"k{i}".encode() for i in range(100)) if owner_of(cluster, k) != "node0")
    cluster.request("node0", Put("default", key, b"x"))
    forwards = [s for s in cluster.sent if type(s[2]).__name__ == "ForwardRequest"]
    assert len(forwards) == 1 and forwards[0][1] == owner_of(cluster, key)


def test_put_conditions_and_previous_value() -> None:
    cluster = Cluster(1)
    put = cluster.request
    assert put("node0", Put("default", b"a", b"1", PutCondition.IF_PRESENT)).value is False
    assert put("node0", Get("default", b"a")).value is None
    assert put("node0", Put("default", b"a", b"1", PutCondition.IF_ABSENT)).value is True
    assert put("node0", Put("default", b"a", b"2", PutCondition.IF_ABSENT)).value is False
    assert put("node0", Put("default", b"a", b"3", return_previous=True)).value == b"1"
    assert put("node0", Get("default", b"a")).value == b"3"


def test_expiry_hides_value_and_keep_expiry_preserves_it() -> None:
    cluster = Cluster(1)
    cluster.request("node0", Put("default", b"t", b"v", expire_at_ms=cluster.now_ms + 50))
    cluster.request("node0", Put("default", b"t", b"w", keep_expiry=True))
    assert cluster.request("node0", Get("default", b"t")).value == b"w"
    cluster.now_ms += 50
    assert cluster.request("node0", Get("default", b"t")).value is None
    assert cluster.request("node0", Delete("default", b"t")).value is False


def test_increment_and_append() -> None:
    cluster = Cluster(1)
    assert cluster.request("node0", Increment("default", b"n", 5)).value == 5
    assert cluster.request("node0", Increment("default", b"n", -7)).value == -2
    cluster.request("node0", Put("default", b"s", b"abc"))
    outcome = cluster.request("node0", Increment("default", b"s", 1))
    assert outcome.error is ErrorCode.NOT_INTEGER
    cluster.request("node0", Put("default", b"big", str(2**63 - 1).encode()))
    assert cluster.request("node0", Increment("default", b"big", 1)).error is ErrorCode.OVERFLOW
    assert cluster.request("node0", Append("default", b"s", b"def")).value == 6
    assert cluster.request("node0", Get("default", b"s")).value == b"abcdef"
    for bad in (b" 1", b"+1", b"01", b"1.5", b""):
        cluster.request("node0", Put("default", b"x", bad))
        assert (
            cluster.request("node0", Increment("default", b"x", 1)).error is ErrorCode.NOT_INTEGER
        )


def test_limits_reject_without_writing() -> None:
    cluster = Cluster(1, NodeLimits(max_key_bytes=8, max_value_bytes=16))
    assert cluster.request("node0", Put("default", b"k" * 9, b"v")).error is ErrorCode.TOO_LARGE
    assert cluster.request("node0", Put("default", b"k", b"v" * 17)).error is ErrorCode.TOO_LARGE
    cluster.request("node0", Put("default", b"k", b"v" * 16))
    assert cluster.request("node0", Append("default", b"k", b"v")).error is ErrorCode.TOO_LARGE
    assert cluster.request("node0", Get("default", b"k")).value == b"v" * 16


def test_scan_pages_through_a_partition_in_order() -> None:
    cluster = Cluster(2)
    keys = sorted(f"s{i:03d}".encode() for i in range(200))
    for key in keys:
        cluster.request("node1", Put("default", key, key))
    seen: list[bytes] = []
    for partition in range(64):
        start = b""
        while True:
            page = cluster.request("node0", ScanPartition("default", partition, start, 7)).value
            seen.extend(key for key, _ in page.items)
            if page.next_start is None:
                break
            start = page.next_start
        count = cluster.request("node1", CountPartition("default", partition)).value
        assert count == sum(1 for key in keys if partition_of(key, 64) == partition)
    assert sorted(seen) == keys and len(seen) == len(keys)


def test_scan_stops_before_its_end_bound() -> None:
    cluster = Cluster(1)
    tagged = [b"{t}:%02d" % number for number in range(20)]
    for key in tagged:
        cluster.request("node0", Put("default", key, key))
    partition = cluster.nodes["node0"].partition_map.keyspaces["default"].layout.locate(tagged[0])
    bounded = ScanPartition("default", partition, b"{t}:05", 3, end=b"{t}:09")
    page = cluster.request("node0", bounded).value
    assert [key for key, _ in page.items] == tagged[5:8] and page.next_start == b"{t}:08"
    last = cluster.request(
        "node0", ScanPartition("default", partition, b"{t}:08", 3, True, b"{t}:09")
    )
    assert last.value.items == ((b"{t}:08", b""),) and last.value.next_start is None


def test_unknown_keyspace_and_creation_through_the_controller() -> None:
    cluster = Cluster()
    leader = cluster.settle()
    follower = next(node_id for node_id in cluster.nodes if node_id != leader)
    assert cluster.request(follower, Get("users", b"a")).error is ErrorCode.UNKNOWN_KEYSPACE
    config = KeyspaceConfig("users", "fixed:8")
    assert cluster.request(follower, CreateKeyspace(config)).value is True
    # At once, through any node: one that has not applied it yet asks the leader.
    for node_id in cluster.nodes:
        assert cluster.request(node_id, Put("users", node_id.encode(), b"1")).ok
    assert cluster.request(leader, CreateKeyspace(config)).value is False
    conflicting = KeyspaceConfig("users", "fixed:16")
    assert cluster.request(follower, CreateKeyspace(conflicting)).error is ErrorCode.KEYSPACE_EXISTS
    respelled = KeyspaceConfig("users", "fixed:8").canonical()
    assert cluster.request(follower, CreateKeyspace(respelled)).value is False
    default_count = KeyspaceConfig("users", "fixed")  # that is fixed:64, not fixed:8
    assert cluster.request(follower, CreateKeyspace(default_count)).error is (
        ErrorCode.KEYSPACE_EXISTS
    )
    cluster.settle()
    versions = {node.partition_map.version for node in cluster.nodes.values()}
    assert len(versions) == 1
    bad = KeyspaceConfig("bad name!")
    assert cluster.request(follower, CreateKeyspace(bad)).error is ErrorCode.INVALID_ARGUMENT


def test_creation_waits_for_a_controller_leader_then_gives_up_clearly() -> None:
    cluster = Cluster()  # no ticks yet: no election has happened
    early = CreateKeyspace(KeyspaceConfig("early"))
    assert cluster.nodes["node1"].on_client_request(cluster.now_ms, 1, early) == []
    for _ in range(200):
        cluster.tick()
        if 1 in cluster.replies:
            break
    assert cluster.replies.pop(1) == Outcome(True)  # answered once a leader was elected
    # A node cut off from its peers never sees a leader: it answers, retryably.
    lonely = Node("node1", cluster.members, DictStorage(), rng=random.Random(3))
    assert lonely.on_client_request(0, 2, CreateKeyspace(KeyspaceConfig("late"))) == []
    answers: list[Reply] = []
    for now_ms in range(0, 2_100, 20):
        answers += [e for e in lonely.on_tick(now_ms) if isinstance(e, Reply)]
    assert [(reply.request_id, reply.outcome.error) for reply in answers] == [
        (2, ErrorCode.UNAVAILABLE)
    ]
    assert "retry" in answers[0].outcome.message


def test_restarted_node_recovers_the_metadata_from_the_controller_log() -> None:
    for count in (1, 3):
        cluster = Cluster(count)
        cluster.settle()
        cluster.request("node0", CreateKeyspace(KeyspaceConfig("orders", "fixed:4")))
        cluster.settle()
        cluster.nodes["node0"] = cluster.start("node0")
        # Known at once, before any leader is heard: the commit index was persisted.
        restarted = cluster.nodes["node0"]
        assert "orders" in restarted.partition_map.keyspaces
        assert restarted.partition_map.version == 2
        cluster.settle()
        assert cluster.request("node0", Put("orders", b"k", b"v")).ok


def test_a_forward_routed_by_a_newer_map_waits_for_it() -> None:
    cluster = Cluster()
    cluster.settle()
    node = cluster.nodes["node2"]
    newer = ForwardRequest(1, node.partition_map.version + 1, Get("default", b"k"), 7)
    assert node.on_message(cluster.now_ms, "node9", newer) == []  # parked, not refused
    expired = node.on_tick(cluster.now_ms + node.limits.map_wait_ms)
    [answer] = [e for e in expired if isinstance(e, Send) and e.destination == "node9"]
    assert answer.destination == "node9"
    assert answer.message.outcome.error is ErrorCode.UNAVAILABLE
    # A map change in between serves it instead.
    owned = next(k for k in (b"k%d" % i for i in range(100)) if owner_of(cluster, k) == "node2")
    parked = ForwardRequest(2, node.partition_map.version + 1, Get("default", owned), 7)
    node.on_message(cluster.now_ms, "node9", parked)
    leader = cluster.settle()
    cluster.request(leader, CreateKeyspace(KeyspaceConfig("wakeup")))
    cluster.settle()
    served = [m for source, target, m in cluster.sent if target == "node9"]
    assert any(isinstance(m, ForwardReply) and m.forward_id == 2 and m.outcome.ok for m in served)


def test_forward_timeout_answers_with_indefinite_error_and_ignores_late_reply() -> None:
    cluster = Cluster()
    node = cluster.nodes["node0"]
    key = next(k for k in (f"k{i}".encode() for i in range(100)) if owner_of(cluster, k) != "node0")
    effects = node.on_client_request(cluster.now_ms, 99, Put("default", key, b"x"))
    assert len(effects) == 1 and isinstance(effects[0], Send)
    timeouts = node.on_tick(cluster.now_ms + node.limits.forward_timeout_ms)
    replies = [effect for effect in timeouts if isinstance(effect, Reply)]
    assert len(replies) == 1 and replies[0].outcome.error is ErrorCode.TIMEOUT
    assert not ErrorCode.TIMEOUT.definite
    owner_effects = cluster.nodes[effects[0].destination].on_message(
        cluster.now_ms, "node0", effects[0].message
    )
    late = [e for e in owner_effects if isinstance(e, Send)][0].message
    assert node.on_message(cluster.now_ms, effects[0].destination, late) == []


def test_unreachable_peer_fails_pending_forwards() -> None:
    cluster = Cluster()
    node = cluster.nodes["node0"]
    key = next(k for k in (f"k{i}".encode() for i in range(100)) if owner_of(cluster, k) != "node0")
    effects = node.on_client_request(cluster.now_ms, 5, Get("default", key))
    failed = node.on_peer_unreachable(cluster.now_ms, effects[0].destination)
    assert [(r.request_id, r.outcome.error) for r in failed] == [(5, ErrorCode.UNAVAILABLE)]


def test_expiry_beyond_the_stored_range_is_refused_without_writing() -> None:
    cluster = Cluster(1)
    outcome = cluster.request("node0", Put("default", b"k", b"v", expire_at_ms=2**63))
    assert outcome.error is ErrorCode.INVALID_ARGUMENT
    assert cluster.request("node0", Get("default", b"k")).value is None


def test_forwarded_gets_and_puts_answer_like_the_general_path() -> None:
    """A forwarded plain GET or SET takes the owner's fast path; its effects must be those
    of the general path (what a client request on the owner gives), and anything the fast
    path declines (not local, too large, unknown keyspace, conditions, expiry) must still
    get the general path's answer."""
    cluster = Cluster(limits=NodeLimits(max_key_bytes=8, max_value_bytes=4))
    now_ms = cluster.now_ms
    keys = [f"k{index}".encode() for index in range(30)] + [b"", b"123456789"]
    operations: list[Get | Put] = []
    for keyspace in ("default", "missing"):
        for key in keys:
            operations += [
                Get(keyspace, key),
                Put(keyspace, key, b"v"),
                Get(keyspace, key),
                Put(keyspace, key, b"toolong"),
                Put(keyspace, key, b"w", PutCondition.IF_ABSENT),
                Put(keyspace, key, b"x", expire_at_ms=now_ms + 5),
                Get(keyspace, key),
                Put(keyspace, key, b"y", keep_expiry=True, return_previous=True),
            ]
    forward_id = 0
    for node_id, node in cluster.nodes.items():
        for operation in operations:
            forward_id += 1
            owned = (
                operation.keyspace == "default"
                and 0 < len(operation.key) <= 8
                and owner_of(cluster, operation.key) == node_id
            )
            forwarded = node.on_message(
                now_ms, "node9", ForwardRequest(forward_id, 1, operation, 7)
            )
            *persists, send = forwarded
            assert isinstance(send, Send) and isinstance(send.message, ForwardReply)
            assert (send.destination, send.message.forward_id) == ("node9", forward_id)
            if not owned:
                assert persists == [] and send.message.outcome.error is not None
                continue
            # Both paths see the same storage: neither's writes are applied until compared.
            *direct_persists, direct_reply = node.on_client_request(now_ms, 1, operation)
            assert direct_persists == persists
            assert direct_reply == Reply(1, send.message.outcome)
            for effect in persists:
                assert isinstance(effect, Persist)
                cluster.storages[node_id].apply(effect.writes)


def test_fast_paths_agree_with_the_general_path() -> None:
    """`read_local`/`write_local` answer exactly like Get/Put when the key is local, and
    decline (NOT_LOCAL/None) otherwise, also for keyspaces created or adopted later."""
    cluster = Cluster(limits=NodeLimits(max_key_bytes=8, max_value_bytes=4))
    cluster.request("node1", CreateKeyspace(KeyspaceConfig("orders", "fixed:5")))
    now_ms = cluster.now_ms
    keys = [f"k{index}".encode() for index in range(40)] + [b"", b"123456789"]
    for node_id, node in cluster.nodes.items():
        for keyspace in ("default", "orders", "missing"):
            for key in keys:
                placement = node.partition_map.keyspaces.get(keyspace)
                local = (
                    placement is not None
                    and 0 < len(key) <= 8
                    and placement.owner_of_key(key)[1] == node_id
                )
                for value in (b"v", b"toolong"):
                    write = node.write_local(keyspace, key, value)
                    if not local or len(value) > 4:
                        assert write is None
                        continue
                    assert write is not None
                    effects = node.on_client_request(now_ms, 1, Put(keyspace, key, value))
                    persist = next(e for e in effects if isinstance(e, Persist))
                    assert (write,) == persist.writes
                    cluster.storages[node_id].apply((write,))
                value = node.read_local(now_ms, keyspace, key)
                if not local:
                    assert value is NOT_LOCAL
                    continue
                effects = node.on_client_request(now_ms, 1, Get(keyspace, key))
                assert effects == [Reply(1, Outcome(value))]
                assert value == b"v"
    expiring = next(k for k in keys if owner_of(cluster, k) == "node0")
    cluster.request("node0", Put("default", expiring, b"e", expire_at_ms=now_ms + 5))
    assert cluster.nodes["node0"].read_local(now_ms, "default", expiring) == b"e"
    assert cluster.nodes["node0"].read_local(now_ms + 5, "default", expiring) is None


def test_expired_keys_are_deleted_by_the_sweep_and_live_ones_kept() -> None:
    cluster = Cluster(1, NodeLimits(expiry_sweep_keys=3))
    node = cluster.nodes["node0"]
    for index in range(40):
        expiry = cluster.now_ms + 10 if index % 2 else None
        cluster.request("node0", Put("default", b"key%d" % index, b"v", expire_at_ms=expiry))
    stored = lambda: sum(len(table) for table in cluster.storages["node0"].data.values())  # noqa: E731
    assert stored() == 40
    cluster.run("node0", node.on_tick(cluster.now_ms))  # nothing has expired yet
    assert stored() == 40
    cluster.now_ms += 10
    for _ in range(200):  # bounded: 64 partitions, a few keys per tick
        cluster.run("node0", node.on_tick(cluster.now_ms))
    assert stored() == 20
    assert all(
        cluster.request("node0", Get("default", b"key%d" % index)).value == b"v"
        for index in range(0, 40, 2)
    )
