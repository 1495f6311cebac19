"""Behaviour of both storage engines, plus what only one of them promises."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from quorumdb.storage.interface import CorruptRecordError, Storage, StorageError, Write
from quorumdb.storage.lmdb_engine import LmdbStorage
from quorumdb.storage.sim_disk import SimDisk


def put(keyspace: str, partition: int, key: bytes, value: bytes) -> Write:
    return Write(keyspace, partition, key, value)


def delete(keyspace: str, partition: int, key: bytes) -> Write:
    return Write(keyspace, partition, key, None)


@pytest.fixture(params=["lmdb", "sim"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    engine: Storage = (
        LmdbStorage(str(tmp_path / "db"), max_partitions=64)
        if request.param == "lmdb"
        else SimDisk()
    )
    yield engine
    engine.close()


# Both engines


def test_get_of_missing_key_and_partition_is_none(storage: Storage) -> None:
    assert storage.get("users", 0, b"nobody") is None
    storage.apply([put("users", 0, b"alice", b"1")])
    assert storage.get("users", 0, b"bob") is None
    assert storage.get("users", 1, b"alice") is None


def test_put_get_overwrite_delete(storage: Storage) -> None:
    storage.apply([put("users", 0, b"alice", b"first")])
    assert storage.get("users", 0, b"alice") == b"first"
    storage.apply([put("users", 0, b"alice", b"second")])
    assert storage.get("users", 0, b"alice") == b"second"
    storage.apply([delete("users", 0, b"alice")])
    assert storage.get("users", 0, b"alice") is None
    assert storage.count("users", 0) == 0


def test_empty_and_large_values_round_trip(storage: Storage) -> None:
    large_value = bytes(range(256)) * 64  # 16 KiB: spans LMDB overflow pages
    storage.apply([put("blobs", 0, b"empty", b""), put("blobs", 0, b"large", large_value)])
    assert storage.get("blobs", 0, b"empty") == b""
    assert storage.get("blobs", 0, b"large") == large_value


def test_deleting_a_missing_key_is_harmless(storage: Storage) -> None:
    storage.apply([delete("users", 0, b"ghost")])
    storage.apply([put("users", 0, b"alice", b"1"), delete("users", 0, b"ghost")])
    assert storage.get("users", 0, b"alice") == b"1"
    assert storage.count("users", 0) == 1


def test_partitions_and_keyspaces_are_isolated(storage: Storage) -> None:
    storage.apply(
        [
            put("users", 1, b"key", b"users-1"),
            put("users", 2, b"key", b"users-2"),
            put("orders", 1, b"key", b"orders-1"),
        ]
    )
    assert storage.get("users", 1, b"key") == b"users-1"
    assert storage.get("users", 2, b"key") == b"users-2"
    assert storage.get("orders", 1, b"key") == b"orders-1"
    storage.apply([delete("users", 1, b"key")])
    assert storage.get("users", 1, b"key") is None
    assert storage.get("users", 2, b"key") == b"users-2"
    assert storage.get("orders", 1, b"key") == b"orders-1"
    assert storage.scan("orders", 1, b"", None, 10) == [(b"key", b"orders-1")]


def test_scan_orders_keys_and_honours_bounds_and_limit(storage: Storage) -> None:
    keys = [b"\x00", b"a", b"ab", b"b", b"ba", b"c", b"\xff"]
    shuffled = keys[:]
    random.Random(7).shuffle(shuffled)
    storage.apply([put("ks", 3, key, b"v" + key) for key in shuffled])
    storage.apply([put("ks", 4, b"b", b"other partition")])

    def scanned_keys(start: bytes, end: bytes | None, limit: int) -> list[bytes]:
        pairs = storage.scan("ks", 3, start, end, limit)
        assert all(value == b"v" + key for key, value in pairs)
        return [key for key, _ in pairs]

    assert scanned_keys(b"", None, 100) == keys
    assert scanned_keys(b"a", b"b", 100) == [b"a", b"ab"]
    assert scanned_keys(b"aa", b"ba", 100) == [b"ab", b"b"]
    assert scanned_keys(b"", None, 3) == [b"\x00", b"a", b"ab"]
    assert scanned_keys(b"b", None, 2) == [b"b", b"ba"]
    assert scanned_keys(b"\xff", None, 100) == [b"\xff"]
    assert scanned_keys(b"\xff\x00", None, 100) == []
    assert scanned_keys(b"c", b"c", 100) == []
    assert scanned_keys(b"c", b"a", 100) == []
    assert scanned_keys(b"", None, 0) == []
    assert storage.scan("ks", 99, b"", None, 100) == []
    assert storage.scan("nope", 3, b"", None, 100) == []


def test_count(storage: Storage) -> None:
    assert storage.count("ks", 0) == 0
    storage.apply([put("ks", 0, b"%03d" % number, b"x") for number in range(250)])
    storage.apply([put("ks", 1, b"only", b"x")])
    assert storage.count("ks", 0) == 250
    assert storage.count("ks", 1) == 1
    storage.apply([delete("ks", 0, b"%03d" % number) for number in range(100)])
    assert storage.count("ks", 0) == 150


def test_partitions_lists_only_non_empty_sorted(storage: Storage) -> None:
    assert storage.partitions() == []
    storage.apply(
        [
            put("users", 10, b"k", b"v"),
            put("users", 2, b"k", b"v"),
            put("orders", 7, b"k", b"v"),
            put("audit", 0, b"k", b"v"),
        ]
    )
    assert storage.partitions() == [("audit", 0), ("orders", 7), ("users", 2), ("users", 10)]
    storage.apply([delete("audit", 0, b"k")])
    assert storage.partitions() == [("orders", 7), ("users", 2), ("users", 10)]
    # Deleting from a partition that never existed must not make it appear.
    storage.apply([delete("ghosts", 5, b"k")])
    assert ("ghosts", 5) not in storage.partitions()


def test_batch_is_applied_in_order(storage: Storage) -> None:
    storage.apply(
        [
            put("ks", 0, b"a", b"1"),
            put("ks", 0, b"a", b"2"),
            put("ks", 0, b"b", b"1"),
            delete("ks", 0, b"b"),
            delete("ks", 0, b"c"),
            put("ks", 0, b"c", b"3"),
        ]
    )
    assert storage.scan("ks", 0, b"", None, 10) == [(b"a", b"2"), (b"c", b"3")]


@pytest.mark.parametrize(
    "bad_write",
    [
        put("ks", 0, b"", b"empty key"),
        put("ks", 0, b"k" * 512, b"key too long"),
        put("bad:keyspace", 0, b"k", b"v"),
        put("", 0, b"k", b"v"),
        put("ks", -1, b"k", b"v"),
    ],
)
def test_a_batch_with_an_invalid_write_changes_nothing(storage: Storage, bad_write: Write) -> None:
    storage.apply([put("ks", 0, b"kept", b"old")])
    with pytest.raises(ValueError):
        storage.apply([put("ks", 0, b"kept", b"new"), put("ks", 1, b"fresh", b"v"), bad_write])
    assert storage.get("ks", 0, b"kept") == b"old"
    assert storage.get("ks", 1, b"fresh") is None
    assert storage.partitions() == [("ks", 0)]


@pytest.mark.parametrize("keyspace", ["", "a:b", "k" * 201, "é" * 101])
def test_invalid_keyspace_names_are_rejected(storage: Storage, keyspace: str) -> None:
    with pytest.raises(ValueError, match="keyspace"):
        storage.apply([put(keyspace, 0, b"k", b"v")])
    with pytest.raises(ValueError, match="keyspace"):
        storage.get(keyspace, 0, b"k")


def test_longest_keyspace_name_and_key_are_accepted(storage: Storage) -> None:
    keyspace = "k" * 200
    key = b"x" * 511
    storage.apply([put(keyspace, 12345, key, b"v")])
    assert storage.get(keyspace, 12345, key) == b"v"
    assert storage.partitions() == [(keyspace, 12345)]


def test_size_bytes_grows_with_data(storage: Storage) -> None:
    empty_size_bytes = storage.size_bytes()
    storage.apply([put("ks", 0, b"%05d" % number, b"x" * 1000) for number in range(100)])
    assert storage.size_bytes() >= empty_size_bytes + 100_000


def test_close_is_idempotent(storage: Storage) -> None:
    storage.apply([put("ks", 0, b"k", b"v")])
    storage.sync()
    storage.close()
    storage.close()


# LMDB only


def test_lmdb_reopen_after_sync_recovers_everything(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    storage = LmdbStorage(path)
    storage.apply([put("users", 1, b"alice", b"1"), put("orders", 2, b"o-1", b"2")])
    storage.apply([put("users", 1, b"bob", b"3"), delete("users", 1, b"alice")])
    storage.sync()
    storage.close()

    reopened = LmdbStorage(path)
    try:
        assert reopened.partitions() == [("orders", 2), ("users", 1)]
        assert reopened.get("users", 1, b"alice") is None
        assert reopened.get("users", 1, b"bob") == b"3"
        assert reopened.scan("orders", 2, b"", None, 10) == [(b"o-1", b"2")]
        assert reopened.count("users", 1) == 1
    finally:
        reopened.close()


def _overwrite_raw_record(path: str, name: bytes, key: bytes, record: bytes) -> None:
    """Write `record` as stored bytes, bypassing the engine's checksum."""
    environment = lmdb.open(path, max_dbs=64)
    try:
        database = environment.open_db(name, create=False)
        with environment.begin(write=True, db=database) as transaction:
            transaction.put(key, record)
    finally:
        environment.close()


