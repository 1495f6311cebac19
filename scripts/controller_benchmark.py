"""The metadata controller (Raft) measured with real node processes on loopback.

1. Failover: a cluster of `--nodes` processes; wait until every node names the same
   leader and has applied everything; SIGKILL the leader's process; poll `/v1/cluster`
   on the survivors every 10 ms until they all name one new leader, and meanwhile
   create a keyspace through one survivor (retrying on every refusal) until it is
   acknowledged. Then restart the killed node on its data and repeat, `--runs` times.
2. Metadata operations per second: `--creates` keyspace creates through the leader and
   through a follower (which forwards to the leader), by 1 and by 8 concurrent clients,
   in alternating rounds on the same cluster. Each create is answered once every node
   applied it (or after 2 s if one did not); then the same with a follower killed.
3. In this process, without a network: how the work of one metadata change on a node
   grows with the number of keyspaces (the cause of the slowdown across the rounds).

Every process is started here and stopped here by its PID (SIGTERM, then SIGKILL).
The nodes run the same quorumdb code as this script (their PYTHONPATH is set to it).

Run: PYTHONPATH=src python scripts/controller_benchmark.py [--runs 20] [--nodes 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported by a test
from machine_facts import machine  # noqa: E402

import quorumdb
from cluster_harness import free_base_port, wait_for_port  # noqa: E402
from quorumdb.core.cluster import Member, PartitionMap, founding_metadata, local_members
from quorumdb.core.cluster_metadata import command
from quorumdb.core.controller.raft_config import RaftConfig
from quorumdb.core.keyspace import KeyspaceConfig
from quorumdb.core.node import NodeLimits
from quorumdb.runtime.node_runtime import TICK_INTERVAL_MS

CODE_DIR = Path(quorumdb.__file__).resolve().parent.parent
POLL_INTERVAL_SECONDS = 0.010
POLL_TIMEOUT_SECONDS = 1.0
REQUEST_TIMEOUT_SECONDS = 10.0
RETRY_PAUSE_SECONDS = 0.010
START_TIMEOUT_SECONDS = 30.0
STEADY_TIMEOUT_SECONDS = 30.0
FAILOVER_TIMEOUT_SECONDS = 30.0
SETTLE_SECONDS = 0.5  # after the cluster is steady, before the kill
STOP_TIMEOUT_SECONDS = 10.0
LOAD_CONFIGURATIONS = [("leader", 1), ("follower", 1), ("leader", 8), ("follower", 8)]
LOAD_ROUNDS = 4
DEGRADED_CREATES_MAX = 16  # each takes the whole applied-everywhere wait (2 s)
DEGRADED_CLIENTS = 8
REBUILD_KEYSPACE_COUNTS = (100, 400, 800)
RUNS_MAX = 1_000
CREATES_MAX = 10_000
ERRORS_KEPT_MAX = 5  # distinct refusals remembered per failover run or load round
PARTITIONING = "fixed:8"


# --- processes ----------------------------------------------------------------------------


@dataclass
class NodeProcesses:
    """`quorumdb node --index I --nodes N` processes, one data directory for all."""

    node_count: int
    data_dir: Path
    fsync: str
    base_port: int = 0
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base_port = self.base_port or free_base_port(self.node_count)
        self.members: tuple[Member, ...] = local_members(self.node_count, self.base_port)

    def start(self, index: int) -> None:
        assert index not in self.processes
        command = [
            sys.executable, "-m", "quorumdb", "node",
            "--index", str(index), "--nodes", str(self.node_count),
            "--port", str(self.base_port), "--data-dir", str(self.data_dir),
            "--fsync", self.fsync, "--log-level", "warning",
        ]  # fmt: skip
        environment = dict(os.environ)
        inherited = environment.get("PYTHONPATH")
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CODE_DIR), inherited]))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(index), "ab") as log:
            self.processes[index] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environment
            )

    def wait_listening(self, index: int) -> None:
        member = self.members[index]
        process = self.processes[index]
        for port in (member.resp_port, member.http_port):
            wait_for_port(member.host, port, START_TIMEOUT_SECONDS, process)

    def kill(self, index: int) -> None:
        """SIGKILL: a crash, nothing flushed."""
        process = self.processes.pop(index)
        process.kill()
        process.wait(STOP_TIMEOUT_SECONDS)

    def stop_all(self) -> None:
        for index, process in list(self.processes.items()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_SECONDS)
            del self.processes[index]

    def index_of(self, node_id: str) -> int:
        return next(i for i, member in enumerate(self.members) if member.node_id == node_id)

    def http_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.members[index].http_port}"

    def log_path(self, index: int) -> Path:
        return self.data_dir / f"node{index}.log"

    def log_tails(self) -> str:
        paths = (self.log_path(index) for index in range(self.node_count))
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-3000:]}"
            for path in paths
            if path.exists()
        )


# --- observing the controller -----------------------------------------------------------


Status = dict[str, object]


async def controller_status(client: httpx.AsyncClient, url: str) -> Status | None:
    try:
        response = await client.get(f"{url}/v1/cluster", timeout=POLL_TIMEOUT_SECONDS)
        response.raise_for_status()
        return dict(response.json()["controller"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


async def poll(
    client: httpx.AsyncClient, cluster: NodeProcesses, indexes: list[int]
) -> list[Status | None]:
    urls = [cluster.http_url(index) for index in indexes]
    return list(await asyncio.gather(*(controller_status(client, url) for url in urls)))


def agreed_leader(statuses: list[Status | None]) -> str | None:
    """The leader every node names, if they all name the same one."""
    leaders = {status["leader"] if status else None for status in statuses}
    if len(leaders) != 1:
        return None
    leader = leaders.pop()
    return leader if isinstance(leader, str) else None


def is_steady(statuses: list[Status | None]) -> bool:
    """One agreed leader that committed an entry, and every node applied all of it."""
    if agreed_leader(statuses) is None:
        return False
    commit_indexes = {status["commit_index"] for status in statuses if status}
    applied_indexes = {status["applied_index"] for status in statuses if status}
    return len(commit_indexes) == 1 and applied_indexes == commit_indexes != {0}


async def wait_steady(client: httpx.AsyncClient, cluster: NodeProcesses) -> Status:
    """Until `is_steady` over every running node; returns the leader's status."""
    indexes = sorted(cluster.processes)
    deadline = time.monotonic() + STEADY_TIMEOUT_SECONDS
    while True:
        statuses = await poll(client, cluster, indexes)
        if is_steady(statuses):
            leader = agreed_leader(statuses)
            assert leader is not None
            status = statuses[indexes.index(cluster.index_of(leader))]
            assert status is not None and status["role"] == "leader"
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"cluster not steady: {statuses}")
        await asyncio.sleep(0.05)


