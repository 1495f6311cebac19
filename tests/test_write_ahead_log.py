"""The write-ahead log in front of LMDB: what survives which crash, and what recovery refuses.

A crash is imitated by copying files into a fresh directory and opening that: copying
the live data file gives what a process crash leaves (every commit is in the page
cache); copying it right after an LMDB flush, then pairing it with a later copy of the
log, gives what an OS crash leaves when none of LMDB's later pages reached the disk.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from quorumdb.storage import write_ahead_log
from quorumdb.storage.interface import Write
from quorumdb.storage.lmdb_engine import LmdbStorage
from quorumdb.storage.log_spares import SPARE_SUFFIX
from quorumdb.storage.logged_storage import LOG_DIRECTORY, LoggedStorage
from quorumdb.storage.write_ahead_log import (
    WriteAheadLog,
    WriteAheadLogError,
    encode_record,
    read_records,
    segment_name,
    segment_paths,
)

SMALL_MAP_BYTES = 256 * 1024
"""LMDB's file is as large as its map (sparse): tests that read it whole keep it small."""

HUGE = 1 << 40  # checkpoint_bytes that never triggers a checkpoint


def put(key: bytes, value: bytes, partition: int = 0) -> Write:
    return Write("default", partition, key, value)


def delete(key: bytes, partition: int = 0) -> Write:
    return Write("default", partition, key, None)


def abandon(storage: LoggedStorage) -> None:
    """Release the files without the checkpoint a clean close makes."""
    storage._checkpointer.shutdown(wait=True)
    storage.log.close()
    storage.engine.close()


def copy_log_directory(source: Path, destination: Path) -> None:
    """The log's files as a crash would find them: a spare that a background thread is
    renaming as we copy is simply absent (copytree would fail on it)."""
    destination.mkdir()
    for name in os.listdir(source):
        try:
            shutil.copyfile(source / name, destination / name)
        except FileNotFoundError:
            continue


def crashed_copy(data_file: Path, log_directory: Path, destination: Path) -> Path:
    destination.mkdir()
    shutil.copyfile(data_file, destination / "data.mdb")
    copy_log_directory(log_directory, destination / LOG_DIRECTORY)
    return destination


def snapshot_data_file(storage_path: Path, destination: Path) -> Path:
    shutil.copyfile(storage_path / "data.mdb", destination)
    return destination


def test_groups_synced_after_the_checkpoint_survive_losing_every_later_lmdb_page(
    tmp_path: Path,
) -> None:
    live = tmp_path / "live"
    storage = LoggedStorage(str(live), map_size_bytes=SMALL_MAP_BYTES, checkpoint_bytes=HUGE)
    storage.apply([put(b"a", b"1"), put(b"b", b"1")])
    storage.sync()
    storage.engine.sync()  # the checkpoint: LMDB flushed up to here
    at_checkpoint = snapshot_data_file(live, tmp_path / "checkpoint.mdb")
    storage.apply([put(b"a", b"2"), delete(b"b"), put(b"c", b"2", partition=3)])
    storage.sync()  # acknowledged from here on; LMDB itself never flushed again
    storage.apply([put(b"a", b"3")])
    storage.sync()
    abandon(storage)

    copy = crashed_copy(at_checkpoint, live / LOG_DIRECTORY, tmp_path / "crashed")
    recovered = LoggedStorage(str(copy))
    try:
        assert recovered.replayed_record_count == 2
        assert recovered.get("default", 0, b"a") == b"3"
        assert recovered.get("default", 0, b"b") is None
        assert recovered.get("default", 3, b"c") == b"2"
        assert recovered.partitions() == [("default", 0), ("default", 3)]
    finally:
        recovered.close()


def test_replay_never_undoes_a_newer_write_the_data_file_holds(tmp_path: Path) -> None:
    live = tmp_path / "live"
    storage = LoggedStorage(str(live), map_size_bytes=SMALL_MAP_BYTES, checkpoint_bytes=HUGE)
    storage.apply([put(b"k", b"old"), put(b"other", b"x")])
    storage.sync()
    # A process crash after LMDB committed this group (a memtable flush) but before its
    # log record was written: the data file has it, the log does not.
    storage.apply([put(b"k", b"new")])
    storage.flush_memtable()
    copy = crashed_copy(live / "data.mdb", live / LOG_DIRECTORY, tmp_path / "crashed")
    abandon(storage)

    recovered = LoggedStorage(str(copy))
    try:
        assert recovered.replayed_record_count == 0
        assert recovered.get("default", 0, b"k") == b"new"
        # Sequences go on after the data file's newest record, not the log's.
        recovered.apply([put(b"later", b"y")])
        recovered.sync()
        assert [sequence for sequence, _ in read_records(recovered.log.directory)] == [3]
    finally:
        recovered.close()


