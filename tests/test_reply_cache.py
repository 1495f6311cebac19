"""The reply cache: hot GETs answered from ready-made replies, never a stale one.

A cached reply must be dropped by every write to its key (fast path or general path),
never made for an expiring record, dropped wholesale when what the node serves changes
(salted keys, ownership), and its hits must still count as load."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path

from cluster_harness import free_base_port
from fake_transport import RecordingTransport
from quorumdb.api.resp_server import RespConnection, RespServer
from quorumdb.core.cluster_metadata import command
from quorumdb.core.keyspace import KeyspaceConfig
from quorumdb.core.messages import ChangeMetadata, CreateKeyspace
from quorumdb.runtime import node_config
from quorumdb.runtime.group_commit import FsyncPolicy, GroupCommit
from quorumdb.runtime.node_runtime import NodeRuntime
from quorumdb.runtime.process import resp_limits_for
from quorumdb.runtime.reply_cache import ENTRY_OVERHEAD_BYTES, ReplyCache
from quorumdb.storage.interface import StorageError, Write
from quorumdb.storage.lmdb_engine import LmdbStorage


def resp(*arguments: bytes) -> bytes:
    return b"*%d\r\n" % len(arguments) + b"".join(
        b"$%d\r\n%s\r\n" % (len(argument), argument) for argument in arguments
    )


class Client:
    """One in-process connection to a node runtime, fed chunks of commands."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime
        self.transport = RecordingTransport()
        self.connection = RespConnection(RespServer(runtime, resp_limits_for(runtime.settings)))
        self.connection.connection_made(self.transport)  # type: ignore[arg-type]

    async def send(self, *commands: bytes) -> bytes:
        before = len(self.transport.written)
        self.connection.data_received(b"".join(commands))
        for _ in range(50):  # replies wait for the group's sync, a few turns away
            await asyncio.sleep(0)
        return self.transport.written[before:]


def new_runtime(tmp_path: Path, fsync: str = "no", base_port: int = 19970) -> NodeRuntime:
    settings = node_config.local_settings(0, 1, base_port, str(tmp_path), fsync)
    return NodeRuntime(settings, asyncio.get_running_loop())


# --- the cache on its own --------------------------------------------------------------


def test_entries_are_bounded_by_bytes_and_evicted_oldest_first() -> None:
    entry = 1 + 10 + ENTRY_OVERHEAD_BYTES
    cache = ReplyCache(capacity_bytes=3 * entry)
    entries = cache.for_keyspace("default", routing_version=1)
    for key in (b"a", b"b", b"c", b"d"):
        cache.put(entries, key, b"x" * 10)
    assert list(entries) == [b"b", b"c", b"d"] and cache.size_bytes == 3 * entry
    cache.put(entries, b"e", b"x" * 5000)  # above the per-reply limit: not kept
    assert b"e" not in entries
    cache.forget("default", b"c")
    cache.forget_writes([Write("default", 0, b"b", None), Write("other", 0, b"d", None)])
    assert list(entries) == [b"d"] and cache.size_bytes == entry


def test_a_new_routing_version_empties_every_keyspace_but_keeps_the_dicts() -> None:
    cache = ReplyCache(capacity_bytes=1 << 20)
    first = cache.for_keyspace("default", routing_version=1)
    second = cache.for_keyspace("other", routing_version=1)
    cache.put(first, b"k", b"$1\r\nv\r\n")
    cache.put(second, b"k", b"$1\r\nw\r\n")
    assert cache.for_keyspace("default", routing_version=1) is first and len(cache) == 2
    assert cache.for_keyspace("default", routing_version=2) is first
    assert len(cache) == 0 and cache.size_bytes == 0 and not second


def test_inserting_into_an_empty_keyspace_evicts_from_another() -> None:
    cache = ReplyCache(capacity_bytes=2 * (2 + ENTRY_OVERHEAD_BYTES))
    first = cache.for_keyspace("default", routing_version=0)
    cache.put(first, b"a", b"1")
    cache.put(first, b"b", b"1")
    second = cache.for_keyspace("other", routing_version=0)
    cache.put(second, b"c", b"1")
    assert list(first) == [b"b"] and list(second) == [b"c"]


# --- through the RESP server --------------------------------------------------------


