"""Bad input from clients and from strangers on the peer port: refused clearly, nothing
written, and the node keeps serving everyone else.

Every test runs with a healthy client beside it (its own connection, SET then GET in a
loop) whose requests must all succeed while the bad input is being sent.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cluster_harness import LocalTestCluster
from quorumdb.client._routing import ClientMap
from quorumdb.core.cluster_metadata import command as metadata_command
from quorumdb.core.controller.raft_log import EntryKind, LogEntry
from quorumdb.core.controller.raft_messages import AppendEntries
from quorumdb.runtime.frame_codec import encode_frame
from quorumdb.runtime.transport import HELLO
from quorumdb.runtime.wire import pack_message

MEBIBYTE = 1024 * 1024
HEALTH_KEYS = 8


def connect(port: int, timeout: float = 10.0) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


class HealthyClient:
    """A well-behaved client on its own connection, checked to keep working."""

    def __init__(self, port: int) -> None:
        self.client = connect(port, timeout=10.0)
        self.errors: list[str] = []
        self.operations = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        for index in range(HEALTH_KEYS):  # the key set exists before any test counts keys
            self.client.set(f"health:{index}", "start")

    def _run(self) -> None:
        counter = 0
        deadline = time.monotonic() + 120  # a bound only; stop() ends it
        while not self._stop.is_set() and time.monotonic() < deadline:
            counter += 1
            key, value = f"health:{counter % HEALTH_KEYS}", str(counter).encode()
            try:
                if self.client.set(key, value) is not True:
                    self.errors.append(f"SET {key} not acknowledged")
                elif (read := self.client.get(key)) != value:
                    self.errors.append(f"GET {key} returned {read!r}, expected {value!r}")
                else:
                    self.operations += 1
            except redis.RedisError as error:
                self.errors.append(f"{key}: {error!r}")
                return
            self._stop.wait(0.005)

    def start(self) -> HealthyClient:
        self._thread.start()
        return self

    def check(self, since: int = 0) -> int:
        """Assert everything succeeded and progress was made since `since` operations."""
        deadline = time.monotonic() + 10
        while self.operations <= since and not self.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not self.errors, f"the healthy client failed: {self.errors[:5]}"
        assert self.operations > since, "the healthy client made no progress"
        return self.operations

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        assert not self._thread.is_alive()
        self.client.close()


@pytest.fixture
def healthy(single_node: LocalTestCluster) -> Iterator[HealthyClient]:
    watcher = HealthyClient(single_node.resp_port()).start()
    log_offset = single_node.log_paths[0].stat().st_size
    try:
        yield watcher
        watcher.check()
    finally:
        watcher.stop()
    assert single_node.processes[0].poll() is None, "the node died"
    new_log = single_node.log_paths[0].read_bytes()[log_offset:].decode(errors="replace")
    assert "Traceback" not in new_log, new_log[-4000:]


@pytest.fixture
def client(single_node: LocalTestCluster) -> Iterator[redis.Redis]:
    with connect(single_node.resp_port()) as connection:
        yield connection


def raw_exchange(port: int, data: bytes, wait_seconds: float = 5.0) -> tuple[bytes, bool]:
    """Send `data` on a fresh connection; return (what came back, whether the server closed
    the connection within `wait_seconds`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_seconds) as connection:
        connection.sendall(data)
        received = b""
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                return received, False
            except ConnectionResetError:
                return received, True
            if not chunk:
                return received, True
            received += chunk
        return received, False


# --- malformed RESP ----------------------------------------------------------------------