def test_a_torn_tail_is_ignored_and_writing_goes_on_after_it(tmp_path: Path) -> None:
    live = tmp_path / "live"
    storage = LoggedStorage(str(live), map_size_bytes=SMALL_MAP_BYTES, checkpoint_bytes=HUGE)
    storage.engine.sync()
    at_checkpoint = snapshot_data_file(live, tmp_path / "checkpoint.mdb")
    storage.apply([put(b"k", b"1")])
    storage.sync()
    storage.apply([put(b"k", b"2")])
    storage.sync()
    records_end = storage.log.bytes_written  # preallocated zeros follow
    abandon(storage)
    (_, newest), *_ = reversed(segment_paths(str(live / LOG_DIRECTORY)))
    with open(newest, "r+b") as file:  # the second record, cut short by a crash
        file.truncate(records_end - 3)

    copy = crashed_copy(at_checkpoint, live / LOG_DIRECTORY, tmp_path / "crashed")
    recovered = LoggedStorage(str(copy))
    try:
        assert recovered.get("default", 0, b"k") == b"1"
        recovered.apply([put(b"k", b"3")])
        recovered.sync()
    finally:
        abandon(recovered)
    again = LoggedStorage(str(copy))
    try:
        assert again.get("default", 0, b"k") == b"3"
    finally:
        again.close()


