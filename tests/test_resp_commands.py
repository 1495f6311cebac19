"""Redis-protocol conformance of a real 3-node cluster, through redis-py and raw sockets.

Every data command is checked both on the key's owner ("owner") and through another node
that forwards it ("forwarded"), under RESP2 and RESP3. Connections go to node1; keys are
chosen so that node1 owns them, or so that node0/node2 do.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import hiredis
import httpx
import pytest
import redis

from quorumdb.client._routing import ClientMap
from quorumdb.core.partitioning import partition_of

CONNECTED = 1  # the node every redis-py connection of these tests talks to
MAX_INT64 = 2**63 - 1
_unique = itertools.count()


def cluster_map(cluster) -> ClientMap:
    with redis.Redis(port=cluster.resp_port(0)) as client:
        return ClientMap.parse(client.execute_command("QUORUMDB.MAP"))


def owned_key(
    partition_map: ClientMap, label: str, owned_here: bool, keyspace: str = "default"
) -> bytes:
    """A fresh key owned by node1 (owned_here) or by one of the other nodes."""
    serial = next(_unique)
    for attempt in range(10_000):
        key = f"{label}:{serial}:{attempt}".encode()
        owner = partition_map.owner(keyspace, key)
        assert owner is not None
        if (owner.node_id == f"node{CONNECTED}") == owned_here:
            return key
    raise AssertionError("no key with the wanted owner")


def raw_call(client: redis.Redis, *arguments: object) -> object:
    """Send one command and return the reply without redis-py's per-command callbacks."""
    connection = client.connection_pool.get_connection()
    try:
        connection.send_command(*arguments)
        return connection.read_response()
    finally:
        client.connection_pool.release(connection)


def error_text(client: redis.Redis, *arguments: object) -> str:
    with pytest.raises(redis.ResponseError) as caught:
        client.execute_command(*arguments)
    return str(caught.value)