# A declared length over the request limit must be refused on its header, before the server
# buffers any of it. `quorumdb node` has no flag for that limit, so these use the default one
# (max_value_bytes + max_key_bytes + 64 KiB, just over 64 MiB).
MALFORMED = {
    "non-numeric bulk length": b"*3\r\n$3\r\nSET\r\n$7\r\nbad:len\r\n$x\r\n",
    "negative multibulk length": b"*-5\r\n",
    "nested array": b"*3\r\n$3\r\nSET\r\n$10\r\nbad:nested\r\n*1\r\n$1\r\nv\r\n",
    "bulk length beyond any limit": b"*3\r\n$3\r\nSET\r\n$8\r\nbad:huge\r\n$99999999999\r\n",
    "65 MiB declared bulk": b"*3\r\n$3\r\nSET\r\n$9\r\nbad:65mib\r\n$%d\r\n" % (65 * MEBIBYTE),
    "a bulk string instead of an array": b"$3\r\nSET\r\n",
    "a RESP3 map": b"%1\r\n+bad:map\r\n+v\r\n",
    "negative bulk length": b"*3\r\n$3\r\nSET\r\n$7\r\nbad:neg\r\n$-1\r\n",
    "unbalanced inline quotes": b"SET bad:inline 'value\r\n",
}


@pytest.mark.parametrize(
    "case",
    [case for case in MALFORMED],
)
def test_malformed_resp_gets_a_protocol_error_then_the_connection_closes(
    case: str, single_node: LocalTestCluster, healthy: HealthyClient, client: redis.Redis
) -> None:
    port = single_node.resp_port()
    keys_before = client.dbsize()
    reply, closed = raw_exchange(port, MALFORMED[case], wait_seconds=3.0)
    assert reply.startswith(b"-ERR Protocol error"), reply
    assert reply.count(b"\r\n") == 1, f"more than the error came back: {reply!r}"
    assert closed, "the connection stayed open after a protocol error"
    assert client.dbsize() == keys_before, "the malformed request wrote something"
    for key in ("bad:len", "bad:nested", "bad:huge", "bad:65mib", "bad:neg", "bad:inline"):
        assert client.exists(key) == 0


def test_commands_before_the_bad_input_are_answered_in_order(
    single_node: LocalTestCluster, healthy: HealthyClient, client: redis.Redis
) -> None:
    good = b"*3\r\n$3\r\nSET\r\n$11\r\nbefore:good\r\n$1\r\n1\r\n*1\r\n$4\r\nPING\r\n"
    bad = b"*3\r\n$3\r\nSET\r\n$10\r\nafter:bad1\r\n$?\r\n*1\r\n$4\r\nPING\r\n"
    reply, closed = raw_exchange(single_node.resp_port(), good + bad)
    assert reply.startswith(b"+OK\r\n+PONG\r\n-ERR Protocol error"), reply
    assert reply.count(b"\r\n") == 3, reply
    assert closed
    assert client.get("before:good") == b"1"
    assert client.exists("after:bad1") == 0


# --- well-formed but wrong requests: an error, and the connection stays usable -----------


def test_unknown_command_wrong_arity_and_wrong_types_keep_the_connection(
    healthy: HealthyClient, client: redis.Redis
) -> None:
    client.delete("types:text", "types:absent", "types:max")
    assert client.set("types:text", "not a number") is True
    assert client.set("types:max", 2**63 - 1) is True
    refusals = [
        (("NOSUCHCOMMAND", "a", "b"), "unknown command 'NOSUCHCOMMAND'"),
        (("GET",), "wrong number of arguments for 'get' command"),
        (("SET", "types:absent"), "wrong number of arguments for 'set' command"),
        (("INCR", "types:absent", "extra"), "wrong number of arguments for 'incr' command"),
        (("INCR", "types:text"), "value is not an integer or out of range"),
        (("INCRBY", "types:absent", "ten"), "value is not an integer or out of range"),
        (("INCRBY", "types:absent", "1.5"), "value is not an integer or out of range"),
        (("INCRBY", "types:absent", "99999999999999999999"), "not an integer or out of range"),
        (("INCR", "types:max"), "increment or decrement would overflow"),
        (("SET", "types:absent", "v", "EX", "soon"), "value is not an integer or out of range"),
        (("SET", "types:absent", "v", "EX", "-5"), "invalid expire time"),
        (("SET", "types:absent", "v", "NX", "XX"), "syntax error"),
    ]
    for command, message in refusals:
        with pytest.raises(redis.ResponseError, match=message):
            client.execute_command(*command)
        assert client.ping() is True, f"connection unusable after {command}"
    assert client.get("types:text") == b"not a number"
    assert client.get("types:max") == str(2**63 - 1).encode()
    assert client.exists("types:absent") == 0


