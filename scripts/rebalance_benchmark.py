"""What a running rebalance costs the clients: `quorumdb bench` against a loaded 3-node
cluster while a 4th node joins and a quarter of the data streams to it, side by side
with the same bench against the same cluster idle, before and after.

Each round uses a fresh cluster of real node processes on free loopback ports:

1. start 3 nodes (`quorumdb node --index I --nodes 3`, `--fsync always`, the 4th node's
   ports reserved), wait until all name the same controller leader;
2. preload `--keys` keys of `--value-size` bytes (`quorumdb bench --preload`, the bench's
   own key names, so its reads hit);
3. idle: `quorumdb bench --json` for `--seconds` against the 3 nodes;
4. during: `quorumdb node --index 3 --join ...`, the controller proposes a plan (manual
   mode: 16 of the 64 partitions of `fixed:64` move to node3), the same bench starts and
   the plan is approved as soon as the bench's requests reach the nodes; the plan is then
   polled until `done`;
5. after: the same bench against the 4 nodes, idle again.

Routing (`--routing`): `smart` is a `quorumdb://` target (each request straight to its
key's owner, as `quorumdb.client.Client` does); `spread` is `redis://n0,n1,n2` (clients
spread over the nodes; a node forwards what it does not own). In `smart` rounds the
"during" bench starts BEFORE node3 joins, and node3 joins and the plan is approved while
it runs; in `spread` rounds node3 joins first. A `smart` bench follows the map: a request
for a key that moved gets REDIRECT from its old owner and is sent to node3 after the map
is fetched again, and the clients are spread over the owners by the keys they own, so
node3 gets clients of its own. A `spread` bench has no map: requests for keys that moved
are forwarded by whichever node they reach. (The `smart` rounds in BENCHMARKS.md were
measured before the bench followed map changes: it bound clients to the members of the
map read at its start and kept that map, so the old owners forwarded moved keys.)

Besides the bench's own numbers (throughput and percentiles over its whole window), this
script samples every node's `INFO` request counter every `SAMPLE_INTERVAL_SECONDS`: the
sum is the cluster's client-facing request rate over time, which gives the throughput
over exactly the part of the window when the plan was running (`overlap`), compared with
the same counters over the idle window.

Every process is started here and stopped here by its PID (SIGTERM, then SIGKILL). The
nodes and the bench run the same quorumdb code as this script (PYTHONPATH is set to it).

Run: PYTHONPATH=src python scripts/rebalance_benchmark.py [--keys N] [--value-size B]
     [--seconds S] [--throttle BYTES_PER_S] [--rounds R] [--routing smart,spread] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when imported by a test
from machine_facts import machine  # noqa: E402

import quorumdb
from cluster_harness import free_base_port, wait_for_port  # noqa: E402
from quorumdb.core.cluster import Member, local_members
from quorumdb.core.cluster_metadata import DEFAULT_THROTTLE_BYTES_PER_SECOND

CODE_DIR = Path(quorumdb.__file__).resolve().parent.parent
FOUNDERS = 3
JOINER = 3  # the index of the node that joins
START_TIMEOUT_SECONDS = 30.0
STEADY_TIMEOUT_SECONDS = 30.0
PLAN_TIMEOUT_SECONDS = 30.0
APPROVE_TIMEOUT_SECONDS = 30.0  # from the join until the plan is proposed
REBALANCE_TIMEOUT_SECONDS = 240.0  # from the approval until the plan is done
BENCH_START_TIMEOUT_SECONDS = 60.0  # from launching the bench until its requests arrive
BENCH_EXTRA_SECONDS = 90.0  # bench process: startup, preload/map fetch, drain, exit
STOP_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 10.0
SAMPLE_INTERVAL_SECONDS = 0.25
BENCH_STARTED_REQUESTS = 100  # requests counted by the nodes: the bench is measuring
BENCH_CLIENTS = 50  # quorumdb bench's default
KEYS_MAX = 5_000_000
VALUE_SIZE_MAX = 64 * 1024
SECONDS_MAX = 300.0
ROUNDS_MAX = 10
ROUTINGS = ("smart", "spread")
TARGET_RATIO = 0.7


def log(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- processes ----------------------------------------------------------------------------


def child_environment() -> dict[str, str]:
    environment = dict(os.environ)
    inherited = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CODE_DIR), inherited]))
    return environment


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL: this one process, by its PID."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT_SECONDS)


@dataclass
class Cluster:
    """3 founding node processes and, later, a 4th that joins; one data directory."""

    data_dir: Path
    fsync: str
    base_port: int = 0
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base_port = self.base_port or free_base_port(FOUNDERS + 1)
        self.members: tuple[Member, ...] = local_members(FOUNDERS + 1, self.base_port)

    def start(self, index: int, join: bool = False) -> None:
        assert index not in self.processes
        command = [
            sys.executable, "-m", "quorumdb", "node",
            "--index", str(index), "--port", str(self.base_port),
            "--data-dir", str(self.data_dir), "--fsync", self.fsync, "--log-level", "warning",
        ]  # fmt: skip
        if join:
            command += ["--join", f"127.0.0.1:{self.members[0].http_port}"]
        else:
            command += ["--nodes", str(FOUNDERS)]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(index), "ab") as node_log:
            self.processes[index] = subprocess.Popen(
                command, stdout=node_log, stderr=subprocess.STDOUT, env=child_environment()
            )

    def wait_listening(self, index: int) -> None:
        member = self.members[index]
        process = self.processes[index]
        for port in (member.resp_port, member.http_port):
            wait_for_port(member.host, port, START_TIMEOUT_SECONDS, process)

    def wait_leader(self) -> str:
        """Until every running node names the same controller leader, which committed."""
        deadline = time.monotonic() + STEADY_TIMEOUT_SECONDS
        while True:
            views = set()
            for index in self.processes:
                try:
                    document = httpx.get(f"{self.http_url(index)}/v1/cluster", timeout=5).json()
                    controller = document["controller"]
                    views.add((controller["leader"], controller["commit_index"] > 0))
                except (httpx.HTTPError, ValueError, KeyError):
                    views.add((None, False))
            if len(views) == 1:
                leader, committed = views.pop()
                if leader is not None and committed:
                    return str(leader)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no agreed controller leader: {views}")
            time.sleep(0.05)

    def stop_all(self) -> None:
        for index in list(self.processes):
            stop_process(self.processes.pop(index))

    def resp_ports(self, count: int) -> list[int]:
        return [member.resp_port for member in self.members[:count]]

    def http_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.members[index].http_port}"

    def log_path(self, index: int) -> Path:
        return self.data_dir / f"node{index}.log"

    def log_tails(self) -> str:
        paths = (self.log_path(index) for index in range(FOUNDERS + 1))
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-3000:]}"
            for path in paths
            if path.exists()
        )


# --- the rebalance plan -------------------------------------------------------------------


def rebalance_document(cluster: Cluster, index: int = 0) -> dict[str, Any]:
    response = httpx.get(f"{cluster.http_url(index)}/v1/rebalance", timeout=REQUEST_TIMEOUT_SECONDS)
    response.raise_for_status()
    return dict(response.json())


def wait_plan(cluster: Cluster, states: set[str], timeout_seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_seconds
    plan = None
    while time.monotonic() < deadline:
        plan = rebalance_document(cluster)["plan"]
        if plan is not None and plan["state"] in states:
            return dict(plan)
        time.sleep(0.1)
    raise TimeoutError(f"plan never reached {states}: {json.dumps(plan)[:1000]}")


def approve(cluster: Cluster) -> list[str]:
    """Approve the proposed plan through node1, retrying while the controller has no
    leader (an election under load); returns the refusals seen before it was accepted."""
    url = f"{cluster.http_url(1)}/v1/rebalance/approve"
    refusals: list[str] = []
    deadline = time.monotonic() + APPROVE_TIMEOUT_SECONDS
    while True:
        try:
            response = httpx.post(url, timeout=REQUEST_TIMEOUT_SECONDS)
            if response.status_code == 200:
                return refusals
            refusal = f"{response.status_code} {response.text[:200]}"
            if response.status_code != 503:
                raise RuntimeError(f"approve refused: {refusal}")
        except httpx.HTTPError as error:
            refusal = repr(error)
        refusals.append(refusal)
        if time.monotonic() > deadline:
            raise RuntimeError(f"approve refused until the deadline: {refusals[-3:]}")
        time.sleep(0.1)


def controller_term(cluster: Cluster) -> int:
    document = httpx.get(f"{cluster.http_url(0)}/v1/cluster", timeout=REQUEST_TIMEOUT_SECONDS)
    return int(document.json()["controller"]["term"])


# --- sampling the nodes while a bench runs ------------------------------------------------


class Sampler:
    """A thread reading every node's request counter (and, optionally, the plan's state)
    every SAMPLE_INTERVAL_SECONDS, timestamps on the script's monotonic clock."""

    def __init__(self, cluster: Cluster, node_count: int, watch_plan: bool) -> None:
        self.cluster = cluster
        self.ports = cluster.resp_ports(node_count)
        self.watch_plan = watch_plan
        self.samples: list[tuple[float, int]] = []  # (time, requests summed over the nodes)
        self.plan_states: list[tuple[float, str]] = []  # (time, state) at each change
        self.last_plan: dict[str, Any] | None = None
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.thread.join(30)

    def add_node(self, port: int) -> None:
        self.ports = [*self.ports, port]

    def _run(self) -> None:
        clients: dict[int, redis.Redis] = {}
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                total = 0
                for port in list(self.ports):
                    if port not in clients:
                        clients[port] = redis.Redis(port=port, socket_timeout=5)
                    total += int(clients[port].info("stats")["total_commands_processed"])
                self.samples.append((time.monotonic(), total))
                if self.watch_plan:
                    plan = rebalance_document(self.cluster)["plan"]
                    state = plan["state"] if plan else "none"
                    if not self.plan_states or self.plan_states[-1][1] != state:
                        self.plan_states.append((time.monotonic(), state))
                    self.last_plan = plan
                self.stopping.wait(max(0.0, SAMPLE_INTERVAL_SECONDS - (time.monotonic() - started)))
        except BaseException as error:  # reported by the caller
            self.error = error
        finally:
            for client in clients.values():
                client.close()

    def started_at(self, since: float) -> float | None:
        """When the counters first rose by BENCH_STARTED_REQUESTS after `since`."""
        base = next((count for moment, count in self.samples if moment >= since), None)
        if base is None:
            return None
        for moment, count in self.samples:
            if moment >= since and count - base >= BENCH_STARTED_REQUESTS:
                return moment
        return None

    def rate(self, start: float, end: float) -> float | None:
        """Requests per second between the samples nearest `start` and `end` (the new
        node's counter starts at 0 when it is added, so only spans after it count)."""
        inside = [(moment, count) for moment, count in self.samples if start <= moment <= end]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < 2 * SAMPLE_INTERVAL_SECONDS:
            return None
        (first_moment, first), (last_moment, last) = inside[0], inside[-1]
        return (last - first) / (last_moment - first_moment)

    def series(self, origin: float, end: float) -> list[list[float]]:
        """[seconds since origin, requests/s over the interval before] for the window."""
        points = [(moment, count) for moment, count in self.samples if origin <= moment <= end]
        return [
            [round(b[0] - origin, 2), round((b[1] - a[1]) / (b[0] - a[0]))]
            for a, b in zip(points, points[1:], strict=False)
            if b[0] > a[0]
        ]