# --- failover -----------------------------------------------------------------------------


@dataclass
class FailoverSample:
    old_leader: str
    new_leader: str
    term_before: int
    term_after: int
    leader_agreed_ms: float  # every survivor names the new leader
    write_applied_ms: float  # every survivor applied the create (metadata version moved)
    write_acknowledged_ms: float  # the create's HTTP answer arrived (201 or 200)
    write_node: str
    write_attempts: int
    write_refusals: list[str]


@dataclass
class WriteResult:
    acknowledged_ms: float
    attempts: int
    refusals: list[str]


def elapsed_ms(since_ns: int) -> float:
    return (time.perf_counter_ns() - since_ns) / 1e6


async def create_until_acknowledged(url: str, name: str, since_ns: int) -> WriteResult:
    """Create keyspace `name` through `url`, retrying every refusal or timeout; 201 or 200
    (it exists, created by an attempt whose answer was lost) count as acknowledged."""
    refusals: list[str] = []
    deadline = time.monotonic() + FAILOVER_TIMEOUT_SECONDS
    body = {"name": name, "partitioning": PARTITIONING}
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS) as client:
        for attempt in itertools.count(1):
            try:
                response = await client.post(f"{url}/v1/keyspaces", json=body)
                if response.status_code in (200, 201):
                    return WriteResult(elapsed_ms(since_ns), attempt, refusals)
                refusal = f"{response.status_code} {response.json().get('message', '')}"
            except (httpx.HTTPError, ValueError) as error:
                refusal = type(error).__name__
            if refusal not in refusals and len(refusals) < ERRORS_KEPT_MAX:
                refusals.append(refusal)
            if time.monotonic() > deadline:
                raise TimeoutError(f"create through {url} not acknowledged: {refusals}")
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
    raise AssertionError("unreachable")