def _key_refused_or_stored(client: redis.Redis, key: bytes, keys_before: int) -> str:
    """A key the node may not support: either a clear error and nothing written, or it is
    stored and reads back. Never an acknowledgement of a write that is not there, nor a
    hang (the client's timeout turns that into a failure)."""
    try:
        acknowledged = client.set(key, b"value")
    except redis.ResponseError as error:
        assert client.dbsize() == keys_before, f"refused ({error}) but something was written"
        assert client.ping() is True
        return str(error)
    assert acknowledged is True
    assert client.get(key) == b"value", "acknowledged, but the key does not read back"
    assert client.dbsize() == keys_before + 1
    assert client.delete(key) == 1
    return "stored"


def test_oversized_key_is_refused_and_nothing_is_written(
    healthy: HealthyClient, client: redis.Redis
) -> None:
    keys_before = client.dbsize()
    huge_key = b"k" * (64 * 1024 + 1)
    with pytest.raises(redis.ResponseError, match=r"key is 65537 bytes, limit \d+"):
        client.set(huge_key, b"value")
    with pytest.raises(redis.ResponseError, match="key is 65537 bytes"):
        client.get(huge_key)
    assert client.dbsize() == keys_before
    # Sizes around the storage engine's own key limit (511 bytes in LMDB), and the empty key.
    outcomes = {
        size: _key_refused_or_stored(client, b"k" * size, keys_before) for size in (511, 512, 0)
    }
    print(f"key sizes: {outcomes}")
    assert outcomes[511] == "stored"


def test_oversized_values_are_refused_and_the_node_keeps_serving(
    single_node: LocalTestCluster, healthy: HealthyClient, client: redis.Redis
) -> None:
    keys_before = client.dbsize()
    big = bytes(65 * MEBIBYTE)  # built once; the smaller value is a view into it
    just_over = memoryview(big)[: 64 * MEBIBYTE + 1]
    # Within the request size limit but over the value limit: a clear error, same connection.
    with pytest.raises(redis.ResponseError, match="value is 67108865 bytes, limit 67108864"):
        client.set("big:just-over", just_over)
    assert client.ping() is True
    assert client.exists("big:just-over") == 0
    # Over the request size limit: refused as a protocol error; the server hangs up while
    # the client is still sending, so the client may see the reply or only the reset.
    other = connect(single_node.resp_port(), timeout=30)
    try:
        with pytest.raises((redis.ResponseError, redis.ConnectionError)) as refused:
            other.set("big:65mib", big)
        if isinstance(refused.value, redis.ResponseError):
            assert "Protocol error: request too large" in str(refused.value)
    finally:
        other.close()
    assert client.exists("big:65mib") == 0
    assert client.dbsize() == keys_before
    # APPEND growing a value past the limit is refused too.
    assert client.set("big:grow", memoryview(big)[: 40 * MEBIBYTE]) is True
    with pytest.raises(redis.ResponseError, match="limit 67108864"):
        client.append("big:grow", memoryview(big)[: 30 * MEBIBYTE])
    assert client.strlen("big:grow") == 40 * MEBIBYTE
    assert client.delete("big:grow") == 1
    healthy.check()


def test_half_a_command_then_disconnect_writes_nothing(
    single_node: LocalTestCluster, healthy: HealthyClient, client: redis.Redis
) -> None:
    port = single_node.resp_port()
    halves = [
        b"*3\r\n$3\r\nSET\r\n$9\r\nhalf:cmd1\r\n$10\r\nabc",
        b"*3\r\n$3\r\nSET\r\n$9\r\nhalf:cmd2\r\n",
        b"*3\r\n$3\r\nSE",
        b"*3\r\n$3\r\nSET\r\n$9\r\nhalf:cmd3\r\n$5\r\nvalue",  # only the final CRLF missing
        b"SET half:cmd4 value",  # inline, no newline
    ]
    for half in halves:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(half)
    # The node saw each disconnect; a request after them is served, and nothing was written.
    assert client.ping() is True
    assert client.exists("half:cmd1", "half:cmd2", "half:cmd3", "half:cmd4") == 0
    healthy.check()