# --- the load generator ------------------------------------------------------------------


@dataclass
class Bench:
    """One `quorumdb bench --json` process."""

    target: str
    keys: int
    value_size: int
    seconds: float
    preload: bool = False
    requests: int | None = None
    process: subprocess.Popen[bytes] | None = None
    launched_at: float = 0.0
    finished_at: float = 0.0

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "quorumdb", "bench", "--target", self.target,
            "--clients", str(BENCH_CLIENTS), "--keys", str(self.keys),
            "--value-size", str(self.value_size), "--json",
        ]  # fmt: skip
        if self.requests is not None:
            command += ["--requests", str(self.requests)]
        else:
            command += ["--duration", f"{self.seconds:g}"]
        if self.preload:
            command.append("--preload")
        return command

    def launch(self) -> Bench:
        self.launched_at = time.monotonic()
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=child_environment(),
        )
        return self

    def result(self) -> dict[str, Any]:
        assert self.process is not None
        try:
            stdout, stderr = self.process.communicate(timeout=self.seconds + BENCH_EXTRA_SECONDS)
        except subprocess.TimeoutExpired:
            stop_process(self.process)
            raise
        self.finished_at = time.monotonic()
        if self.process.returncode != 0:
            raise RuntimeError(f"bench failed ({self.process.returncode}): {stderr[-2000:]!r}")
        report = dict(json.loads(stdout)["targets"][0])
        if report["failure"]:
            raise RuntimeError(f"bench could not measure: {report['failure']}")
        return report

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process)