async def failover_run(cluster: NodeProcesses, run_number: int, nonce: str) -> FailoverSample:
    async with httpx.AsyncClient() as client:
        before = await wait_steady(client, cluster)
        await asyncio.sleep(SETTLE_SECONDS)
        old_leader = str(before["leader"])
        old_index = cluster.index_of(old_leader)
        survivors = sorted(index for index in cluster.processes if index != old_index)
        writer = survivors[0]
        killed_ns = time.perf_counter_ns()
        cluster.kill(old_index)
        name = f"failover-{nonce}-{run_number}"
        write = asyncio.create_task(
            create_until_acknowledged(cluster.http_url(writer), name, killed_ns)
        )
        agreed: tuple[float, str, int] | None = None
        applied_ms: float | None = None
        deadline = time.monotonic() + FAILOVER_TIMEOUT_SECONDS
        while agreed is None or applied_ms is None or not write.done():
            if time.monotonic() > deadline:
                write.cancel()
                raise TimeoutError(f"run {run_number}: no failover within the time limit")
            statuses = await poll(client, cluster, survivors)
            now_ms = elapsed_ms(killed_ns)  # the state was seen at most this late
            leader = agreed_leader(statuses)
            if agreed is None and leader is not None and leader != old_leader:
                term = max(int(str(status["term"])) for status in statuses if status)
                agreed = (now_ms, leader, term)
            versions = [int(str(s["metadata_version"])) if s else 0 for s in statuses]
            if applied_ms is None and min(versions) > int(str(before["metadata_version"])):
                applied_ms = now_ms
            await asyncio.sleep(POLL_INTERVAL_SECONDS)
        result = await write
    cluster.start(old_index)  # back on its data; the next run waits until it caught up
    cluster.wait_listening(old_index)
    return FailoverSample(
        old_leader=old_leader,
        new_leader=agreed[1],
        term_before=int(str(before["term"])),
        term_after=agreed[2],
        leader_agreed_ms=round(agreed[0], 1),
        write_applied_ms=round(applied_ms, 1),
        write_acknowledged_ms=round(result.acknowledged_ms, 1),
        write_node=cluster.members[writer].node_id,
        write_attempts=result.attempts,
        write_refusals=result.refusals,
    )


# --- metadata operations per second -------------------------------------------------------


@dataclass
class LoadRound:
    latencies_ms: list[float]  # of the acknowledged creates
    failures: int
    refusals: list[str]
    seconds: float
    node: str
    leader_changed: bool
    terms_passed: int  # elections during the round (none were provoked)
    metadata_version: int  # before the round: how much metadata every create rebuilds


@dataclass
class ThroughputResult:
    through: str  # "leader" or "follower"
    clients: int
    creates: int
    errors: int
    refusals: list[str]
    seconds: float
    operations_per_second: float
    operations_per_second_by_round: list[float]
    latency_ms_p50: float
    latency_ms_p99: float
    latency_ms_max: float
    nodes: list[str]
    leader_changed: bool
    terms_passed: int


async def create_load(
    url: str, clients: int, count: int, prefix: str
) -> tuple[list[float], int, float, list[str]]:
    """`count` creates by `clients` concurrent clients: latencies (ms) of the acknowledged
    ones, the number of failures, the wall time in seconds, a few distinct refusals."""
    numbers = iter(range(count))
    latencies_ms: list[float] = []
    failures = 0
    refusals: list[str] = []

    async def one_client(client: httpx.AsyncClient) -> None:
        nonlocal failures
        for number in numbers:
            body = {"name": f"{prefix}-{number}", "partitioning": PARTITIONING}
            started_ns = time.perf_counter_ns()
            try:
                response = await client.post(f"{url}/v1/keyspaces", json=body)
                refusal = "" if response.status_code == 201 else response.text[:200]
            except httpx.HTTPError as error:
                refusal = type(error).__name__
            if not refusal:
                latencies_ms.append(elapsed_ms(started_ns))
                continue
            failures += 1
            if refusal not in refusals and len(refusals) < ERRORS_KEPT_MAX:
                refusals.append(refusal)

    async with contextlib.AsyncExitStack() as stack:
        # Made before the clock starts: an httpx client loads TLS settings when made.
        pool = [
            await stack.enter_async_context(httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS))
            for _ in range(clients)
        ]
        started = time.perf_counter()
        await asyncio.gather(*(one_client(client) for client in pool))
        seconds = time.perf_counter() - started
    return latencies_ms, failures, seconds, refusals


