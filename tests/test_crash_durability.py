"""Acknowledged writes survive crashes (SIGKILL) and clean restarts, on real node processes.

The writers own distinct keys and write increasing counters to them, recording the last
value sent and the last value acknowledged per key. After the crash and a restart on the
same data directory every key must hold exactly one of those two: the acknowledged value
(nothing acknowledged was lost) or the one value that was in flight when the node died.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from cluster_harness import LocalTestCluster, wait_for_port
from quorumdb.client._routing import ClientMap
from quorumdb.runtime.group_commit import FsyncPolicy, GroupCommit
from quorumdb.storage.interface import StorageError, Write
from quorumdb.storage.lmdb_engine import LmdbStorage

STORM_SECONDS = 1.5
WRITER_COUNT = 4
KEYS_PER_WRITER = 16


def connect(port: int, timeout: float = 10.0) -> redis.Redis:
    """A client that never retries on its own: a retried write would blur what was acked."""
    return redis.Redis(
        host="127.0.0.1", port=port, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
    )


@dataclass
class Writer:
    """One client thread writing `key -> counter` round-robin over its own keys."""

    port: int
    keys: list[str]
    deadline: float
    sent: dict[str, int] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)
    ack_count: int = 0
    stopped_by: BaseException | None = None

    def run(self) -> None:
        client = connect(self.port)
        counter = 0
        try:
            while time.monotonic() < self.deadline:
                counter += 1
                key = self.keys[counter % len(self.keys)]
                self.sent[key] = counter  # from here on the write may or may not happen
                if client.set(key, counter) is not True:
                    raise AssertionError(f"SET {key} answered without OK")
                self.acked[key] = counter
                self.ack_count += 1
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as error:
            self.stopped_by = error  # the node died (or the owner behind it did)
        finally:
            client.close()


def write_storm(
    cluster: LocalTestCluster,
    port: int,
    key_sets: list[list[str]],
    victim: int,
) -> list[Writer]:
    """Writers on `port` until node `victim` is SIGKILLed mid-storm; returns the writers."""
    deadline = time.monotonic() + 20.0  # a bound only: the crash stops the writers
    writers = [Writer(port, keys, deadline) for keys in key_sets]
    threads = [threading.Thread(target=writer.run, daemon=True) for writer in writers]
    for thread in threads:
        thread.start()
    time.sleep(STORM_SECONDS)
    cluster.kill_node(victim)
    for thread in threads:
        thread.join(15.0)
        assert not thread.is_alive(), "a writer did not stop after the crash"
    for writer in writers:
        assert writer.stopped_by is not None, "a writer ran to its deadline: no crash seen"
        assert writer.ack_count > 0, f"a writer got nothing acknowledged: {writer.stopped_by!r}"
    return writers


def check_recovered(writers: list[Writer], stored: dict[str, bytes | None]) -> int:
    """Assert every acknowledged write is present; return how many acknowledged writes
    (the last per key, which implies the earlier ones) were checked."""
    checked = 0
    in_flight_seen = 0
    for writer in writers:
        for key in writer.keys:
            raw = stored[key]
            acked = writer.acked.get(key)
            sent = writer.sent.get(key)
            if acked is None:
                # Never acknowledged: absent, or the one write that was in flight.
                assert raw is None or int(raw) == sent, f"{key}: {raw!r}, sent {sent}"
                continue
            checked += 1
            assert raw is not None, f"{key}: acknowledged {acked} but the key is gone"
            value = int(raw)
            assert value >= acked, f"{key}: acknowledged {acked} but found {value}"
            assert value in (acked, sent), f"{key}: found {value}, acked {acked}, sent {sent}"
            in_flight_seen += value != acked
    # Each writer has at most one write in flight at any moment.
    assert in_flight_seen <= len(writers)
    return checked


def read_all(client: redis.Redis, keys: list[str]) -> dict[str, bytes | None]:
    values = client.mget(keys)
    return dict(zip(keys, values, strict=True))


def read_until_available(port: int, keys: list[str], seconds: float = 15.0):
    """MGET through a node until it answers without error (a forwarded read can fail while
    the node reconnects to a restarted owner), bounded in time."""
    deadline = time.monotonic() + seconds
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        client = connect(port, timeout=5.0)
        try:
            return read_all(client, keys)
        except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError) as error:
            last_error = error
            time.sleep(0.1)
        finally:
            client.close()
    raise AssertionError(f"node on port {port} kept failing reads: {last_error!r}")


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[list[LocalTestCluster]]:
    """Clusters a test starts, all stopped (by PID) at teardown whatever happened."""
    started: list[LocalTestCluster] = []
    yield started
    for cluster in started:
        cluster.stop()


def start_cluster(
    started: list[LocalTestCluster], nodes: int, data_dir: Path, **options: object
) -> LocalTestCluster:
    cluster = LocalTestCluster(nodes, data_dir, **options)  # type: ignore[arg-type]
    started.append(cluster)
    return cluster.start()


def test_single_node_sigkill_mid_storm_loses_no_acknowledged_write(
    cluster_factory: list[LocalTestCluster], tmp_path: Path
) -> None:
    cluster = start_cluster(cluster_factory, 1, tmp_path / "single", fsync="always")
    key_sets = [
        [f"crash:w{writer}:k{index}" for index in range(KEYS_PER_WRITER)]
        for writer in range(WRITER_COUNT)
    ]
    writers = write_storm(cluster, cluster.resp_port(0), key_sets, victim=0)
    for writer in writers:
        assert isinstance(writer.stopped_by, redis.ConnectionError), writer.stopped_by

    cluster.start_node(0)
    all_keys = [key for keys in key_sets for key in keys]
    with connect(cluster.resp_port(0)) as client:
        stored = read_all(client, all_keys)
    checked = check_recovered(writers, stored)
    total_acked = sum(writer.ack_count for writer in writers)
    print(f"single node: {total_acked} writes acknowledged before SIGKILL; "
          f"{checked} keys' last acknowledged values checked after restart")  # fmt: skip
    assert checked == len(all_keys), "some keys were never acknowledged: storm too short"


def test_owner_sigkill_behind_a_forwarding_node_loses_no_acknowledged_write(
    cluster_factory: list[LocalTestCluster], tmp_path: Path
) -> None:
    cluster = start_cluster(cluster_factory, 3, tmp_path / "three", fsync="always")
    entry, victim = 0, 2  # clients talk to node0; node2 owns every key they write
    with connect(cluster.resp_port(entry)) as client:
        routing = ClientMap.parse(client.execute_command("quorumdb.map"))
    owned: list[str] = []
    candidate = 0
    while len(owned) < WRITER_COUNT * KEYS_PER_WRITER and candidate < 100_000:
        key = f"fwd:{candidate}"
        owner = routing.owner("default", key.encode())
        if owner is not None and owner.node_id == f"node{victim}":
            owned.append(key)
        candidate += 1
    assert len(owned) == WRITER_COUNT * KEYS_PER_WRITER
    key_sets = [owned[index::WRITER_COUNT] for index in range(WRITER_COUNT)]

    writers = write_storm(cluster, cluster.resp_port(entry), key_sets, victim=victim)
    for writer in writers:  # the entry node answered with an error, it did not hang up
        assert isinstance(writer.stopped_by, redis.ResponseError), writer.stopped_by
        assert str(writer.stopped_by).split()[0] in ("UNAVAILABLE", "TIMEOUT")

    cluster.start_node(victim)
    with connect(cluster.resp_port(victim)) as client:
        on_owner = read_all(client, owned)
    checked = check_recovered(writers, on_owner)
    forwarded = read_until_available(cluster.resp_port(entry), owned)
    assert forwarded == on_owner, "reads through node0 disagree with the owner's own"
    total_acked = sum(writer.ack_count for writer in writers)
    print(f"3 nodes: {total_acked} forwarded writes acknowledged before the owner's SIGKILL; "
          f"{checked} keys' last acknowledged values checked after restart")  # fmt: skip
    assert checked == len(owned), "some keys were never acknowledged: storm too short"
    # Writes flow again through the entry node to the restarted owner.
    with connect(cluster.resp_port(entry)) as client:
        assert client.set(owned[0], "after") is True
        assert client.get(owned[0]) == b"after"


# --- clean restarts ----------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """PIDs whose parent is `pid`, from /proc (field 4 of /proc/PID/stat)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def _is_our_node(pid: int) -> bool:
    try:
        return b"quorumdb" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _stop_up(process: subprocess.Popen[bytes], node_pids: list[int]) -> int | None:
    """SIGTERM `quorumdb up` (which stops its nodes cleanly); if anything is left, kill
    `up` and then the node processes it started, each by its PID."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        return None
    finally:
        for pid in node_pids:
            if _is_our_node(pid):
                os.kill(pid, signal.SIGKILL)


def test_clean_stop_then_up_on_the_same_data_dir_recovers_everything(
    cluster_factory: list[LocalTestCluster], tmp_path: Path
) -> None:
    data_dir = tmp_path / "clean"
    cluster = start_cluster(cluster_factory, 3, data_dir, fsync="everysec")
    base_port = cluster.base_port
    response = httpx.post(
        cluster.http_url(1) + "/v1/keyspaces",
        json={"name": "orders", "partitioning": "fixed:16"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    expected: dict[str, dict[str, bytes]] = {"default": {}, "orders": {}}
    for node in range(3):
        with connect(cluster.resp_port(node)) as client:
            pipe = client.pipeline(transaction=False)
            for index in range(100):
                key, value = f"clean:{node}:{index}", f"value-{node}-{index}".encode()
                pipe.set(key, value)
                expected["default"][key] = value
            assert all(result is True for result in pipe.execute())
            client.execute_command("quorumdb.keyspace", "orders")
            for index in range(20):
                key = f"order:{node}:{index}"
                assert client.incrby(key, index + 1) == index + 1
                expected["orders"][key] = str(index + 1).encode()
    with connect(cluster.resp_port(2)) as client:
        gone = [f"clean:0:{index}" for index in range(10)]
        assert client.delete(*gone) == 10
        for key in gone:
            del expected["default"][key]

    cluster.stop()  # SIGTERM to every node
    for index in range(3):
        log = cluster.log_paths[index].read_text()
        assert "stopping" in log, f"node{index} did not stop cleanly:\n{log[-2000:]}"
        assert "Traceback" not in log, f"node{index}:\n{log[-4000:]}"

    up_log = tmp_path / "up.log"
    command = [
        sys.executable, "-m", "quorumdb", "up", "--nodes", "3", "--port", str(base_port),
        "--data-dir", str(data_dir), "--fsync", "everysec",
    ]  # fmt: skip
    with open(up_log, "wb") as log_file:
        up = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    node_pids: list[int] = []
    try:
        for index in range(3):
            wait_for_port("127.0.0.1", base_port + index)
            wait_for_port("127.0.0.1", base_port + 100 + index)
        node_pids = _children(up.pid)
        assert len(node_pids) == 3, f"quorumdb up runs {node_pids}"
        for node in range(3):
            with connect(base_port + node) as client:
                assert read_all(client, list(expected["default"])) == expected["default"]
                assert client.mget(gone) == [None] * len(gone)
                assert client.dbsize() == len(expected["default"])
                assert client.execute_command("quorumdb.keyspace", "orders") is not None
                assert read_all(client, list(expected["orders"])) == expected["orders"]
                assert client.dbsize() == len(expected["orders"])
        with connect(base_port + 1) as client:
            assert client.set("clean:after-up", "yes") is True
    finally:
        returncode = _stop_up(up, node_pids)
    assert returncode == 0, up_log.read_text()[-3000:]
    assert not any(_is_our_node(pid) for pid in node_pids), "a node outlived quorumdb up"


# --- group commit --------------------------------------------------------------------------


def _persistence(client: redis.Redis) -> dict[str, int]:
    section = client.info("persistence")
    return {name: int(section[name]) for name in ("fsyncs", "writes_persisted")}


def test_group_commit_batches_concurrent_writes_into_few_fsyncs(
    cluster_factory: list[LocalTestCluster], tmp_path: Path
) -> None:
    cluster = start_cluster(cluster_factory, 1, tmp_path / "group", fsync="always")
    port = cluster.resp_port(0)
    client_count = 50

    async def storm() -> int:
        clients = [
            redis.asyncio.Redis(host="127.0.0.1", port=port, socket_timeout=10)
            for _ in range(client_count)
        ]
        deadline = time.monotonic() + 1.0

        async def one_client(number: int, client: redis.asyncio.Redis) -> int:
            acked = 0
            while time.monotonic() < deadline:
                assert await client.set(f"group:{number}:{acked % 10}", acked) is True
                acked += 1
            return acked

        try:
            for client in clients:  # connect everyone before the clock matters
                assert await client.ping()
            counts = await asyncio.gather(*map(one_client, range(client_count), clients))
        finally:
            for client in clients:
                await client.aclose()
        return sum(counts)

    with connect(port) as client:
        before = _persistence(client)
        acked = asyncio.run(storm())
        after = _persistence(client)
    writes = after["writes_persisted"] - before["writes_persisted"]
    fsyncs = after["fsyncs"] - before["fsyncs"]
    print(f"group commit: {acked} SETs acknowledged, {writes} writes persisted, {fsyncs} fsyncs")
    assert writes == acked
    assert acked >= client_count
    assert 0 < fsyncs < writes / 2, f"{fsyncs} fsyncs for {writes} writes: no batching"


# --- a group whose storage transaction fails ---------------------------------------------


class _StorageFailingOnPoison:
    """LMDB storage whose `apply` fails for any group holding the key b"poison", as a real
    engine does on a full disk or too many partitions (lmdb.DbsFullError)."""

    def __init__(self, path: Path) -> None:
        self.inner = LmdbStorage(str(path))

    def apply(self, writes: Sequence[Write]) -> None:
        if any(write.key == b"poison" for write in writes):
            raise StorageError("simulated: the storage transaction failed")
        self.inner.apply(writes)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_group_that_failed_to_apply_is_never_acknowledged(tmp_path: Path) -> None:
    storage = _StorageFailingOnPoison(tmp_path / "lmdb")
    released: list[str] = []
    loop_errors: list[str] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: loop_errors.append(context["message"]))
        commit = GroupCommit(storage, FsyncPolicy.ALWAYS, loop)  # type: ignore[arg-type]
        # One turn: another client's good write lands in the same group as the bad one.
        commit.add((Write("default", 0, b"good", b"1"), Write("default", 0, b"poison", b"x")))
        commit.release_after_pending(lambda: released.append("first group"))
        for _ in range(20):
            await asyncio.sleep(0.01)
        commit.add((Write("default", 0, b"later", b"2"),))
        commit.release_after_pending(lambda: released.append("second group"))
        deadline = time.monotonic() + 5
        while "second group" not in released and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    try:
        asyncio.run(scenario())
        assert storage.get("default", 0, b"later") == b"2"
        assert "second group" in released
        # An acknowledged write must be stored: either the first group's replies were
        # never released, or its writes are there.
        if "first group" in released:
            assert storage.get("default", 0, b"good") == b"1", (
                f"acknowledged but lost; loop errors: {loop_errors}"
            )
    finally:
        storage.close()