def bench_numbers(report: dict[str, Any]) -> dict[str, Any]:
    latency = report["latency_ms"]
    return {
        "ops_per_second": round(report["throughput_ops_per_second"], 1),
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "p99_9_ms": latency["p99_9"],
        "max_ms": latency["max"],
        "requests": report["count"],
        "errors": report["errors"],
        "read_misses": report["read_misses"],
        "first_error": report["first_error"],
        "seconds": round(report["elapsed_seconds"], 2),
    }


# --- one round ----------------------------------------------------------------------------


def targets(cluster: Cluster, routing: str, node_count: int) -> str:
    ports = cluster.resp_ports(node_count)
    if routing == "smart":
        return f"quorumdb://127.0.0.1:{ports[0]}"
    return "redis://" + ",".join(f"127.0.0.1:{port}" for port in ports)


def measured_bench(
    cluster: Cluster, arguments: argparse.Namespace, routing: str, node_count: int
) -> dict[str, Any]:
    """An idle bench, with the node counters sampled alongside."""
    bench = Bench(targets(cluster, routing, node_count), arguments.keys, arguments.value_size,
                  arguments.seconds)  # fmt: skip
    with Sampler(cluster, node_count, watch_plan=False) as sampler:
        bench.launch()
        try:
            report = bench.result()
        finally:
            bench.stop()
    if sampler.error is not None:
        raise RuntimeError(f"sampling failed: {sampler.error!r}")
    numbers = bench_numbers(report)
    start = sampler.started_at(bench.launched_at)
    if start is not None:
        end = start + report["elapsed_seconds"]
        rate = sampler.rate(start, end)
        numbers["node_counted_ops_per_second"] = None if rate is None else round(rate, 1)
    return numbers