def test_a_hot_get_is_answered_from_the_cache(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = new_runtime(tmp_path)
        client = Client(runtime)
        replies = runtime.commit.replies
        assert await client.send(resp(b"SET", b"hot", b"value")) == b"+OK\r\n"
        assert await client.send(resp(b"GET", b"hot") * 3) == b"$5\r\nvalue\r\n" * 3
        assert (replies.miss_count, replies.hit_count) == (1, 2)
        assert replies.keyspaces["default"] == {b"hot": b"$5\r\nvalue\r\n"}
        assert runtime.metrics.requests_by_operation["get"] == 3
        info = await client.send(resp(b"INFO", b"persistence"))
        assert b"reply_cache_hits:2\r\n" in info and b"reply_cache_misses:1\r\n" in info
        await runtime.close()

    asyncio.run(scenario())


def test_every_kind_of_write_drops_the_cached_reply(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = new_runtime(tmp_path, fsync="always")
        client = Client(runtime)
        get = resp(b"GET", b"k")
        steps = [
            (resp(b"SET", b"k", b"1"), b"+OK\r\n", b"$1\r\n1\r\n"),  # fast path
            (resp(b"SET", b"k", b"2"), b"+OK\r\n", b"$1\r\n2\r\n"),  # fast path again
            (resp(b"INCR", b"k"), b":3\r\n", b"$1\r\n3\r\n"),
            (resp(b"APPEND", b"k", b"x"), b":2\r\n", b"$2\r\n3x\r\n"),
            (resp(b"SET", b"k", b"y", b"GET"), b"$2\r\n3x\r\n", b"$1\r\ny\r\n"),
            (resp(b"MSET", b"k", b"z", b"j", b"0"), b"+OK\r\n", b"$1\r\nz\r\n"),
            (resp(b"DEL", b"k"), b":1\r\n", b"$-1\r\n"),
            (resp(b"SET", b"k", b"w", b"NX"), b"+OK\r\n", b"$1\r\nw\r\n"),
        ]
        for write, write_reply, read_reply in steps:
            # Cached first; then the write and reads in one chunk, then reads again.
            await client.send(get, get)
            answered = await client.send(get, write, get, get)
            assert answered[-2 * len(read_reply) :] == read_reply * 2, (write, answered)
            assert answered[: -2 * len(read_reply)].endswith(write_reply), (write, answered)
            assert await client.send(get) == read_reply
        assert runtime.commit.replies.hit_count > 0
        await runtime.close()

    asyncio.run(scenario())


def test_expiring_records_are_never_cached(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = new_runtime(tmp_path)
        client = Client(runtime)
        await client.send(resp(b"SET", b"brief", b"v", b"PX", b"40"))
        assert await client.send(resp(b"GET", b"brief") * 2) == b"$1\r\nv\r\n" * 2
        assert runtime.commit.replies.size_bytes == 0
        await asyncio.sleep(0.08)
        assert await client.send(resp(b"GET", b"brief")) == b"$-1\r\n"
        # A cached key given an expiry later is dropped by that write.
        await client.send(resp(b"SET", b"later", b"v"), resp(b"GET", b"later"))
        assert runtime.commit.replies.size_bytes > 0
        await client.send(resp(b"SET", b"later", b"v", b"PX", b"40"), resp(b"GET", b"later"))
        assert runtime.commit.replies.size_bytes == 0
        await asyncio.sleep(0.08)
        assert await client.send(resp(b"GET", b"later")) == b"$-1\r\n"
        await runtime.close()

    asyncio.run(scenario())


def test_reads_served_from_the_cache_still_count_as_load(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = new_runtime(tmp_path)
        client = Client(runtime)
        await client.send(resp(b"SET", b"hot", b"v"))
        for _ in range(100):
            await client.send(resp(b"GET", b"hot") * 16)
        assert runtime.commit.replies.hit_count >= 1599
        load = runtime.node.load
        total = sum(load.partition_totals["default"].values())
        every = load.sample_every
        assert 1601 - every <= total <= 1601 + every, total
        await runtime.close()

    asyncio.run(scenario())


def test_salted_keys_and_switched_keyspaces_are_never_answered_from_stale_entries(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        runtime = new_runtime(tmp_path, base_port=free_base_port(1))
        await runtime.start()
        try:
            node = runtime.node
            deadline = time.monotonic() + 20
            while node.controller.leader_id != node.node_id:
                assert time.monotonic() < deadline, "no controller leader"
                await asyncio.sleep(0.02)
            client = Client(runtime)
            await client.send(resp(b"SET", b"likes", b"5"))
            assert await client.send(resp(b"GET", b"likes") * 2) == b"$1\r\n5\r\n" * 2
            assert runtime.commit.replies.keyspaces["default"]
            salt = command("salt_key", keyspace="default", key_hex=b"likes".hex(), ways=4)
            outcome = await runtime.call(ChangeMetadata(salt))
            assert outcome.error is None, outcome
            assert node.salted_keys == {"default": {b"likes": 4}}
            for expected in (6, 7, 8):
                assert await client.send(resp(b"INCR", b"likes")) == b":%d\r\n" % expected
                assert await client.send(resp(b"GET", b"likes")) == b"$1\r\n%d\r\n" % expected
            # A keyspace switched in the middle of a read: the GETs after it look in the
            # other keyspace's entries (a ring keyspace: the general routing path).
            for name, partitioning in ((b"other", "fixed:8"), (b"ringed", "ring:vnodes=8")):
                created = await runtime.call(
                    CreateKeyspace(KeyspaceConfig(name.decode(), partitioning))
                )
                assert created.error is None, created
                get = resp(b"GET", b"k")
                use_other = resp(b"QUORUMDB.KEYSPACE", name)
                use_default = resp(b"QUORUMDB.KEYSPACE", b"default")
                await client.send(resp(b"SET", b"k", b"in default"), get, get)
                answered = await client.send(get, use_other, get, resp(b"SET", b"k", b"x"), get)
                assert answered == b"$10\r\nin default\r\n+OK\r\n$-1\r\n+OK\r\n$1\r\nx\r\n"
                answered = await client.send(get, use_default, get)
                assert answered == b"$1\r\nx\r\n+OK\r\n$10\r\nin default\r\n"
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_random_command_streams_answer_as_without_the_cache(tmp_path: Path) -> None:
    """Differential: the same random chunks of reads and writes, with the cache and with
    a cache of zero bytes, give the same replies byte for byte."""
    seed = int(os.environ.get("QUORUMDB_TEST_SEED", random.randrange(2**32)))
    print(
        f"seed {seed}; replay: QUORUMDB_TEST_SEED={seed} "
        "pytest tests/test_reply_cache.py -k random_command_streams"
    )
    rng = random.Random(seed)
    keys = [b"k%d" % index for index in range(6)]

    def random_command() -> bytes:
        key = rng.choice(keys)
        kind = rng.random()
        if kind < 0.55:
            return resp(b"GET", key)
        if kind < 0.7:
            return resp(b"SET", key, b"%d" % rng.randrange(100))
        if kind < 0.75:
            return resp(b"SET", key, b"%d" % rng.randrange(100), b"EX", b"1000")
        if kind < 0.85:
            return resp(b"INCR", key)
        if kind < 0.9:
            return resp(b"DEL", key)
        if kind < 0.95:
            return resp(b"APPEND", key, b"a")
        return resp(b"MGET", key, rng.choice(keys))

    chunks = [[random_command() for _ in range(rng.randrange(1, 20))] for _ in range(150)]

    async def run(directory: Path, cached: bool) -> bytes:
        runtime = new_runtime(directory, fsync=rng.choice(["always", "no"]))
        if not cached:
            runtime.commit.replies = ReplyCache(capacity_bytes=0)
        client = Client(runtime)
        answers = [await client.send(*chunk) for chunk in chunks]
        hits = runtime.commit.replies.hit_count
        await runtime.close()
        return b"".join(answers) + b"|hits:%d" % bool(hits)

    with_cache = asyncio.run(run(tmp_path / "cached", True))
    without = asyncio.run(run(tmp_path / "plain", False))
    assert with_cache.endswith(b"|hits:1") and without.endswith(b"|hits:0")
    assert with_cache[:-7] == without[:-7]


def test_batches_of_cached_reads_sample_as_the_same_reads_one_by_one(tmp_path: Path) -> None:
    seed = int(os.environ.get("QUORUMDB_TEST_SEED", random.randrange(2**32)))
    print(
        f"seed {seed}; replay: QUORUMDB_TEST_SEED={seed} "
        "pytest tests/test_reply_cache.py -k batches"
    )
    rng = random.Random(seed)
    counts = [rng.randrange(1, 40) for _ in range(200)]

    async def scenario() -> None:
        batched = new_runtime(tmp_path / "batched")
        one_by_one = new_runtime(tmp_path / "one_by_one", base_port=19980)
        for count in counts:
            batched.node.note_cached_reads("default", b"hot", count)
            for _ in range(count):
                one_by_one.node.read_local_record("default", b"hot")
        assert batched.node.load.partition_totals == one_by_one.node.load.partition_totals
        assert batched.node.load.hottest(0) == one_by_one.node.load.hottest(0)
        assert batched.node.load.partition_totals["default"]  # some samples were taken
        await batched.close()
        await one_by_one.close()

    asyncio.run(scenario())


def test_a_group_that_fails_to_be_stored_takes_the_replies_read_from_it(tmp_path: Path) -> None:
    """A GET in the same turn as a write reads it from the overlay and caches its reply;
    if the group then cannot be stored, that reply shows a value that never existed."""

    class FailingOnPoison(LmdbStorage):
        def apply(self, writes: Sequence[Write], log_sequence: int | None = None) -> None:
            if any(write.key == b"poison" for write in writes):
                raise StorageError("simulated: the storage transaction failed")
            super().apply(writes, log_sequence)

    async def scenario() -> None:
        storage = FailingOnPoison(str(tmp_path / "lmdb"))
        commit = GroupCommit(storage, FsyncPolicy.NO, asyncio.get_running_loop())
        entries = commit.replies.for_keyspace("default", routing_version=0)
        commit.add_one("default", 0, b"k", b"\x00new")
        assert commit.get("default", 0, b"k") == b"\x00new"  # what the GET path reads
        commit.replies.put(entries, b"k", b"$3\r\nnew\r\n")
        commit.add((Write("default", 0, b"poison", b"\x00x"),))
        for _ in range(5):
            await asyncio.sleep(0)
        assert commit.lost_group_count == 1
        assert commit.get("default", 0, b"k") is None and not entries
        storage.close()

    asyncio.run(scenario())