async def load_round(
    cluster: NodeProcesses, through: str, clients: int, count: int, prefix: str
) -> LoadRound:
    async with httpx.AsyncClient() as client:
        before = await wait_steady(client, cluster)
        leader_index = cluster.index_of(str(before["leader"]))
        followers = sorted(index for index in cluster.processes if index != leader_index)
        index = leader_index if through == "leader" else followers[0]
        url = cluster.http_url(index)
        latencies_ms, failures, seconds, refusals = await create_load(url, clients, count, prefix)
        after = await wait_steady(client, cluster)
    return LoadRound(
        latencies_ms,
        failures,
        refusals,
        seconds,
        cluster.members[index].node_id,
        after["leader"] != before["leader"],
        int(str(after["term"])) - int(str(before["term"])),
        int(str(before["metadata_version"])),
    )


def split(count: int, parts: int) -> list[int]:
    """`count` as `parts` near-equal whole numbers (some may be 0)."""
    return [count // parts + (1 if part < count % parts else 0) for part in range(parts)]


async def throughput(
    cluster: NodeProcesses, count: int, nonce: str
) -> tuple[list[ThroughputResult], list[int]]:
    """Every configuration's `count` creates in `LOAD_ROUNDS` rounds, the configurations
    taking turns (in a rotated order each round), so each sees the metadata grow alike:
    every create rebuilds the node's routing view of all keyspaces. Also returns the
    metadata version at the start of each round."""
    rounds: dict[tuple[str, int], list[LoadRound]] = {key: [] for key in LOAD_CONFIGURATIONS}
    versions: list[int] = []
    for round_number, round_count in enumerate(split(count, LOAD_ROUNDS)):
        if round_count == 0:
            continue
        turn = round_number % len(LOAD_CONFIGURATIONS)
        order = LOAD_CONFIGURATIONS[turn:] + LOAD_CONFIGURATIONS[:turn]
        for position, (through, clients) in enumerate(order):
            prefix = f"load-{nonce}-{through}-{clients}-{round_number}"
            result = await load_round(cluster, through, clients, round_count, prefix)
            rounds[(through, clients)].append(result)
            if position == 0:
                versions.append(result.metadata_version)
    return [summarize_load(key, rounds[key]) for key in LOAD_CONFIGURATIONS], versions


async def degraded_load(cluster: NodeProcesses, count: int, nonce: str) -> ThroughputResult:
    """Creates through the leader by 8 clients after one follower was killed: the leader
    waits for every member to apply each create, so each waits out the deadline."""
    async with httpx.AsyncClient() as client:
        before = await wait_steady(client, cluster)
    leader_index = cluster.index_of(str(before["leader"]))
    victim = max(index for index in cluster.processes if index != leader_index)
    cluster.kill(victim)
    prefix = f"degraded-{nonce}"
    result = await load_round(cluster, "leader", DEGRADED_CLIENTS, count, prefix)
    through = f"leader, {cluster.members[victim].node_id} down"
    return summarize_load((through, DEGRADED_CLIENTS), [result])


def summarize_load(key: tuple[str, int], rounds: list[LoadRound]) -> ThroughputResult:
    latencies_ms = sorted(value for r in rounds for value in r.latencies_ms)
    seconds = sum(r.seconds for r in rounds)
    return ThroughputResult(
        through=key[0],
        clients=key[1],
        creates=len(latencies_ms),
        errors=sum(r.failures for r in rounds),
        refusals=sorted({refusal for r in rounds for refusal in r.refusals})[:ERRORS_KEPT_MAX],
        seconds=round(seconds, 3),
        operations_per_second=round(len(latencies_ms) / seconds, 1),
        operations_per_second_by_round=[round(len(r.latencies_ms) / r.seconds, 1) for r in rounds],
        latency_ms_p50=round(percentile(latencies_ms, 0.50), 1),
        latency_ms_p99=round(percentile(latencies_ms, 0.99), 1),
        latency_ms_max=round(latencies_ms[-1], 1) if latencies_ms else math.nan,
        nodes=sorted({r.node for r in rounds}),
        leader_changed=any(r.leader_changed for r in rounds),
        terms_passed=sum(r.terms_passed for r in rounds),
    )


# --- the cost that grows with the metadata ------------------------------------------------


def rebuild_costs(keyspace_counts: tuple[int, ...]) -> list[dict[str, float]]:
    """In this process, no network: with N keyspaces, how long a node takes to rebuild its
    routing view after any metadata change (`PartitionMap.from_metadata`, on every node
    for every applied create) and to snapshot the metadata (every
    `snapshot_threshold_entries` applied entries). Median of 5 timings each."""
    metadata = founding_metadata(local_members(3, 20_000))
    rng = random.Random(1)
    results: list[dict[str, float]] = []
    for index in range(1, max(keyspace_counts) + 1):
        config = KeyspaceConfig(f"cost-{index}", PARTITIONING).canonical()
        layout = config.strategy().initial_layout(metadata.active_members(), rng)
        proposal = command(
            "create_keyspace",
            config=config.to_dict(),
            layout=layout.to_dict(),
            partitions=list(layout.partition_ids),
        )
        metadata.apply(index + 1, proposal)
        if index in keyspace_counts:
            results.append(
                {
                    "keyspaces": len(metadata.keyspaces),
                    "routing_view_ms": median_ms(lambda: PartitionMap.from_metadata(metadata)),
                    "snapshot_ms": median_ms(metadata.snapshot),
                    "snapshot_bytes": len(metadata.snapshot()),
                }
            )
    return results


def median_ms(work: Callable[[], object], repetitions: int = 5) -> float:
    timings_ms = []
    for _ in range(repetitions):
        started_ns = time.perf_counter_ns()
        work()
        timings_ms.append(elapsed_ms(started_ns))
    return round(statistics.median(timings_ms), 2)


# --- the whole measurement -------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest rank: with 20 values, p99 is the largest."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 1),
        "p99": round(percentile(ordered, 0.99), 1),
        "min": round(ordered[0], 1),
        "max": round(ordered[-1], 1),
    }