def during_bench(cluster: Cluster, arguments: argparse.Namespace, routing: str) -> dict[str, Any]:
    """The bench while node3 joins and the plan runs (see the module docstring for the
    order of events by routing); returns its numbers and the plan's."""
    bench = Bench(targets(cluster, routing, FOUNDERS), arguments.keys, arguments.value_size,
                  arguments.seconds)  # fmt: skip
    events: dict[str, float] = {}
    term_before = controller_term(cluster)
    with Sampler(cluster, FOUNDERS, watch_plan=True) as sampler:
        try:
            if routing == "smart":
                bench.launch()
                events["bench_started"] = wait_bench_started(sampler, bench)
            events["join"] = time.monotonic()
            cluster.start(JOINER, join=True)
            cluster.wait_listening(JOINER)
            sampler.add_node(cluster.members[JOINER].resp_port)
            events["joined"] = time.monotonic()
            plan = wait_plan(cluster, {"proposed"}, PLAN_TIMEOUT_SECONDS)
            events["proposed"] = time.monotonic()
            if routing != "smart":
                bench.launch()
                events["bench_started"] = wait_bench_started(sampler, bench)
            refusals = approve(cluster)
            events["approved"] = time.monotonic()
            report = bench.result()
            events["bench_exited"] = time.monotonic()
            plan = wait_plan(cluster, {"done"}, REBALANCE_TIMEOUT_SECONDS)
            events["done_seen"] = time.monotonic()
            time.sleep(2 * SAMPLE_INTERVAL_SECONDS)
        finally:
            bench.stop()
    if sampler.error is not None:
        raise RuntimeError(f"sampling failed: {sampler.error!r}")
    done = next((moment for moment, state in sampler.plan_states if state == "done"), None)
    done = done if done is not None else events["done_seen"]
    start = events["bench_started"]  # within one sample of the bench's first requests
    end = start + report["elapsed_seconds"]
    numbers = bench_numbers(report)
    overlap_end = min(done, end)
    rate = sampler.rate(events["approved"], overlap_end)
    numbers["node_counted_ops_per_second"] = round(sampler.rate(start, end) or 0.0, 1)
    transfers = plan["transfers"]
    term_after = controller_term(cluster)
    rebalance = {
        "controller_terms_passed": term_after - term_before,
        "approve_refusals": refusals,
        "plan_id": plan["plan_id"],
        "transfers": len(transfers),
        "targets": sorted({transfer["target_node"] for transfer in transfers}),
        "copied_bytes": sum(transfer["copied_bytes"] for transfer in transfers),
        "estimated_bytes": sum(transfer["estimated_bytes"] for transfer in transfers),
        "seconds": round(done - events["approved"], 2),
        "join_to_proposed_seconds": round(events["proposed"] - events["join"], 2),
        "approved_at": round(events["approved"] - start, 2),
        "done_at": round(done - start, 2),
        "bench_window": [0.0, round(end - start, 2)],
        "covered_window": done >= end,
        "covered_fraction": round(max(0.0, overlap_end - events["approved"]) / (end - start), 3),
        "overlap_seconds": round(max(0.0, overlap_end - events["approved"]), 2),
        "overlap_node_counted_ops_per_second": None if rate is None else round(rate, 1),
        "overlap_lowest_interval_ops_per_second": lowest_interval(
            sampler.series(events["approved"], overlap_end)
        ),
        "plan_states": [[round(moment - start, 2), state] for moment, state in sampler.plan_states],
        "node_counted_series": sampler.series(start, end),
    }
    if routing == "smart" and events["approved"] - start > 0:
        before = sampler.rate(start, events["approved"])
        rebalance["before_approval_node_counted_ops_per_second"] = (
            None if before is None else round(before, 1)
        )
    numbers["rebalance"] = rebalance
    return numbers