def write_segment(directory: Path, first_sequence: int, count: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / segment_name(first_sequence)
    path.write_bytes(
        b"".join(
            encode_record(sequence, [put(b"k", str(sequence).encode())])
            for sequence in range(first_sequence, first_sequence + count)
        )
    )
    return path


def test_a_hole_between_segments_refuses_to_open(tmp_path: Path) -> None:
    log = tmp_path / "node" / LOG_DIRECTORY
    write_segment(log, 1, 3)
    write_segment(log, 5, 2)  # record 4 is gone
    with pytest.raises(WriteAheadLogError, match="records are missing"):
        LoggedStorage(str(tmp_path / "node"))


def test_damage_inside_an_older_segment_refuses_to_open(tmp_path: Path) -> None:
    log = tmp_path / "node" / LOG_DIRECTORY
    older = write_segment(log, 1, 3)
    write_segment(log, 4, 2)
    data = bytearray(older.read_bytes())
    data[-5] ^= 0xFF  # inside the third record's payload
    older.write_bytes(bytes(data))
    with pytest.raises(WriteAheadLogError, match="records stop at byte 66 .* records are missing"):
        LoggedStorage(str(tmp_path / "node"))


def wait_for_spare(log: WriteAheadLog) -> None:
    assert log.spares is not None
    for _ in range(500):
        if log.spares.ready_count():
            return
        time.sleep(0.01)
    raise AssertionError("no spare was prepared")


def write_records(log: WriteAheadLog, sequences: range, value_bytes: int = 100) -> None:
    """One record per sync; with spares, waits for one whenever the log has asked for it
    (so every roll finds one ready, as on a disk that keeps up)."""
    for sequence in sequences:
        if log.spares is not None and log.bytes_written > log.spares.segment_bytes // 2:
            wait_for_spare(log)
        log.append(sequence, [put(b"k%d" % sequence, b"v" * value_bytes)])
        log.sync()


def test_records_go_into_preallocated_spares_and_a_full_segment_rolls(tmp_path: Path) -> None:
    log = WriteAheadLog(str(tmp_path / "log"), segment_bytes=4096, max_spares=2)
    log.start_segment(1)  # no spare yet: this one grows with its records
    write_records(log, range(1, 100))  # about 13 KB of records
    segments = segment_paths(log.directory)
    assert len(segments) >= 4
    for _, path in segments[1:]:
        # Spares, made as large as a segment before any record went in; the full ones
        # rolled before growing.
        assert os.path.getsize(path) == 4096
    assert log.bytes_written < 4096
    log.close()
    assert [sequence for sequence, _ in read_records(log.directory)] == list(range(1, 100))


def test_a_failed_write_keeps_its_records_for_the_next_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = WriteAheadLog(str(tmp_path / "log"), segment_bytes=0)
    log.start_segment(1)
    write_records(log, range(1, 3))
    original = write_ahead_log._write_fully

    def failing(descriptor: int, data: bytes, offset: int) -> None:
        original(descriptor, data[:5], offset)  # part of it reaches the file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(write_ahead_log, "_write_fully", failing)
    log.append(3, [put(b"k3", b"v")])
    with pytest.raises(OSError):
        log.sync()
    monkeypatch.setattr(write_ahead_log, "_write_fully", original)
    log.append(4, [put(b"k4", b"v")])
    log.sync()
    log.close()
    assert [sequence for sequence, _ in read_records(log.directory)] == [1, 2, 3, 4]


def test_without_spares_segments_hold_only_records(tmp_path: Path) -> None:
    log = WriteAheadLog(str(tmp_path / "log"), segment_bytes=0)
    log.start_segment(1)
    write_records(log, range(1, 30))
    ((_, path),) = segment_paths(log.directory)
    assert os.path.getsize(path) == log.bytes_written
    log.close()
    assert not [name for name in os.listdir(log.directory) if not name.endswith(".wal")]


def test_recycled_segments_keep_old_records_that_reading_never_returns(tmp_path: Path) -> None:
    directory = str(tmp_path / "log")
    log = WriteAheadLog(directory, segment_bytes=4096, max_spares=4)
    log.start_segment(1)
    write_records(log, range(1, 100))  # several full segments
    log.close()
    for name in os.listdir(directory):  # no zero-filled spares: only recycled ones below
        if name.endswith(SPARE_SUFFIX):
            os.remove(os.path.join(directory, name))
    log = WriteAheadLog(directory, segment_bytes=4096, max_spares=4)
    assert log.spares is not None and log.spares.ready_count() == 0
    assert len(segment_paths(directory)) >= 3
    newest_first = segment_paths(directory)[-1][0]
    log.delete_segments_before(newest_first)  # as a checkpoint would
    assert log.spares.recycled_count >= 2  # full segments, renamed rather than deleted
    assert log.spares.size_bytes() >= 2 * 4096
    log.start_segment(100)  # into a recycled file, full of older records
    write_records(log, range(100, 110), value_bytes=10)
    log.close()
    (_, path) = segment_paths(directory)[-1]
    data = Path(path).read_bytes()
    assert os.path.getsize(path) >= 4096 and data.count(b"v" * 100) >= 3  # old records there
    assert [sequence for sequence, _ in read_records(directory)] == list(range(newest_first, 110))


def test_bytes_after_an_older_segment_are_fine_when_the_next_one_continues(tmp_path: Path) -> None:
    log = tmp_path / "node" / LOG_DIRECTORY
    older = write_segment(log, 1, 3)
    write_segment(log, 4, 2)
    with open(older, "ab") as file:  # spare space: zeros, then an old record
        file.write(bytes(100) + encode_record(2, [put(b"old", b"x")]))
    assert [sequence for sequence, _ in read_records(str(log))] == [1, 2, 3, 4, 5]


def test_a_log_that_resumes_past_the_data_file_refuses_to_open(tmp_path: Path) -> None:
    write_segment(tmp_path / "node" / LOG_DIRECTORY, 10, 2)  # the data file holds nothing
    with pytest.raises(WriteAheadLogError, match="records only up to 0"):
        LoggedStorage(str(tmp_path / "node"))


def test_checkpoints_delete_the_segments_they_cover(tmp_path: Path) -> None:
    live = tmp_path / "live"
    storage = LoggedStorage(str(live), map_size_bytes=SMALL_MAP_BYTES, checkpoint_bytes=2_000)
    expected = {}
    for group in range(300):
        key = b"key%d" % (group % 50)
        storage.apply([put(key, b"v%d" % group)])
        expected[key] = b"v%d" % group
        storage.sync()
    storage._finish_checkpoint(wait=True)
    print(f"{storage.checkpoint_count} checkpoints, {storage.log_size_bytes()} log bytes")
    assert storage.checkpoint_count >= 5
    assert len(segment_paths(storage.log.directory)) <= 2
    copy = crashed_copy(live / "data.mdb", live / LOG_DIRECTORY, tmp_path / "crashed")
    abandon(storage)
    recovered = LoggedStorage(str(copy))
    try:
        assert {key: recovered.get("default", 0, key) for key in expected} == expected
    finally:
        recovered.close()


@pytest.mark.parametrize("trigger", ["groups", "file growth"])
def test_small_writes_that_churn_lmdb_pages_take_checkpoints_too(
    tmp_path: Path, trigger: str
) -> None:
    """Each commit copies a few LMDB pages, and while a checkpoint's snapshot is held none
    of the freed ones is reused: one key written over and over grew the data file ~20 KB
    per group while its log grew ~60 bytes, so checkpoints counted by log bytes never
    came. Counting groups (or the file's growth) bounds the file. (With no memtable: it
    makes those commits rare, see the next test.)"""
    if trigger == "groups":
        storage = LoggedStorage(
            str(tmp_path / "node"), checkpoint_groups=200, memtable_writes_max=0
        )
    else:
        storage = LoggedStorage(
            str(tmp_path / "node"),
            checkpoint_bytes=1 << 20,
            checkpoint_groups=1 << 30,
            memtable_writes_max=0,
        )
    try:
        for group in range(2_000):
            storage.apply([put(b"hot", b"v%d" % group)])
            storage.sync()
        storage._finish_checkpoint(wait=True)
        print(f"{storage.checkpoint_count} checkpoints, data file {storage.size_bytes()} B")
        assert storage.log_bytes_since_checkpoint < 1 << 20  # never due by log bytes
        assert storage.checkpoint_count >= 5
        if trigger == "groups":
            assert storage.size_bytes() <= 12 << 20  # ~30 MB without checkpoints
        assert storage.get("default", 0, b"hot") == b"v1999"
    finally:
        storage.close()


def test_a_clean_close_leaves_nothing_to_replay(tmp_path: Path) -> None:
    storage = LoggedStorage(str(tmp_path / "node"))
    storage.apply([put(b"k", b"v")])
    storage.sync()
    storage.close()
    storage.close()  # idempotent
    assert list(read_records(str(tmp_path / "node" / LOG_DIRECTORY))) == []
    reopened = LoggedStorage(str(tmp_path / "node"))
    try:
        assert reopened.replayed_record_count == 0
        assert reopened.get("default", 0, b"k") == b"v"
    finally:
        reopened.close()


def test_syncs_from_another_thread_keep_segments_consistent(tmp_path: Path) -> None:
    """The `everysec` policy syncs (and so checkpoints) from a worker thread while the
    loop applies: every segment must still start with the record it is named after."""
    live = tmp_path / "live"
    storage = LoggedStorage(str(live), map_size_bytes=SMALL_MAP_BYTES, checkpoint_bytes=3_000)
    stop = threading.Event()
    errors: list[BaseException] = []

    def sync_forever() -> None:
        try:
            while not stop.is_set():
                storage.sync()
        except BaseException as error:  # reported below
            errors.append(error)

    syncer = threading.Thread(target=sync_forever)
    syncer.start()
    group = 0
    try:
        # Until three checkpoints have been taken while the other thread syncs (bounded).
        deadline = time.monotonic() + 60
        while group < 3_000 or (storage.checkpoint_count < 3 and time.monotonic() < deadline):
            group += 1
            storage.apply([put(b"key%d" % (group % 97), b"%d" % group)])
    finally:
        stop.set()
        syncer.join()
    assert errors == []
    storage.sync()
    storage._finish_checkpoint(wait=True)
    assert storage.checkpoint_count >= 3
    sequences = [sequence for sequence, _ in read_records(storage.log.directory)]
    assert not sequences or sequences == list(range(sequences[0], group + 1))
    copy = crashed_copy(live / "data.mdb", live / LOG_DIRECTORY, tmp_path / "crashed")
    abandon(storage)
    recovered = LoggedStorage(str(copy))
    try:
        assert recovered.get("default", 0, b"key%d" % (group % 97)) == b"%d" % group
    finally:
        recovered.close()


def test_an_os_crash_that_wrote_a_newer_meta_page_but_not_its_pages_recovers(
    tmp_path: Path,
) -> None:
    """The disk after an OS crash: LMDB's file as of the last checkpoint, except that the
    kernel had written the newest meta page and none of the pages it points to. Opening
    returns the file to the checkpoint (the saved meta pages) and replays the log."""
    node = tmp_path / "node"
    storage = LoggedStorage(
        str(node), checkpoint_bytes=HUGE, map_size_bytes=8 << 20, memtable_writes_max=0
    )  # every group reaches LMDB (at the next one): many pages changed after the checkpoint
    expected: dict[tuple[int, bytes], bytes | None] = {}
    for group in range(40):  # a B-tree of several pages
        writes = [put(b"key%04d" % (group * 50 + index), b"a" * 60) for index in range(50)]
        storage.apply(writes)
        storage.sync()
        expected.update({(0, write.key): write.value for write in writes})
    storage.checkpoint_now()
    saved = storage.engine.checkpoints_saved
    at_checkpoint = (node / "data.mdb").read_bytes()
    for group in range(40):  # acknowledged after the checkpoint
        writes = [put(b"key%04d" % (group * 37 % 2000), b"b%d" % group)]
        writes.append(delete(b"key%04d" % (group * 11 + 1)))
        writes.append(put(b"new%d" % group, b"c", partition=5))
        storage.apply(writes)
        storage.sync()
        expected.update({(write.partition, write.key): write.value for write in writes})
    newest = (node / "data.mdb").read_bytes()
    assert storage.engine.checkpoints_saved == saved  # no checkpoint after the one above
    abandon(storage)
    page_bytes = 4096
    crashed = bytearray(at_checkpoint.ljust(len(newest), b"\0"))
    crashed[: 2 * page_bytes] = newest[: 2 * page_bytes]
    assert crashed != newest
    (node / "data.mdb").write_bytes(bytes(crashed))

    # Without the saved meta pages, LMDB follows the newest meta page into stale pages.
    probe = (
        "import sys; from quorumdb.storage.lmdb_engine import LmdbStorage\n"
        f"storage = LmdbStorage({str(node)!r})\n"
        "print(storage.get('default', 0, b'key0037'), storage.count('default', 5))\n"
    )
    unrestored = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")},
    )
    print(f"opened without restoring: exit {unrestored.returncode}, {unrestored.stdout!r}")
    assert unrestored.returncode != 0 or unrestored.stdout.strip() != "b'b1' 40"
    (node / "data.mdb").write_bytes(bytes(crashed))  # as the crash left it

    recovered = LoggedStorage(str(node))
    try:
        assert recovered.replayed_record_count == 40
        for (partition, key), value in expected.items():
            assert recovered.get("default", partition, key) == value, key
        assert recovered.count("default", 5) == 40
        assert recovered.partitions() == [("default", 0), ("default", 5)]
    finally:
        recovered.close()