def test_five_hundred_connections_at_once_do_not_break_the_node(
    single_node: LocalTestCluster, healthy: HealthyClient, client: redis.Redis
) -> None:
    port = single_node.resp_port()
    connected_before = int(client.info("clients")["connected_clients"])
    connections: list[socket.socket] = []
    try:
        for _ in range(500):
            connections.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        for number, connection in enumerate(connections):
            if number % 2 == 0:
                connection.sendall(b"*1\r\n$4\r\nPING\r\n")
        for number, connection in enumerate(connections):
            if number % 2 == 0:
                assert connection.recv(64) == b"+PONG\r\n", f"connection {number}"
        assert int(client.info("clients")["connected_clients"]) >= connected_before + 500
        with connect(port) as newcomer:  # one more still gets in and is served
            assert newcomer.set("many:newcomer", "yes") is True
        healthy.check()
    finally:
        for connection in connections:
            connection.close()
    deadline = time.monotonic() + 10
    while int(client.info("clients")["connected_clients"]) > connected_before:
        assert time.monotonic() < deadline, "closed connections are still counted"
        time.sleep(0.05)


def test_random_bytes_on_fresh_connections_never_hurt_the_node(
    single_node: LocalTestCluster, healthy: HealthyClient, client: redis.Redis
) -> None:
    seed = int(os.environ.get("QUORUMDB_FUZZ_SEED", random.randrange(2**32)))
    print(f"RESP fuzz seed {seed} (replay with QUORUMDB_FUZZ_SEED={seed})")
    chooser = random.Random(seed)
    port = single_node.resp_port()
    valid = [
        b"*3\r\n$3\r\nSET\r\n$8\r\nfuzz:key\r\n$5\r\nvalue\r\n",
        b"*2\r\n$4\r\nINCR\r\n$8\r\nfuzz:ctr\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"PING\r\n",
    ]
    for round_number in range(40):
        if chooser.random() < 0.5:
            data = chooser.randbytes(chooser.randrange(1, 300))
        else:  # a valid command with some bytes flipped, dropped or inserted
            data = bytearray(chooser.choice(valid))
            for _ in range(chooser.randrange(1, 4)):
                position = chooser.randrange(len(data))
                action = chooser.randrange(3)
                if action == 0:
                    data[position] = chooser.randrange(256)
                elif action == 1:
                    del data[position]
                else:
                    data.insert(position, chooser.randrange(256))
            data = bytes(data)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(data)
            connection.settimeout(0.05)
            try:
                connection.recv(4096)  # whatever comes back within a moment
            except (TimeoutError, ConnectionResetError):
                pass
        context = f"seed {seed} round {round_number} data {data!r}"
        assert single_node.processes[0].poll() is None, f"the node died: {context}"
        assert client.set("fuzz:probe", round_number) is True, context
        assert client.get("fuzz:probe") == str(round_number).encode(), context
    healthy.check()


# --- strangers on the peer port ----------------------------------------------------------


def _frame_with_bad_checksum(obj: object) -> bytes:
    frame = bytearray(encode_frame(obj))
    frame[5] ^= 0x55
    return bytes(frame)


PEER_GARBAGE = {
    "random bytes": random.Random(7).randbytes(64),
    "oversized frame length": struct.pack(">II", 0xFFFF_FFF0, 0) + b"\x00" * 8,
    "bad checksum": _frame_with_bad_checksum([HELLO, "node0"]),
    "valid frame, bad hello": encode_frame(["hello?", "node0"]),
    "hello of a stranger": encode_frame([HELLO, "node7"]),
    "hello then undecodable": encode_frame([HELLO, "node0"]) + encode_frame(b"\xc1"),
    "hello then a non-message": encode_frame([HELLO, "node2"]) + encode_frame(pack_message(42)),
}