class RawConnection:
    """A plain socket speaking RESP, for exact replies and one-write pipelines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.reader = hiredis.Reader()

    @staticmethod
    def encode(*arguments: bytes | str | int) -> bytes:
        parts = [b"*%d\r\n" % len(arguments)]
        for argument in arguments:
            if isinstance(argument, int):
                argument = str(argument)
            if isinstance(argument, str):
                argument = argument.encode()
            parts.append(b"$%d\r\n%b\r\n" % (len(argument), argument))
        return b"".join(parts)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def replies(self, count: int) -> list[object]:
        found: list[object] = []
        while len(found) < count:
            reply = self.reader.gets()
            if reply is not False:
                found.append(reply)
                continue
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"closed after {len(found)} of {count} replies")
            self.reader.feed(chunk)
        return found

    def call(self, *arguments: bytes | str | int) -> object:
        self.send(self.encode(*arguments))
        return self.replies(1)[0]

    def read_raw_until_closed(self) -> bytes:
        data = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def partition_map(cluster3) -> ClientMap:
    return cluster_map(cluster3)


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def protocol(request) -> int:
    return request.param


@pytest.fixture
def r(cluster3, protocol) -> Iterator[redis.Redis]:
    client = redis.Redis(port=cluster3.resp_port(CONNECTED), protocol=protocol)
    yield client
    client.close()


@dataclass
class Route:
    owned_here: bool
    partition_map: ClientMap

    def key(self, label: str) -> bytes:
        return owned_key(self.partition_map, label, self.owned_here)


@pytest.fixture(params=["owner", "forwarded"])
def route(request, partition_map) -> Route:
    return Route(request.param == "owner", partition_map)


@pytest.fixture
def raw(cluster3) -> Iterator[RawConnection]:
    connection = RawConnection(cluster3.resp_port(CONNECTED))
    yield connection
    connection.close()


def fresh_keyspace(cluster, name: str, partitions: int = 64) -> str:
    response = httpx.post(
        f"{cluster.http_url(0)}/v1/keyspaces",
        json={"name": name, "partitioning": f"fixed:{partitions}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return name


def keyspace_client(cluster, index: int, keyspace: str, protocol: int) -> redis.Redis:
    client = redis.Redis(
        port=cluster.resp_port(index), protocol=protocol, single_connection_client=True
    )
    assert client.execute_command("QUORUMDB.KEYSPACE", keyspace) in (True, b"OK")
    return client


# --- connection and server commands ------------------------------------------------------


def test_ping_and_echo(r) -> None:
    assert r.ping() is True
    assert raw_call(r, "PING") == b"PONG"
    assert raw_call(r, "PING", "hello there") == b"hello there"
    assert r.echo(b"a\r\nb\x00c") == b"a\r\nb\x00c"
    assert error_text(r, "PING", "a", "b") == "wrong number of arguments for 'ping' command"
    assert error_text(r, "ECHO") == "wrong number of arguments for 'echo' command"


def test_select_client_and_config(r, protocol) -> None:
    assert r.execute_command("SELECT", 0) in (True, b"OK")
    assert error_text(r, "SELECT", 1) == "DB index is out of range"
    port = r.connection_pool.connection_kwargs["port"]
    # One pinned connection each, so that names stick.
    single = redis.Redis(port=port, protocol=protocol, single_connection_client=True)
    other = redis.Redis(port=port, protocol=protocol, single_connection_client=True)
    try:
        assert single.client_getname() is None
        assert single.client_setname("conformance-1") is True
        assert single.client_getname() in ("conformance-1", b"conformance-1")
        assert isinstance(single.client_id(), int)
        assert single.client_id() != other.client_id()
        assert other.client_getname() is None
        assert "cannot contain spaces" in error_text(single, "CLIENT", "SETNAME", "a b")
    finally:
        single.close()
        other.close()
    assert r.config_get("save") == {"save": ""}
    assert r.config_get("appendonly") == {"appendonly": "yes"}
    assert set(r.config_get("append*")) == {"appendonly", "appendfsync"}
    assert r.config_get("no-such-setting") == {}
    assert "CONFIG GET" in error_text(r, "CONFIG", "SET", "save", "")


def test_command_introspection(r) -> None:
    table = r.command()
    count = r.command_count()
    assert count == len(table) >= 20
    for name in ("get", "set", "mget", "mset", "del", "unlink", "scan", "incr", "hello"):
        assert name in table, name
    get = table["get"]
    assert get["arity"] == 2
    assert (get["first_key_pos"], get["last_key_pos"], get["step_count"]) == (1, 1, 1)
    assert "readonly" in get["flags"]
    assert table["mset"]["arity"] == -3 and table["mset"]["step_count"] == 2
    assert table["unlink"]["arity"] == -2
    info = raw_call(r, "COMMAND", "INFO", "get", "nosuchcommand")
    assert info[0][0] == b"get" and info[1] is None
    docs = raw_call(r, "COMMAND", "DOCS", "get", "set")
    if isinstance(docs, list):  # RESP2: a flat list of name, doc fields
        docs = {docs[i]: dict(zip(*[iter(docs[i + 1])] * 2, strict=True)) for i in (0, 2)}
    assert set(docs) == {b"get", b"set"}
    assert b"value of a key" in docs[b"get"][b"summary"]
    assert "unknown subcommand" in error_text(r, "COMMAND", "FROB")


def test_hello_switches_protocol(raw) -> None:
    client_id = raw.call("CLIENT", "ID")
    assert raw.call("HELLO", "3") == {
        b"server": b"redis",
        b"version": b"7.2.0",
        b"proto": 3,
        b"id": client_id,
        b"mode": b"cluster",
        b"role": b"master",
        b"modules": [],
    }
    assert raw.call("CONFIG", "GET", "save") == {b"save": b""}  # maps from now on
    raw.send(raw.encode("HELLO", "2"))
    reply = raw.replies(1)[0]
    assert isinstance(reply, list) and reply[:2] == [b"server", b"redis"]
    assert reply[reply.index(b"proto") + 1] == 2
    error = raw.call("HELLO", "4")
    assert isinstance(error, hiredis.ReplyError) and str(error).startswith("NOPROTO")
    named = raw.call("HELLO", "3", "SETNAME", "via-hello")
    assert named[b"proto"] == 3
    assert raw.call("CLIENT", "GETNAME") == b"via-hello"


def test_quit_replies_ok_and_closes_before_later_commands(cluster3, raw, partition_map) -> None:
    key = owned_key(partition_map, "after-quit", owned_here=False)
    raw.send(raw.encode("PING") + raw.encode("QUIT") + raw.encode("SET", key, "x"))
    assert raw.read_raw_until_closed() == b"+PONG\r\n+OK\r\n"
    with redis.Redis(port=cluster3.resp_port(CONNECTED)) as client:
        assert client.get(key) is None


def test_error_replies_use_redis_text(raw) -> None:
    def error(*arguments: str) -> str:
        reply = raw.call(*arguments)
        assert isinstance(reply, hiredis.ReplyError), reply
        return str(reply)

    assert error("GET") == "ERR wrong number of arguments for 'get' command"
    assert error("SET", "k") == "ERR wrong number of arguments for 'set' command"
    assert error("UNLINK") == "ERR wrong number of arguments for 'unlink' command"
    assert error("MSET", "a", "1", "b") == "ERR wrong number of arguments for 'mset' command"
    assert error("NOSUCH", "a", "b") == (
        "ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' "
    )
    assert error("NOSUCH") == "ERR unknown command 'NOSUCH', with args beginning with: "
    assert error("SET", "k", "v", "BOGUS") == "ERR syntax error"
    assert error("SET", "k", "v", "NX", "XX") == "ERR syntax error"
    assert error("SET", "k", "v", "EX") == "ERR syntax error"
    assert error("SET", "k", "v", "EX", "10", "PX", "10") == "ERR syntax error"
    assert error("SET", "k", "v", "KEEPTTL", "EX", "10") == "ERR syntax error"
    assert error("SET", "k", "v", "EX", "ten") == "ERR value is not an integer or out of range"
    assert error("SET", "k", "v", "EX", "0") == "ERR invalid expire time in 'set' command"
    assert error("SET", "k", "v", "PX", "-5") == "ERR invalid expire time in 'set' command"
    assert error("DECRBY", "k", str(-(2**63))) == "ERR decrement would overflow"
    assert raw.call("GET", "k") is None  # none of the refused SETs wrote anything
    assert raw.call("PING") == b"PONG"  # and the connection still works


# --- single-key commands -----------------------------------------------------------------


def test_set_get_and_conditions(r, route) -> None:
    key, missing = route.key("set"), route.key("missing")
    assert r.get(missing) is None
    assert r.set(key, "one") is True
    assert r.get(key) == b"one"
    assert r.set(key, "two", nx=True) is None
    assert r.get(key) == b"one"
    assert r.set(missing, "x", xx=True) is None
    assert r.exists(missing) == 0
    assert r.set(key, "three", xx=True) is True
    assert r.get(key) == b"three"
    # GET returns the previous value; combined with NX/XX it reports without writing.
    assert r.set(key, "four", get=True) == b"three"
    assert r.set(key, "five", nx=True, get=True) == b"four"
    assert r.get(key) == b"four"
    assert r.set(missing, "six", xx=True, get=True) is None
    assert r.exists(missing) == 0
    assert r.set(missing, "seven", nx=True, get=True) is None
    assert r.get(missing) == b"seven"
    fresh = route.key("fresh")
    assert r.set(fresh, "v", get=True) is None
    assert r.get(fresh) == b"v"


def test_expiry_options_and_keepttl(r, route) -> None:
    now_ms = int(time.time() * 1000)
    long_keys = {
        route.key("ex"): {"ex": 1000},
        route.key("px"): {"px": 1_000_000},
        route.key("exat"): {"exat": now_ms // 1000 + 1000},
        route.key("pxat"): {"pxat": now_ms + 1_000_000},
    }
    for key, option in long_keys.items():
        assert r.set(key, "long", **option) is True
    past = route.key("exat-past")
    assert r.set(past, "gone", exat=1) is True
    ttl_ms = 800
    started = time.monotonic()
    short = route.key("short")
    kept = route.key("keepttl")
    replaced = route.key("replaced")
    appended = route.key("appended")
    counted = route.key("counted")
    for key in (short, kept, replaced, appended):
        assert r.set(key, "v", px=ttl_ms) is True
    assert r.set(counted, "1", px=ttl_ms) is True
    assert r.set(kept, "v2", keepttl=True) is True  # keeps the expiry
    assert r.set(replaced, "v2") is True  # a plain SET clears it
    assert r.append(appended, "+") == 2  # APPEND and INCR keep it, as in Redis
    assert r.incr(counted) == 2
    assert time.monotonic() - started < ttl_ms / 1000, "machine too slow for this check"
    assert r.mget([short, kept, appended, counted]) == [b"v", b"v2", b"v+", b"2"]
    assert r.get(past) is None
    time.sleep(max(0.0, started + ttl_ms / 1000 + 0.3 - time.monotonic()))
    assert r.mget([short, kept, appended, counted]) == [None, None, None, None]
    assert [r.get(key) for key in (short, kept, appended, counted)] == [None] * 4
    assert r.exists(short, kept, appended, counted) == 0
    assert r.get(replaced) == b"v2"
    for key in long_keys:
        assert r.get(key) == b"long"
    # An expiry past the 64-bit range is refused, as Redis does, and writes nothing.
    huge = route.key("huge")
    with pytest.raises(redis.ResponseError, match="invalid expire time"):
        r.set(huge, "v", px=MAX_INT64)
    with pytest.raises(redis.ResponseError, match="invalid expire time"):
        r.set(huge, "v", ex=MAX_INT64 // 1000)
    assert r.set(huge, "v", pxat=MAX_INT64) is True
    assert r.get(huge) == b"v"
    assert r.ping() is True


def test_delete_unlink_exists_count_keys(r, route) -> None:
    keys = [route.key(f"del{i}") for i in range(6)]
    missing = route.key("del-missing")
    r.mset({key: b"v" for key in keys})
    assert r.exists(keys[0], keys[0], keys[0], missing) == 3
    assert r.exists(*keys) == 6
    assert r.delete(keys[0], keys[1], keys[1], missing) == 2
    assert r.unlink(keys[2], keys[3], missing, keys[2]) == 2
    assert r.delete(missing) == 0
    assert r.exists(*keys) == 2
    assert r.mget(keys) == [None, None, None, None, b"v", b"v"]


def test_mget_mset_span_many_partitions(r, route) -> None:
    keys = [route.key(f"multi{i}") for i in range(200)]
    assert len({partition_of(key, 64) for key in keys}) > 20
    values = {key: b"value-" + key for key in keys}
    assert r.mset(values) is True
    missing = route.key("multi-missing")
    assert r.mget([*keys, missing]) == [values[key] for key in keys] + [None]
    assert r.mget(keys[::-1]) == [values[key] for key in keys[::-1]]


def test_increments_and_their_errors(r, route) -> None:
    counter = route.key("counter")
    assert r.incr(counter) == 1
    assert r.incrby(counter, 10) == 11
    assert r.decr(counter) == 10
    assert r.decrby(counter, 3) == 7
    assert r.incrby(counter, -7) == 0
    assert r.get(counter) == b"0"
    text = route.key("text")
    r.set(text, "abc")
    for bad in (b"abc", b" 1", b"01", b"1.5", b""):
        r.set(text, bad)
        with pytest.raises(redis.ResponseError, match="^value is not an integer or out of range$"):
            r.incr(text)
        assert r.get(text) == bad
    big = route.key("big")
    r.set(big, str(MAX_INT64))
    with pytest.raises(redis.ResponseError, match="^increment or decrement would overflow$"):
        r.incr(big)
    r.set(big, str(-(2**63)))
    with pytest.raises(redis.ResponseError, match="^increment or decrement would overflow$"):
        r.decrby(big, 1)
    assert r.get(big) == str(-(2**63)).encode()
    for argument in ("ten", "1.0", str(2**63), ""):
        with pytest.raises(redis.ResponseError, match="not an integer or out of range"):
            r.execute_command("INCRBY", counter, argument)
    with pytest.raises(redis.ResponseError, match="^decrement would overflow$"):
        r.execute_command("DECRBY", counter, str(-(2**63)))
    assert r.get(counter) == b"0"
    assert r.incrby(counter, MAX_INT64) == MAX_INT64


def test_append_and_strlen(r, route) -> None:
    key = route.key("append")
    assert r.strlen(key) == 0
    assert r.append(key, "Hello") == 5
    assert r.append(key, b" World\x00") == 12
    assert r.get(key) == b"Hello World\x00"
    assert r.strlen(key) == 12


def test_binary_safe_keys_and_values(r, route) -> None:
    value = bytes(range(256)) + b"\r\n\x00\r\n"
    keys = []
    for index in range(3):
        while True:
            key = b"bin\r\n\x00" + os.urandom(8) + b"\r\n" + bytes([index])
            owner = route.partition_map.owner("default", key)
            assert owner is not None
            if (owner.node_id == f"node{CONNECTED}") == route.owned_here:
                break
        keys.append(key)
    assert r.set(keys[0], value) is True
    assert r.get(keys[0]) == value
    assert r.strlen(keys[0]) == len(value)
    assert r.mset({keys[1]: value[::-1], keys[2]: b""}) is True
    assert r.mget(keys) == [value, value[::-1], b""]
    assert r.append(keys[2], b"\x00\r\n") == 3
    assert r.exists(*keys) == 3
    assert r.delete(*keys) == 3


def test_sixteen_mebibyte_value_through_a_non_owner(r, partition_map) -> None:
    key = owned_key(partition_map, "large", owned_here=False)
    value = os.urandom(16 * 1024 * 1024)
    assert r.set(key, value) is True
    assert r.strlen(key) == len(value)
    assert r.get(key) == value
    assert r.delete(key) == 1


# --- whole-keyspace commands -------------------------------------------------------------


def fill_keyspace(cluster, name: str, protocol: int) -> set[bytes]:
    """Create keyspace `name` and write 500 keys over its 64 partitions through node1."""
    fresh_keyspace(cluster, name)
    keys = {f"user:{index}".encode() for index in range(450)}
    keys |= {f"item:{index}".encode() for index in range(49)}
    keys.add(b"bin\r\n\x00key")
    with keyspace_client(cluster, CONNECTED, name, protocol) as client:
        assert client.mset({key: b"v" for key in keys}) is True
    return keys


def test_scan_walks_every_key_exactly_once(cluster3, protocol) -> None:
    name = f"scan_resp{protocol}"
    keys = fill_keyspace(cluster3, name, protocol)
    for index in range(3):
        with keyspace_client(cluster3, index, name, protocol) as client:
            walked = list(client.scan_iter(count=37))
            assert len(walked) == len(keys)
            assert set(walked) == keys
            users = list(client.scan_iter(match="user:1*", count=50))
            assert sorted(users) == sorted(k for k in keys if k.startswith(b"user:1"))
            assert list(client.scan_iter(match="nothing*")) == []
            # One SCAN call never returns more than COUNT keys.
            cursor, page = client.scan(0, count=5)
            assert len(page) <= 5
            steps = 1
            while cursor != 0:
                cursor, page = client.scan(cursor, count=5)
                assert len(page) <= 5
                steps += 1
            assert steps >= len(keys) // 5
    with redis.Redis(port=cluster3.resp_port(0), protocol=protocol) as client:
        assert not set(client.scan_iter(match="user:*", count=100)) & keys  # other keyspace


def test_scan_argument_errors(r) -> None:
    assert error_text(r, "SCAN", "abc") == "invalid cursor"
    assert error_text(r, "SCAN", "0", "COUNT", "0") == "syntax error"
    assert error_text(r, "SCAN", "0", "MATCH") == "syntax error"
    assert error_text(r, "SCAN", "0", "BOGUS", "1") == "syntax error"


def test_dbsize_and_info_keyspace_count_the_whole_cluster(cluster3, protocol) -> None:
    name = f"dbsize_resp{protocol}"
    keys = fill_keyspace(cluster3, name, protocol)
    for index in range(3):
        with keyspace_client(cluster3, index, name, protocol) as client:
            assert client.dbsize() == len(keys)
            assert client.info("keyspace")["db0"]["keys"] == len(keys)
    with keyspace_client(cluster3, 2, name, protocol) as client:
        assert client.delete(*sorted(keys)[:10]) == 10
    for index in range(3):
        with keyspace_client(cluster3, index, name, protocol) as client:
            assert client.dbsize() == len(keys) - 10


def test_info_sections(r, cluster3) -> None:
    server = r.info("server")
    assert server["redis_version"] == "7.2.0"
    assert server["tcp_port"] == cluster3.resp_port(CONNECTED)
    assert server["node_id"] == f"node{CONNECTED}"
    assert server["cluster_members"] == 3
    assert "connected_clients" not in server
    clients = r.info("clients")
    assert clients["connected_clients"] >= 1
    before = r.info("stats")["total_commands_processed"]
    for index in range(5):
        r.set(f"info-stats:{index}", "v")
    assert r.info("stats")["total_commands_processed"] >= before + 5
    everything = r.info()
    for field in ("redis_version", "connected_clients", "total_commands_processed", "db0"):
        assert field in everything
    text = raw_call(r, "INFO")
    for header in (b"# Server", b"# Clients", b"# Stats", b"# Keyspace"):
        assert header in text


# --- pipelining --------------------------------------------------------------------------


def test_redis_py_pipeline_of_a_thousand_mixed_commands(r, route) -> None:
    counter = route.key("pipe-counter")
    pipe = r.pipeline(transaction=False)
    expected: list[object] = []
    keys = [route.key(f"pipe{i}") for i in range(100)]
    for group in range(200):  # five commands per group
        key = keys[group % 100]
        pipe.set(key, f"v{group}")
        pipe.get(key)
        pipe.incr(counter)
        pipe.echo(f"e{group}")
        pipe.exists(key, key, b"pipe-missing")
        expected += [True, f"v{group}".encode(), group + 1, f"e{group}".encode(), 2]
    assert pipe.execute() == expected


def test_one_write_pipeline_replies_in_request_order(cluster3, partition_map) -> None:
    """Local commands finish before forwarded ones; replies must still keep request order."""
    local = owned_key(partition_map, "order-local", owned_here=True)
    remote = [owned_key(partition_map, f"order-remote{i}", owned_here=False) for i in range(50)]
    counter = owned_key(partition_map, "order-counter", owned_here=False)
    with redis.Redis(port=cluster3.resp_port(CONNECTED)) as client:
        client.set(local, "L")
    commands: list[bytes] = []
    expected: list[object] = []
    for round_ in range(6):
        for index, key in enumerate(remote):
            value = f"{round_}-{index}".encode()
            commands.append(RawConnection.encode("SET", key, value))
            expected.append(b"OK")
            commands.append(RawConnection.encode("GET", local))
            expected.append(b"L")
            commands.append(RawConnection.encode("ECHO", value))
            expected.append(value)
            commands.append(RawConnection.encode("INCR", counter))
            expected.append(round_ * len(remote) + index + 1)
            commands.append(RawConnection.encode("GET", key))
            expected.append(value)
            commands.append(RawConnection.encode("PING"))
            expected.append(b"PONG")
        commands.append(RawConnection.encode("MGET", local, *remote[:5]))
        expected.append([b"L", *[f"{round_}-{i}".encode() for i in range(5)]])
    connection = RawConnection(cluster3.resp_port(CONNECTED))
    try:
        connection.send(b"".join(commands))  # one write of ~1,800 commands
        assert connection.replies(len(expected)) == expected
    finally:
        connection.close()