def test_growing_the_map_keeps_a_checkpoint_to_return_to(tmp_path: Path) -> None:
    node = tmp_path / "node"
    storage = LoggedStorage(str(node), map_size_bytes=64 * 1024, checkpoint_bytes=4_000)
    value = b"x" * 300
    for group in range(300):
        storage.apply([put(b"key%d" % group, value)])
        storage.sync()
    storage._finish_checkpoint(wait=True)
    assert storage.checkpoint_count >= 2
    assert storage.engine._environment.info()["map_size"] > 64 * 1024
    abandon(storage)
    recovered = LoggedStorage(str(node))
    try:
        assert recovered.count("default", 0) == 300
        assert recovered.get("default", 0, b"key299") == value
    finally:
        recovered.close()


def crash_image(node: Path, destination: Path, data_file: bytes) -> Path:
    """`node`'s log and saved meta pages as they are, with `data_file` as LMDB's file."""
    destination.mkdir()
    (destination / "data.mdb").write_bytes(data_file)
    copy_log_directory(node / LOG_DIRECTORY, destination / LOG_DIRECTORY)
    shutil.copyfile(node / "checkpoint.meta", destination / "checkpoint.meta")
    return destination


@pytest.mark.parametrize("crash", ["process", "os"])
def test_random_histories_recover_one_state_no_older_than_the_acknowledged(
    tmp_path: Path, crash: str
) -> None:
    """Random groups, syncs and checkpoints, then a crash at a random step: a process
    crash keeps LMDB's file as the page cache had it; an OS crash keeps it as of the
    last saved checkpoint, except for the newest meta page (the worst order). Recovery
    must give the state after one group, no older than the last acknowledged one."""
    seed = int(os.environ.get("QUORUMDB_TEST_SEED", random.randrange(2**32)))
    print(
        f"seed {seed}; replay: QUORUMDB_TEST_SEED={seed} pytest "
        f"tests/test_write_ahead_log.py -k 'random_histories and {crash}'"
    )
    for run in range(4):
        generator = random.Random(seed + run)
        node = tmp_path / f"node{run}"
        storage = LoggedStorage(
            str(node),
            checkpoint_bytes=generator.choice([300, 2_000]),
            map_size_bytes=SMALL_MAP_BYTES,
        )
        applied: dict[tuple[int, bytes], bytes] = {}
        # The state after each group; from `acknowledged` on, any of them may be recovered
        # (a group never acknowledged may survive, as a checkpoint taken for map growth
        # can hold it), but nothing older and nothing between groups.
        states: list[dict[tuple[int, bytes], bytes]] = [{}]
        acknowledged = 0
        at_checkpoint = b""
        checkpoints = -1
        crash_step = generator.randrange(20, 200)
        for step in range(crash_step):
            group = []
            for _ in range(generator.randint(1, 5)):
                where = (generator.randrange(3), b"k%02d" % generator.randrange(20))
                if generator.random() < 0.25:
                    group.append(delete(where[1], where[0]))
                    applied.pop(where, None)
                else:
                    group.append(put(where[1], b"%d-%d" % (step, generator.randrange(9)), where[0]))
                    applied[where] = group[-1].value  # type: ignore[assignment]
            storage.apply(group)
            states.append(dict(applied))
            if generator.random() < 0.8:
                storage.sync()
                acknowledged = len(states) - 1
            if storage.engine.checkpoints_saved != checkpoints:  # growth takes one too
                checkpoints = storage.engine.checkpoints_saved
                at_checkpoint = (node / "data.mdb").read_bytes()
        newest = (node / "data.mdb").read_bytes()
        if crash == "process":
            image = newest
        else:
            page_bytes = 4096
            image = bytearray(at_checkpoint.ljust(len(newest), b"\0"))
            image[: 2 * page_bytes] = newest[: 2 * page_bytes]
        copy = crash_image(node, tmp_path / f"crashed{run}", bytes(image))
        abandon(storage)
        recovered = LoggedStorage(str(copy))
        try:
            found = {
                (partition, key): recovered.get("default", partition, key)
                for partition in range(3)
                for key in (b"k%02d" % index for index in range(20))
            }
            recovered_state = {where: value for where, value in found.items() if value is not None}
            assert recovered_state in states[acknowledged:], (
                f"run {run} (seed {seed + run}), crash at step {crash_step}: the recovered "
                f"state is none of the states from the last acknowledged group on"
            )
        finally:
            recovered.close()