def lowest_interval(series: list[list[float]]) -> float | None:
    """The lowest request rate of any sample interval: a stall shows as 0."""
    return min((rate for _, rate in series), default=None)


def wait_bench_started(sampler: Sampler, bench: Bench) -> float:
    deadline = time.monotonic() + BENCH_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert bench.process is not None
        if bench.process.poll() is not None:
            raise RuntimeError(f"bench exited early with {bench.process.returncode}")
        started = sampler.started_at(bench.launched_at)
        if started is not None:
            return started
        if sampler.error is not None:
            raise RuntimeError(f"sampling failed: {sampler.error!r}")
        time.sleep(SAMPLE_INTERVAL_SECONDS / 5)
    raise TimeoutError("the bench's requests never reached the nodes")


def owner_counts(cluster: Cluster) -> dict[str, int]:
    document = httpx.get(f"{cluster.http_url(0)}/v1/cluster", timeout=REQUEST_TIMEOUT_SECONDS)
    owners = document.json()["keyspaces"]["default"]["layout"]["owners"]
    return {owner: owners.count(owner) for owner in sorted(set(owners))}


def start_cluster(data_dir: Path, fsync: str, attempts: int = 3) -> Cluster:
    """3 nodes agreeing on a controller leader; on other ports if a port was taken
    between the check and the bind."""
    for attempt in range(1, attempts + 1):
        cluster = Cluster(data_dir, fsync)
        try:
            for index in range(FOUNDERS):
                cluster.start(index)
            for index in range(FOUNDERS):
                cluster.wait_listening(index)
            cluster.wait_leader()
            return cluster
        except (RuntimeError, TimeoutError) as error:
            tails = cluster.log_tails()
            cluster.stop_all()
            shutil.rmtree(data_dir, ignore_errors=True)
            if attempt == attempts:
                print(tails, file=sys.stderr)
                raise
            log(f"cluster start failed ({error}); again on other ports")
    raise AssertionError("unreachable")