@pytest.mark.parametrize(
    "raw_record",
    [b"\x00\x00\x00\x00tampered", b"\x01", b""],
    ids=["bad-checksum", "too-short", "empty"],
)
def test_lmdb_detects_a_corrupted_record(tmp_path: Path, raw_record: bytes) -> None:
    path = str(tmp_path / "db")
    storage = LmdbStorage(path)
    storage.apply([put("users", 3, b"alice", b"good"), put("users", 3, b"bob", b"good")])
    storage.sync()
    storage.close()
    _overwrite_raw_record(path, b"p:users:3", b"bob", raw_record)

    reopened = LmdbStorage(path)
    try:
        assert reopened.get("users", 3, b"alice") == b"good"
        with pytest.raises(CorruptRecordError) as raised:
            reopened.get("users", 3, b"bob")
        message = str(raised.value)
        assert "'users'" in message and "partition 3" in message and "b'bob'" in message
        with pytest.raises(CorruptRecordError):
            reopened.scan("users", 3, b"", None, 10)
        # A scan that stops before the damaged record still works.
        assert reopened.scan("users", 3, b"", b"b", 10) == [(b"alice", b"good")]
    finally:
        reopened.close()


def test_lmdb_map_grows_when_full(tmp_path: Path) -> None:
    storage = LmdbStorage(str(tmp_path / "db"), map_size_bytes=64 * 1024)
    try:
        value = bytes(range(256)) * 8  # 2 KiB
        for batch in range(40):  # 40 batches of 50 values: about 4 MB
            storage.apply(
                [put("ks", batch % 3, b"%02d-%02d" % (batch, index), value) for index in range(50)]
            )
        assert sum(storage.count("ks", partition) for partition in range(3)) == 2000
        assert storage.get("ks", 0, b"00-00") == value
        assert storage.get("ks", 1, b"37-49") == value
        assert storage.size_bytes() > 4_000_000
    finally:
        storage.close()