def _read_until_closed(connection: socket.socket, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    connection.settimeout(seconds)
    while time.monotonic() < deadline:
        try:
            if not connection.recv(4096):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def test_peer_port_garbage_is_disconnected_and_logged_while_the_cluster_keeps_working(
    cluster3: LocalTestCluster,
) -> None:
    target = 1
    peer_port = cluster3.members[target].peer_port
    assert peer_port == cluster3.base_port + 200 + target
    with connect(cluster3.resp_port(0)) as client:
        routing = ClientMap.parse(client.execute_command("quorumdb.map"))
    owners: dict[str, str] = {}  # a key owned by each node
    candidate = 0
    while len(owners) < 3 and candidate < 10_000:
        key = f"peer:{candidate}"
        owner = routing.owner("default", key.encode())
        assert owner is not None
        owners.setdefault(owner.node_id, key)
        candidate += 1
    assert len(owners) == 3

    def forwarded_round_trips(tag: str) -> None:
        # Through node1 to the others, and from node0 into node1, over the real peer links.
        with connect(cluster3.resp_port(target)) as via_target:
            for node_id in ("node0", "node2"):
                assert via_target.set(owners[node_id], tag) is True
                assert via_target.get(owners[node_id]) == tag.encode()
        with connect(cluster3.resp_port(0)) as via_first:
            assert via_first.set(owners["node1"], tag) is True
            assert via_first.get(owners["node1"]) == tag.encode()

    forwarded_round_trips("before")
    log_path = cluster3.log_paths[target]
    healthy = HealthyClient(cluster3.resp_port(target)).start()
    try:
        for case, data in PEER_GARBAGE.items():
            rejections_before = log_path.read_text().count("disconnecting peer")
            with socket.create_connection(("127.0.0.1", peer_port), timeout=5) as connection:
                connection.sendall(data)
                assert _read_until_closed(connection, 5.0), f"{case}: connection kept open"
            deadline = time.monotonic() + 5
            while log_path.read_text().count("disconnecting peer") == rejections_before:
                assert time.monotonic() < deadline, f"{case}: the rejection was not logged"
                time.sleep(0.02)
            forwarded_round_trips(case)
            assert cluster3.processes[target].poll() is None
        healthy.check()
    finally:
        healthy.stop()
    forwarded_round_trips("after")


@pytest.fixture
def cluster2(tmp_path: Path) -> Iterator[LocalTestCluster]:
    with LocalTestCluster(2, tmp_path / "cluster2") as cluster:
        yield cluster


def test_forged_metadata_with_an_invalid_keyspace_is_not_adopted(
    cluster2: LocalTestCluster,
) -> None:
    """A well-formed controller message of the right type, but committing a keyspace no
    client could create: the metadata state machine refuses it, so a peer (buggy, or
    anyone who can reach the peer port) cannot make a node adopt a map it cannot route by.
    (Peers are trusted to speak Raft honestly; authenticating them is a later issue.)"""
    bad = {"name": "bad name!", "partitioning": "fixed:5000", "replication_factor": 1}
    entry = LogEntry(
        1, 99, EntryKind.COMMAND, metadata_command("create_keyspace", config=bad, layout={})
    )
    forged = AppendEntries(99, 0, 0, (entry,), 1)
    peer_port = cluster2.members[1].peer_port
    with socket.create_connection(("127.0.0.1", peer_port), timeout=5) as connection:
        connection.sendall(encode_frame([HELLO, "node0"]) + encode_frame(pack_message(forged)))
        _read_until_closed(connection, 1.0)  # closed or not: what matters is what node1 did
    with connect(cluster2.resp_port(1)) as client:
        document = json.loads(client.execute_command("quorumdb.map"))
    assert set(document["keyspaces"]) == {"default"}, document["keyspaces"]
    cluster2.stop_node(1)
    cluster2.start_node(1)  # waits for its ports: the node restarts on its own log
    with connect(cluster2.resp_port(1)) as client:
        assert client.set("after-forgery", "ok") is True