def settings(arguments: argparse.Namespace) -> dict[str, object]:
    raft = RaftConfig()
    return {
        "nodes": arguments.nodes,
        "runs": arguments.runs,
        "creates": arguments.creates,
        "load_configurations": [f"{through}/{clients}" for through, clients in LOAD_CONFIGURATIONS],
        "load_rounds": LOAD_ROUNDS,
        "fsync": arguments.fsync,
        "partitioning": PARTITIONING,
        "election_timeout_ms": [raft.election_timeout_ms_min, raft.election_timeout_ms_max],
        "heartbeat_interval_ms": raft.heartbeat_interval_ms,
        "tick_interval_ms": TICK_INTERVAL_MS,
        "applied_everywhere_wait_ms": NodeLimits().map_wait_ms,
        "snapshot_threshold_entries": raft.snapshot_threshold_entries,
        "poll_interval_ms": POLL_INTERVAL_SECONDS * 1000,
    }


async def measure(arguments: argparse.Namespace, data_dir: Path) -> dict[str, object]:
    nonce = f"{random.Random().randrange(16**6):06x}"
    machine_info = machine(CODE_DIR)  # the date is the start's
    cluster = NodeProcesses(arguments.nodes, data_dir, arguments.fsync)
    try:
        for index in range(arguments.nodes):
            cluster.start(index)
        for index in range(arguments.nodes):
            cluster.wait_listening(index)
        samples: list[FailoverSample] = []
        for run_number in range(1, arguments.runs + 1):
            samples.append(await failover_run(cluster, run_number, nonce))
            if not arguments.json:
                print(f"failover run {run_number}: {asdict(samples[-1])}", file=sys.stderr)
        loads, round_versions = await throughput(cluster, arguments.creates, nonce)
        degraded_count = min(arguments.creates, DEGRADED_CREATES_MAX)
        loads.append(await degraded_load(cluster, degraded_count, nonce))
    except BaseException:
        print(cluster.log_tails(), file=sys.stderr)
        raise
    finally:
        cluster.stop_all()
    machine_info["load_average_end"] = [round(value, 2) for value in os.getloadavg()]
    return {
        "machine": machine_info,
        "settings": settings(arguments),
        "failover": {
            "leader_agreed_ms": summary([s.leader_agreed_ms for s in samples]),
            "write_applied_ms": summary([s.write_applied_ms for s in samples]),
            "write_acknowledged_ms": summary([s.write_acknowledged_ms for s in samples]),
            "runs": [asdict(sample) for sample in samples],
        },
        "metadata_operations": [asdict(load) for load in loads],
        "metadata_version_by_round": round_versions,
        "metadata_cost_by_size": rebuild_costs(REBUILD_KEYSPACE_COUNTS),
    }