def test_a_crash_during_replay_returns_to_a_checkpoint_the_replay_did_not_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay commits unsynced, in several transactions; the later ones may reuse pages
    the earlier ones freed. If those were the checkpoint's own pages, a crash during the
    replay would return LMDB to a checkpoint whose pages are gone."""
    node = tmp_path / "node"
    storage = LoggedStorage(str(node), checkpoint_bytes=HUGE, map_size_bytes=8 << 20)
    expected = {}
    for group in range(60):
        writes = [
            put(b"key%03d" % ((group * 7 + index) % 200), b"v%d" % group) for index in range(10)
        ]
        storage.apply(writes)
        storage.sync()
        expected.update({write.key: write.value for write in writes})
    abandon(storage)
    monkeypatch.setattr("quorumdb.storage.logged_storage.REPLAY_BATCH_WRITES", 20)
    original_apply = LmdbStorage.apply
    calls = 0

    def crash_on_the_fifth_batch(self: LmdbStorage, writes, log_sequence=None) -> None:  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 5:
            raise OSError("simulated crash during replay")
        original_apply(self, writes, log_sequence)

    monkeypatch.setattr(LmdbStorage, "apply", crash_on_the_fifth_batch)
    with pytest.raises(OSError, match="simulated crash"):
        LoggedStorage(str(node))
    monkeypatch.setattr(LmdbStorage, "apply", original_apply)
    # Every page the replay wrote reached the disk; its meta pages are the checkpoint's.
    recovered = LoggedStorage(str(node))
    try:
        assert {key: recovered.get("default", 0, key) for key in expected} == expected
        assert recovered.count("default", 0) == len(expected)
    finally:
        recovered.close()