def run_round(
    number: int, routing: str, arguments: argparse.Namespace, data_dir: Path
) -> dict[str, Any]:
    cluster = start_cluster(data_dir / f"round{number}", arguments.fsync)
    result: dict[str, Any] = {"round": number, "routing": routing}
    try:
        if arguments.throttle is not None:
            response = httpx.put(
                f"{cluster.http_url(0)}/v1/rebalance",
                json={"throttle_bytes_per_second": arguments.throttle},
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
            response.raise_for_status()
        result["throttle_bytes_per_second"] = rebalance_document(cluster)[
            "throttle_bytes_per_second"
        ]
        started = time.monotonic()
        preload = Bench(targets(cluster, "spread", FOUNDERS), arguments.keys,
                        arguments.value_size, 0, preload=True, requests=1)  # fmt: skip
        report = preload.launch().result()
        if report["preload_errors"]:
            raise RuntimeError(f"{report['preload_errors']} preload writes failed")
        result["preload_seconds"] = round(time.monotonic() - started, 1)
        log(f"round {number} ({routing}): preloaded in {result['preload_seconds']} s")
        result["idle_before"] = measured_bench(cluster, arguments, routing, FOUNDERS)
        log(f"round {number}: idle {result['idle_before']['ops_per_second']:.0f} ops/s")
        result["during"] = during_bench(cluster, arguments, routing)
        rebalance = result["during"]["rebalance"]
        log(
            f"round {number}: during {result['during']['ops_per_second']:.0f} ops/s; "
            f"rebalance {rebalance['seconds']} s, {rebalance['copied_bytes']:,} bytes"
        )
        result["owners_after"] = owner_counts(cluster)
        result["idle_after"] = measured_bench(cluster, arguments, routing, FOUNDERS + 1)
        log(f"round {number}: idle after {result['idle_after']['ops_per_second']:.0f} ops/s")
    except BaseException:
        print(cluster.log_tails(), file=sys.stderr)
        raise
    finally:
        cluster.stop_all()
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
    idle, during = result["idle_before"], result["during"]
    result["throughput_ratio"] = round(during["ops_per_second"] / idle["ops_per_second"], 3)
    result["p99_ratio"] = round(during["p99_ms"] / idle["p99_ms"], 3) if idle["p99_ms"] else None
    overlap = during["rebalance"]["overlap_node_counted_ops_per_second"]
    idle_counted = idle.get("node_counted_ops_per_second")
    result["overlap_throughput_ratio"] = (
        round(overlap / idle_counted, 3) if overlap and idle_counted else None
    )
    return result


# --- the report ---------------------------------------------------------------------------


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    by_routing: dict[str, Any] = {}
    for routing in ROUTINGS:
        chosen = [result for result in rounds if result["routing"] == routing]
        if not chosen:
            continue
        ratios = [result["throughput_ratio"] for result in chosen]
        overlaps = [r["overlap_throughput_ratio"] for r in chosen if r["overlap_throughput_ratio"]]
        by_routing[routing] = {
            "rounds": len(chosen),
            "throughput_ratio_median": round(statistics.median(ratios), 3),
            "throughput_ratio_min": min(ratios),
            "throughput_ratio_max": max(ratios),
            "overlap_throughput_ratio_median": (
                round(statistics.median(overlaps), 3) if overlaps else None
            ),
            "overlap_throughput_ratio_min": min(overlaps) if overlaps else None,
            # Judged over the rebalance itself: a short rebalance in a long window dilutes
            # the whole-window ratio towards 1.
            "meets_target": bool(overlaps) and min(overlaps) >= TARGET_RATIO,
            "meets_target_over_whole_window": min(ratios) >= TARGET_RATIO,
            "rebalance_covered_every_window": all(
                result["during"]["rebalance"]["covered_window"] for result in chosen
            ),
        }
    return {"target_ratio": TARGET_RATIO, "by_routing": by_routing}


def measure(arguments: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    machine_info = machine(CODE_DIR)
    started = time.monotonic()
    rounds: list[dict[str, Any]] = []
    routings = [part for part in arguments.routing.split(",") if part]
    for _ in range(arguments.rounds):
        for routing in routings:
            rounds.append(run_round(len(rounds) + 1, routing, arguments, data_dir))
    machine_info["load_average_end"] = [round(value, 2) for value in os.getloadavg()]
    return {
        "machine": machine_info,
        "settings": {
            "founders": FOUNDERS,
            "partitioning": "fixed:64",
            "keys": arguments.keys,
            "value_size": arguments.value_size,
            "data_bytes": arguments.keys * (arguments.value_size + 16),
            "seconds": arguments.seconds,
            "throttle_bytes_per_second": arguments.throttle or DEFAULT_THROTTLE_BYTES_PER_SECOND,
            "fsync": arguments.fsync,
            "bench_clients": BENCH_CLIENTS,
            "read_ratio": 0.5,
            "routing": routings,
            "sample_interval_seconds": SAMPLE_INTERVAL_SECONDS,
        },
        "rounds": rounds,
        "summary": summarize(rounds),
        "total_seconds": round(time.monotonic() - started, 1),
    }


def print_table(report: dict[str, Any]) -> None:
    info, configured = report["machine"], report["settings"]
    print(
        f"{info['date_utc']} UTC, {info['cpus']} CPUs ({info['cpu_model']}), Python "
        f"{info['python']}, code {info['code']}; load average {info['load_average']} at the "
        f"start, {info['load_average_end']} at the end; {report['total_seconds']} s in all"
    )
    print(
        f"{configured['founders']} nodes + 1 joining, {configured['partitioning']}, fsync "
        f"{configured['fsync']}; {configured['keys']:,} keys x {configured['value_size']} B; "
        f"bench: {configured['bench_clients']} clients, closed loop, 50 % reads, "
        f"{configured['seconds']:g} s; throttle {configured['throttle_bytes_per_second']:,} B/s"
        " per transfer"
    )
    header = (
        f"{'round':>5} {'routing':<7} {'phase':<13}{'ops/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'max ms':>9}{'errors':>7}{'node ops/s':>11}"
    )
    print()
    print(header)
    for result in report["rounds"]:
        for phase in ("idle_before", "during", "idle_after"):
            row = result[phase]
            counted = row.get("node_counted_ops_per_second")
            print(
                f"{result['round']:>5} {result['routing']:<7} {phase:<13}"
                f"{row['ops_per_second']:>9,.0f}{row['p50_ms']:>8.2f}{row['p99_ms']:>8.2f}"
                f"{row['max_ms']:>9.2f}{row['errors']:>7}"
                f"{'-' if counted is None else f'{counted:,.0f}':>11}"
            )
        rebalance = result["during"]["rebalance"]
        overlap = rebalance["overlap_node_counted_ops_per_second"]
        print(
            f"{'':>5} rebalance: {rebalance['transfers']} transfers, "
            f"{rebalance['copied_bytes']:,} bytes in {rebalance['seconds']} s "
            f"(approved at {rebalance['approved_at']} s, done at {rebalance['done_at']} s "
            f"of the {rebalance['bench_window'][1]} s window; covered "
            f"{rebalance['covered_fraction']:.0%}); overlap "
            f"{'-' if overlap is None else f'{overlap:,.0f}'} node ops/s"
        )
        overlap_ratio = result["overlap_throughput_ratio"]
        p99_ratio = result["p99_ratio"]
        lowest = rebalance["overlap_lowest_interval_ops_per_second"]
        print(
            f"{'':>5} during/idle: throughput {result['throughput_ratio']:.2f}, p99 "
            f"{'-' if p99_ratio is None else f'{p99_ratio:.2f}'}; overlap only (node "
            f"counters) {'-' if overlap_ratio is None else f'{overlap_ratio:.2f}'}, lowest "
            f"{SAMPLE_INTERVAL_SECONDS:g} s interval {'-' if lowest is None else f'{lowest:,.0f}'}"
            " node ops/s"
        )
    print()
    for routing, summary in report["summary"]["by_routing"].items():
        overlap = summary["overlap_throughput_ratio_median"]
        print(
            f"{routing}: throughput during/idle over the bench window median "
            f"{summary['throughput_ratio_median']:.2f} (range "
            f"{summary['throughput_ratio_min']:.2f}-{summary['throughput_ratio_max']:.2f}, "
            f"{summary['rounds']} rounds); over the rebalance only (node counters) median "
            f"{'-' if overlap is None else f'{overlap:.2f}'}; target >= {TARGET_RATIO} during "
            f"the rebalance: {'met' if summary['meets_target'] else 'NOT met'}; the rebalance "
            f"covered every bench window: {summary['rebalance_covered_every_window']}"
        )
    print(
        "ops/s, p50, p99: quorumdb bench over its window; node ops/s: the nodes' request "
        "counters over the same window (overlap: from the approval until the plan was done "
        "or the bench ended)"
    )


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=300_000, help="keys preloaded")
    parser.add_argument("--value-size", type=int, default=256, help="bytes per value")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per bench")
    parser.add_argument(
        "--throttle", type=int, help="bytes per second per transfer (default: the cluster's)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds per routing")
    parser.add_argument(
        "--routing",
        default="smart,spread",
        help="comma-separated: smart (quorumdb://), spread (redis://n0,n1,n2); alternated",
    )
    parser.add_argument("--fsync", choices=("always", "everysec", "no"), default="always")
    parser.add_argument("--data-dir", help="keep the nodes' data and logs here")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    arguments = parser.parse_args(argv)
    if not 100 <= arguments.keys <= KEYS_MAX:
        parser.error(f"--keys must be 100..{KEYS_MAX}")
    if not 1 <= arguments.value_size <= VALUE_SIZE_MAX:
        parser.error(f"--value-size must be 1..{VALUE_SIZE_MAX}")
    if not 1 <= arguments.seconds <= SECONDS_MAX:
        parser.error(f"--seconds must be 1..{SECONDS_MAX:g}")
    if arguments.throttle is not None and arguments.throttle < 1024:
        parser.error("--throttle must be at least 1024 bytes per second")
    if not 1 <= arguments.rounds <= ROUNDS_MAX:
        parser.error(f"--rounds must be 1..{ROUNDS_MAX}")
    routings = [part for part in arguments.routing.split(",") if part]
    if not routings or any(part not in ROUTINGS for part in routings):
        parser.error(f"--routing takes a comma-separated list of {', '.join(ROUTINGS)}")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.data_dir:
        report = measure(arguments, Path(arguments.data_dir))
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="quorumdb-rebench-"))
        try:
            report = measure(arguments, data_dir)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    if arguments.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