def print_table(report: dict[str, object]) -> None:
    machine_info, configured = report["machine"], report["settings"]
    failover, loads = report["failover"], report["metadata_operations"]
    assert isinstance(machine_info, dict) and isinstance(configured, dict)
    assert isinstance(failover, dict) and isinstance(loads, list)
    print(
        f"{machine_info['date_utc']} UTC, {machine_info['cpus']} CPUs "
        f"({machine_info['cpu_model']}), Python {machine_info['python']}, "
        f"code {machine_info['code']}; load average {machine_info['load_average']} at the "
        f"start, {machine_info['load_average_end']} at the end"
    )
    print(
        f"{configured['nodes']} nodes, fsync {configured['fsync']}; election timeout "
        f"{configured['election_timeout_ms']} ms, heartbeat "
        f"{configured['heartbeat_interval_ms']} ms, tick {configured['tick_interval_ms']} ms"
    )
    print(f"\nFailover after SIGKILL of the leader, {configured['runs']} runs (ms since the kill)")
    print(f"{'measure':<46}{'median':>9}{'p99':>9}{'min':>9}{'max':>9}")
    labels = {
        "leader_agreed_ms": "survivors agree on a new leader",
        "write_applied_ms": "a create is applied on every survivor",
        "write_acknowledged_ms": "the create is acknowledged to the client",
    }
    for key, label in labels.items():
        row = failover[key]
        cells = "".join(f"{row[name]:>9.1f}" for name in ("median", "p99", "min", "max"))
        print(f"{label:<46}{cells}")
    print(
        "(p99 by nearest rank, so the maximum below 100 runs; survivors polled every "
        f"{configured['poll_interval_ms']:.0f} ms: each time is late by up to one poll)"
    )
    versions = report["metadata_version_by_round"]
    assert isinstance(versions, list)
    print(
        f"\nKeyspace creates ({configured['partitioning']}), {configured['creates']} per "
        f"configuration in {len(versions)} alternating rounds (metadata version at the "
        f"rounds' starts: {', '.join(map(str, versions))})"
    )
    header = f"{'through':<20}{'clients':>8}{'creates':>8}{'ops/s':>8}  {'ops/s by round':<22}"
    print(f"{header}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'errors':>7}")
    for load in loads:
        by_round = ", ".join(f"{value:.0f}" for value in load["operations_per_second_by_round"])
        print(
            f"{load['through']:<20}{load['clients']:>8}{load['creates']:>8}"
            f"{load['operations_per_second']:>8.1f}  {by_round:<22}"
            f"{load['latency_ms_p50']:>8.1f}{load['latency_ms_p99']:>8.1f}"
            f"{load['latency_ms_max']:>8.1f}{load['errors']:>7}"
            + (f"  ({load['terms_passed']} new terms)" if load["terms_passed"] else "")
        )
        for refusal in load["refusals"]:
            print(f"    refused: {refusal}")
    print(
        "Each create is answered once every node applied it (or after "
        f"{configured['applied_everywhere_wait_ms']} ms if one did not: the last row, with "
        "a follower killed); a follower forwards it to the leader."
    )
    costs = report["metadata_cost_by_size"]
    assert isinstance(costs, list)
    print("\nIn one process: work per metadata change on a node, by metadata size")
    print(f"{'keyspaces':>10}{'routing view ms':>17}{'snapshot ms':>13}{'snapshot bytes':>16}")
    for cost in costs:
        print(
            f"{cost['keyspaces']:>10}{cost['routing_view_ms']:>17.2f}"
            f"{cost['snapshot_ms']:>13.2f}{cost['snapshot_bytes']:>16,}"
        )
    print(
        "(the routing view is rebuilt on every node after every applied create; the "
        f"snapshot is taken every {configured['snapshot_threshold_entries']} applied entries)"
    )


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="failover runs (default 20)")
    parser.add_argument("--nodes", type=int, default=3, help="node processes (default 3)")
    parser.add_argument("--creates", type=int, default=200, help="creates per configuration")
    parser.add_argument("--fsync", choices=("always", "everysec", "no"), default="always")
    parser.add_argument("--data-dir", help="keep the nodes' data and logs here")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.runs <= RUNS_MAX:
        parser.error(f"--runs must be 1..{RUNS_MAX}")
    if not 3 <= arguments.nodes <= 9:
        parser.error("--nodes must be 3..9 (failover needs a majority of 3 voters left)")
    if not 1 <= arguments.creates <= CREATES_MAX:
        parser.error(f"--creates must be 1..{CREATES_MAX}")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.data_dir:
        data_dir = Path(arguments.data_dir)
        report = asyncio.run(measure(arguments, data_dir))
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="quorumdb-ctlbench-"))
        try:
            report = asyncio.run(measure(arguments, data_dir))
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    if arguments.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