def test_lmdb_sync_from_a_thread_during_writes_and_map_growth(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    storage = LmdbStorage(path, map_size_bytes=64 * 1024)
    errors: list[Exception] = []
    stop = threading.Event()

    def sync_repeatedly() -> None:
        while not stop.is_set():
            try:
                storage.sync()
            except Exception as error:  # reported by the assertion below
                errors.append(error)
                return

    syncer = threading.Thread(target=sync_repeatedly)
    syncer.start()
    try:
        for batch in range(300):
            storage.apply(
                [put("ks", 0, b"%03d-%d" % (batch, index), b"v" * 300) for index in range(10)]
            )
            assert storage.get("ks", 0, b"%03d-0" % batch) == b"v" * 300
    finally:
        stop.set()
        syncer.join()
    assert errors == []
    storage.sync()
    storage.close()
    reopened = LmdbStorage(path)
    try:
        assert reopened.count("ks", 0) == 3000
    finally:
        reopened.close()


def test_lmdb_sync_after_close_raises(tmp_path: Path) -> None:
    storage = LmdbStorage(str(tmp_path / "db"))
    storage.close()
    with pytest.raises(StorageError):
        storage.sync()


def test_lmdb_too_many_partitions_is_a_storage_error(tmp_path: Path) -> None:
    storage = LmdbStorage(str(tmp_path / "db"), max_partitions=4)
    try:
        storage.apply([put("ks", partition, b"k", b"v") for partition in range(4)])
        with pytest.raises(StorageError, match="max_partitions"):
            storage.apply([put("ks", 4, b"k", b"v")])
        assert storage.partitions() == [("ks", partition) for partition in range(4)]
        # Every handle slot is taken; partitions never written still read as empty.
        assert storage.get("ks", 7, b"k") is None
        assert storage.scan("ks", 7, b"", None, 10) == []
        assert storage.get("other", 0, b"k") is None
        assert storage.get("ks", 3, b"k") == b"v"
    finally:
        storage.close()
    reopened = LmdbStorage(str(tmp_path / "db"), max_partitions=2)
    try:  # more partitions on disk than this open may hold: the data is there, unreadable
        assert reopened.get("ks", 0, b"k") == reopened.get("ks", 1, b"k") == b"v"
        with pytest.raises(StorageError, match="max_partitions"):
            reopened.get("ks", 3, b"k")
    finally:
        reopened.close()


# SimDisk only


def test_sim_disk_crash_drops_exactly_the_unsynced_writes() -> None:
    disk = SimDisk()
    disk.apply([put("ks", 0, b"a", b"synced-a"), put("ks", 0, b"b", b"synced-b")])
    disk.apply([put("ks", 1, b"c", b"synced-c")])
    disk.sync()
    disk.apply([put("ks", 0, b"a", b"unsynced-a"), delete("ks", 0, b"b")])
    disk.apply([put("ks", 2, b"d", b"unsynced-d"), delete("ks", 1, b"c")])
    disk.apply([put("ks", 0, b"a", b"unsynced-again")])
    assert disk.get("ks", 0, b"a") == b"unsynced-again"
    assert disk.partitions() == [("ks", 0), ("ks", 2)]

    disk.crash()

    assert disk.scan("ks", 0, b"", None, 10) == [(b"a", b"synced-a"), (b"b", b"synced-b")]
    assert disk.scan("ks", 1, b"", None, 10) == [(b"c", b"synced-c")]
    assert disk.get("ks", 2, b"d") is None
    assert disk.partitions() == [("ks", 0), ("ks", 1)]
    assert disk.size_bytes() == sum(
        len(key) + len(value)
        for keyspace, partition in disk.partitions()
        for key, value in disk.scan(keyspace, partition, b"", None, 10)
    )
    # A second crash has nothing left to drop.
    disk.crash()
    assert disk.get("ks", 0, b"a") == b"synced-a"


def test_sim_disk_close_loses_unsynced_writes_and_stays_usable() -> None:
    disk = SimDisk()
    disk.apply([put("ks", 0, b"a", b"1")])
    disk.sync()
    disk.apply([put("ks", 0, b"b", b"2")])
    disk.close()
    assert disk.scan("ks", 0, b"", None, 10) == [(b"a", b"1")]
    disk.apply([put("ks", 0, b"c", b"3")])
    assert disk.count("ks", 0) == 2


def test_lmdb_reads_a_partition_first_opened_after_earlier_reads(tmp_path) -> None:
    """A reopened store serves reads from one cached read transaction; a partition whose
    handle is opened later must still be readable (LMDB rejects a handle newer than the
    transaction)."""
    from quorumdb.storage.interface import Write
    from quorumdb.storage.lmdb_engine import LmdbStorage

    storage = LmdbStorage(str(tmp_path / "db"))
    storage.apply([Write("ks", partition, b"k", b"v%d" % partition) for partition in range(3)])
    storage.sync()
    storage.close()
    reopened = LmdbStorage(str(tmp_path / "db"))
    try:
        for partition in range(3):
            assert reopened.get("ks", partition, b"k") == b"v%d" % partition
        assert reopened.get("ks", 7, b"k") is None
    finally:
        reopened.close()


def test_sync_in_steps_writes_the_used_file_back_a_step_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quorumdb.storage import lmdb_engine

    storage = LmdbStorage(str(tmp_path / "db"), map_size_bytes=16 * 1024 * 1024)
    storage.apply([Write("ks", 0, b"k%05d" % index, b"v" * 200) for index in range(5000)])
    pauses: list[float] = []
    monkeypatch.setattr(lmdb_engine.time, "sleep", pauses.append)
    storage.sync_in_steps(step_bytes=64 * 1024)
    used = (storage._environment.info()["last_pgno"] + 1) * storage._page_size_bytes
    assert used > 10 * 64 * 1024  # enough for the steps to mean something
    assert len(pauses) == -(-used // (64 * 1024))  # one pause after each step
    assert storage.get("ks", 0, b"k04999") == b"v" * 200
    storage.close()
    with pytest.raises(StorageError):
        storage.sync_in_steps()
