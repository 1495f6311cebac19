"""LoggedStorage's memtable: logged writes wait there, readable, before one LMDB commit.

Crash recovery with the memtable on (its default) is covered by the random histories in
`test_write_ahead_log.py`; these tests cover what the memtable itself promises."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fake_transport import RecordingTransport
from quorumdb.api.resp_server import RespConnection, RespServer
from quorumdb.runtime import node_config
from quorumdb.runtime.node_runtime import NodeRuntime
from quorumdb.runtime.process import resp_limits_for
from quorumdb.storage.interface import StorageError, Write
from quorumdb.storage.logged_storage import LoggedStorage


def put(key: bytes, value: bytes, partition: int = 0) -> Write:
    return Write("default", partition, key, value)


def delete(key: bytes, partition: int = 0) -> Write:
    return Write("default", partition, key, None)


def test_a_hot_key_costs_lmdb_one_commit_per_memtable_not_per_group(tmp_path: Path) -> None:
    """With a checkpoint's snapshot held, every LMDB commit copies its pages to new ones:
    one commit per group grew the file by megabytes for a single key."""
    sizes = {}
    for writes_max in (0, 4096):
        storage = LoggedStorage(
            str(tmp_path / f"memtable{writes_max}"),
            checkpoint_groups=1 << 30,
            memtable_writes_max=writes_max,
        )
        try:
            storage.apply([put(b"other", b"x")])  # the partition exists: later groups wait
            for group in range(1_500):
                storage.apply([put(b"hot", b"v%d" % group)])
                storage.sync()
            assert storage.get("default", 0, b"hot") == b"v1499"
            sizes[writes_max] = storage.size_bytes()
            print(
                f"memtable_writes_max={writes_max}: {storage.memtable_flush_count} LMDB "
                f"commits of the memtable, data file {sizes[writes_max]} B"
            )
            if writes_max:
                assert storage.memtable_flush_count == 0
                assert storage.memtable_write_count == 1  # "other" made the partition
        finally:
            storage.close()
    assert sizes[0] > 4 << 20
    assert sizes[4096] < 1 << 20


def test_reads_see_the_memtable_before_lmdb(tmp_path: Path) -> None:
    storage = LoggedStorage(str(tmp_path / "node"))
    try:
        storage.apply([put(b"a", b"1"), put(b"b", b"1"), put(b"c", b"1")])
        storage.flush_memtable()
        storage.apply([put(b"a", b"2"), delete(b"b"), put(b"d", b"2")])
        storage.apply([put(b"a", b"3")])
        assert storage.memtable_write_count == 3
        assert storage.engine.get("default", 0, b"a") == b"1"  # LMDB still has the old one
        assert storage.get("default", 0, b"a") == b"3"
        assert storage.get("default", 0, b"b") is None  # a delete waiting hides LMDB's
        assert storage.get("default", 0, b"c") == b"1"
        assert storage.get("default", 0, b"d") == b"2"
        # Scans and counts are LMDB's: the memtable goes there first.
        assert storage.count("default", 0) == 3
        assert storage.memtable_write_count == 0
        assert storage.scan("default", 0, b"", None, 10) == [
            (b"a", b"3"),
            (b"c", b"1"),
            (b"d", b"2"),
        ]
    finally:
        storage.close()


def test_partitions_counts_a_partition_whose_last_key_waits_to_be_deleted(
    tmp_path: Path,
) -> None:
    storage = LoggedStorage(str(tmp_path / "node"))
    try:
        storage.apply([put(b"a", b"1", partition=3), put(b"b", b"1", partition=4)])
        storage.apply([delete(b"a", partition=3)])
        assert storage.partitions() == [("default", 4)]
    finally:
        storage.close()


def test_the_memtable_is_written_to_lmdb_at_its_bounds(tmp_path: Path) -> None:
    storage = LoggedStorage(
        str(tmp_path / "node"), memtable_writes_max=10, memtable_bytes_max=1_000
    )
    try:
        storage.apply([put(b"first", b"x")])
        for group in range(25):
            storage.apply([put(b"key%02d" % group, b"v")])
            assert storage.memtable_write_count <= 10
        assert storage.memtable_flush_count >= 2
        storage.apply([put(b"big", b"x" * 2_000)])  # over the byte bound at once
        storage.apply([put(b"next", b"y")])
        assert storage.memtable_write_count == 1
        assert storage.engine.get("default", 0, b"big") == b"x" * 2_000
    finally:
        storage.close()


def test_a_key_rewritten_counts_once_in_the_memtables_bytes(tmp_path: Path) -> None:
    """`memtable_bytes` is what the memtable holds: a hot key rewritten many times holds
    one record, so it neither overstates the memory nor forces early LMDB commits."""
    storage = LoggedStorage(str(tmp_path / "node"), memtable_bytes_max=10_000)
    try:
        storage.apply([put(b"first", b"x")])  # makes the partition
        for group in range(1_000):
            storage.apply([put(b"hot", b"%03d" % group + b"v" * 97)])
        assert storage.memtable_bytes == len(b"hot") + 100
        storage.apply([delete(b"hot")])
        assert storage.memtable_bytes == len(b"hot")
        assert storage.memtable_flush_count == 0
        assert storage.get("default", 0, b"hot") is None
    finally:
        storage.close()


def test_a_clean_close_writes_the_memtable_to_lmdb(tmp_path: Path) -> None:
    path = str(tmp_path / "node")
    storage = LoggedStorage(path)
    storage.apply([put(b"k", b"v")])
    storage.apply([put(b"k", b"w")])
    storage.close()
    reopened = LoggedStorage(path)
    try:
        assert reopened.replayed_record_count == 0
        assert reopened.engine.get("default", 0, b"k") == b"w"
    finally:
        reopened.close()


def test_a_group_that_would_make_too_many_partitions_fails_itself_only(
    tmp_path: Path,
) -> None:
    """A new partition is made in LMDB when its first write is applied, not when the
    memtable is written later: the failure belongs to the group that caused it."""
    storage = LoggedStorage(str(tmp_path / "node"), max_partitions=2)
    try:
        storage.apply([put(b"a", b"1", partition=0), put(b"b", b"1", partition=1)])
        storage.apply([put(b"a", b"2", partition=0)])  # waits in the memtable
        logged = storage._next_sequence
        with pytest.raises(StorageError, match="max_partitions"):
            storage.apply([put(b"c", b"1", partition=2)])
        assert storage._next_sequence == logged  # nothing of it logged
        storage.apply([put(b"b", b"2", partition=1)])
        storage.sync()
        assert storage.get("default", 0, b"a") == b"2"
        assert storage.get("default", 1, b"b") == b"2"
    finally:
        storage.close()


def test_a_failed_memtable_commit_fails_the_next_group_and_keeps_the_memtable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LoggedStorage(str(tmp_path / "node"), memtable_writes_max=2)
    try:
        storage.apply([put(b"a", b"1")])
        storage.apply([put(b"a", b"2"), put(b"b", b"2")])
        storage.sync()  # acknowledged: the log holds them
        real_apply = storage.engine.apply

        def failing_apply(*arguments: object, **keywords: object) -> None:
            raise StorageError("disk full")

        monkeypatch.setattr(storage.engine, "apply", failing_apply)
        logged = storage._next_sequence
        with pytest.raises(StorageError, match="disk full"):
            storage.apply([put(b"c", b"3")])
        assert storage._next_sequence == logged
        assert storage.get("default", 0, b"a") == b"2"  # still read from the memtable
        assert storage.get("default", 0, b"b") == b"2"
        monkeypatch.setattr(storage.engine, "apply", real_apply)
        storage.apply([put(b"c", b"3")])
        assert storage.engine.get("default", 0, b"a") == b"2"
        assert storage.get("default", 0, b"c") == b"3"
    finally:
        storage.close()


def test_a_checkpoint_whose_fsync_failed_stops_all_later_writes_and_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LoggedStorage(str(tmp_path / "node"), checkpoint_groups=3)

    def failing_sync() -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage.engine, "sync_in_steps", failing_sync)
    with pytest.raises(OSError):
        for group in range(10):
            storage.apply([put(b"k", b"%d" % group)])
            storage.sync()
            if storage._checkpoint is not None:
                storage._checkpoint.exception()  # wait: the next apply sees it finished
    with pytest.raises(StorageError, match="failed earlier"):
        storage.apply([put(b"k", b"again")])
    with pytest.raises(StorageError, match="failed earlier"):
        storage.sync()
    monkeypatch.undo()  # a working fsync again: still no checkpoint may be taken
    with pytest.raises(StorageError, match="failed earlier"):
        storage.checkpoint_now()
    acknowledged = storage.get("default", 0, b"k")
    storage.close()  # keeps the log: no checkpoint may be trusted after the failure
    reopened = LoggedStorage(str(tmp_path / "node"))
    try:
        assert reopened.replayed_record_count > 0
        assert reopened.get("default", 0, b"k") == acknowledged
    finally:
        reopened.close()


def test_a_node_reads_through_its_memtable_and_reports_it(tmp_path: Path) -> None:
    """Through RESP on a durable node: SETs wait in the memtable, GETs read them there,
    INFO shows it, and DBSIZE (a count, LMDB's) writes it to LMDB first."""

    def resp(*parts: bytes) -> bytes:
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)

    async def scenario() -> None:
        settings = node_config.local_settings(0, 1, 19960, str(tmp_path), "always")
        runtime = NodeRuntime(settings, asyncio.get_running_loop())
        transport = RecordingTransport()
        connection = RespConnection(RespServer(runtime, resp_limits_for(settings)))
        connection.connection_made(transport)  # type: ignore[arg-type]

        async def send(*commands: bytes) -> bytes:
            before = len(transport.written)
            connection.data_received(b"".join(commands))
            for _ in range(50):  # replies wait for the group's sync, a few turns away
                await asyncio.sleep(0)
            return transport.written[before:]

        def info_field(info: bytes, name: bytes) -> int:
            line = next(line for line in info.split(b"\r\n") if line.startswith(name + b":"))
            return int(line.split(b":")[1])

        try:
            await send(resp(b"SET", b"first", b"0"))  # makes the partitions it lands in
            await send(resp(b"SET", b"a", b"1"), resp(b"SET", b"b", b"2"))
            await send(resp(b"SET", b"a", b"3"))
            logged = runtime.logged_storage
            assert logged is not None
            assert logged.memtable_write_count >= 1
            runtime.commit.replies.clear()
            assert await send(resp(b"GET", b"a"), resp(b"GET", b"b")) == (b"$1\r\n3\r\n$1\r\n2\r\n")
            info = await send(resp(b"INFO", b"persistence"))
            assert info_field(info, b"memtable_writes") == logged.memtable_write_count >= 1
            assert info_field(info, b"memtable_bytes") > 0
            assert await send(resp(b"DBSIZE")) == b":3\r\n"
            info = await send(resp(b"INFO", b"persistence"))
            assert info_field(info, b"memtable_writes") == 0
            assert info_field(info, b"memtable_flushes") >= 1
            assert await send(resp(b"GET", b"a")) == b"$1\r\n3\r\n"
        finally:
            await runtime.close()

    asyncio.run(scenario())
