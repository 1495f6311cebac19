"""Replicated writes: a 3-node quorumdb cluster against a 3-member etcd cluster, in one run.

Both clusters run on this machine's loopback, fsync on (quorumdb `--fsync always`, etcd's
default), side by side for the whole run. Targets take turns in `--rounds` rounds (etcd,
quorumdb-majority, quorumdb-semi, quorumdb-async, then again), so the machine's noise hits
all of them; each measurement is `--clients` concurrent closed-loop clients doing
write-only puts of random keys out of `--keys`, `--value-size` bytes each, for
`--duration` seconds after `--warmup`.

* etcd (etcd-server 3.4 from Debian) is driven by scripts/etcd_load/main.go, a small Go
  tool built here offline against Debian's golang-etcd-server-dev clientv3 (its puts are
  linearizable: every put goes through Raft). Its connections go to the Raft leader
  (`--etcd-endpoints leader`, default) or round-robin over all members (`all`).
* quorumdb is driven by `quorumdb bench --target quorumdb://... --keyspace KS
  --read-ratio 0`: every client connected to its partition's leader. One keyspace per
  sync mode (`replication: single-leader`, 3 replicas, `--partitioning`), created fresh in
  the same cluster.
* PySyncObj (the Python peer; pip, pinned) runs 3 replicas of its `ReplDict` as local
  processes, driven by `--pysyncobj-threads` threads inside the leader; its log is in
  memory, no fsync. Measured once per round, after the others.

With `--quorumdb-connections C`, the quorumdb clients' requests share C connections,
`--clients / C` pipelined on each, as etcd_load's share its gRPC connections (the
default is a connection per client). `--quorumdb-gc default` starts the nodes with
CPython's garbage-collector settings instead of the tuned ones (`quorumdb node --gc`).

Besides each driver's figures, the script records the CPU seconds the servers and the
load generator used during each measurement (from /proc and getrusage), and the quorumdb
nodes' garbage-collector pauses (`quorumdb_gc_pause_seconds` in their /metrics).

What is missing is installed first unless `--no-install` (apt: etcd-server, etcd-client,
golang-go, golang-etcd-server-dev; pip into a cache folder: pysyncobj, py-spy). A part
that cannot be had is reported by name with the reason, and the run goes on without it;
if the Go tool cannot be built, etcd is measured with `etcdctl check perf` instead and
the driver is labelled so. `--profile` adds one more quorumdb-majority run with py-spy
attached to node0 and prints where its time went.

Every process is started here and stopped here by its PID (SIGTERM, then SIGKILL), also
on errors.

Run: PYTHONPATH=src python scripts/replication_benchmark.py [--rounds 3] [--duration 15]
     [--clients 256] [--quorumdb-connections C] [--quorumdb-gc tuned|default]
     [--modes majority,semi,async] [--skip-etcd] [--skip-pysyncobj]
     [--profile] [--no-install] [--json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))  # also when imported by a test
from failover_benchmark import wait_settled  # noqa: E402
from machine_facts import machine  # noqa: E402

from cluster_harness import LocalTestCluster  # noqa: E402

APT_PACKAGES = ("etcd-server", "etcd-client", "golang-go", "golang-etcd-server-dev")
PIP_PINS = ("pysyncobj==0.3.17", "py-spy==0.4.3")
GOPATH_DEBIAN = Path("/usr/share/gocode")
CLIENTV3_SOURCE = GOPATH_DEBIAN / "src" / "go.etcd.io" / "etcd" / "clientv3"
ETCD_LOAD_SOURCE = ROOT / "scripts" / "etcd_load"
PYSYNCOBJ_PEER = ROOT / "scripts" / "pysyncobj_peer.py"
MODES = ("majority", "semi", "async")
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
RUN_SLACK_SECONDS = 120.0
PROFILE_TOP_COUNT = 15


def cache_dir() -> Path:
    """Where the Go tool, its build cache and the pip packages go (outside the repo)."""
    configured = os.environ.get("QUORUMDB_BENCH_CACHE")
    path = Path(configured) if configured else Path.home() / ".cache" / "quorumdb-bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- processes ----------------------------------------------------------------------------


@dataclass
class Processes:
    """Every process this script starts, to stop each by its PID at the end."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, command: list[str], log_path: Path, **options: Any) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **options)
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT_SECONDS)
        if process in self.started:
            self.started.remove(process)

    def stop_all(self) -> None:
        for process in list(self.started):
            self.stop(process)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes so far, from /proc (0 for one that is gone)."""
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks_per_second


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- dependencies -------------------------------------------------------------------------


def missing_apt_packages(packages: tuple[str, ...]) -> list[str]:
    missing = []
    for package in packages:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
        )
        if status.returncode != 0 or "install ok installed" not in status.stdout:
            missing.append(package)
    return missing


def ensure_apt(packages: tuple[str, ...], install: bool, notes: list[str]) -> list[str]:
    """Install what is missing with apt-get when allowed; returns what is still missing."""
    if shutil.which("dpkg-query") is None:
        notes.append(f"apt: no dpkg here, cannot check or install {', '.join(packages)}")
        return list(packages)
    missing = missing_apt_packages(packages)
    if not missing:
        notes.append(f"apt: already installed: {', '.join(packages)}")
        return []
    if not install:
        notes.append(f"apt: not installed (--no-install): {', '.join(missing)}")
        return missing
    if os.geteuid() != 0:
        notes.append(f"apt: not root, cannot install: {', '.join(missing)}")
        return missing
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, text=True)
        result = subprocess.run(command, capture_output=True, text=True, env=environment)
    still_missing = missing_apt_packages(tuple(missing))
    if still_missing:
        reason = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        notes.append(f"apt: could not install {', '.join(still_missing)}: {reason[0]}")
    else:
        notes.append(f"apt: installed {', '.join(missing)} with apt-get install")
    return still_missing


def ensure_pip(install: bool, notes: list[str]) -> Path | None:
    """pysyncobj and py-spy, pinned, in a cache folder (the project's venv is left alone)."""
    target = cache_dir() / "pylib"
    probe = [sys.executable, "-c", "import pysyncobj"]
    environment = {**os.environ, "PYTHONPATH": str(target)}
    have_package = subprocess.run(probe, capture_output=True, env=environment).returncode == 0
    have_spy = (target / "bin" / "py-spy").exists()
    if have_package and have_spy:
        notes.append(f"pip: already in {target}: {', '.join(PIP_PINS)}")
        return target
    if not install:
        notes.append(f"pip: not installed (--no-install): {', '.join(PIP_PINS)}")
        return None
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target)]
    result = subprocess.run([*command, *PIP_PINS], capture_output=True, text=True)
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1:] or ["no output"]
        notes.append(f"pip: could not install {', '.join(PIP_PINS)}: {reason[0]}")
        return None
    notes.append(f"pip: installed {', '.join(PIP_PINS)} into {target} (pip install --target)")
    return target


def build_etcd_load(notes: list[str]) -> Path | None:
    """Build scripts/etcd_load offline in GOPATH mode against Debian's etcd sources."""
    go = shutil.which("go")
    if go is None or not CLIENTV3_SOURCE.is_dir():
        notes.append(
            "etcd_load: cannot build: "
            + ("no `go` (golang-go)" if go is None else f"no {CLIENTV3_SOURCE}")
        )
        return None
    binary = cache_dir() / "etcd_load"
    source = ETCD_LOAD_SOURCE / "main.go"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    environment = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": str(GOPATH_DEBIAN),
        "GOFLAGS": "",
        "GOPROXY": "off",
        "GOCACHE": str(cache_dir() / "gocache"),
    }
    result = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=ETCD_LOAD_SOURCE,
        capture_output=True,
        text=True,
        env=environment,
    )
    if result.returncode != 0:
        notes.append(f"etcd_load: go build failed: {result.stderr.strip()[-500:]}")
        return None
    notes.append(f"etcd_load: built with {go} (GO111MODULE=off GOPATH={GOPATH_DEBIAN})")
    return binary


# --- etcd ---------------------------------------------------------------------------------


@dataclass
class EtcdCluster:
    processes: list[subprocess.Popen[bytes]]
    client_urls: list[str]

    @property
    def endpoints(self) -> list[str]:
        return [url.removeprefix("http://") for url in self.client_urls]


def start_etcd(data_dir: Path, processes: Processes) -> EtcdCluster:
    ports = free_ports(6)
    client_urls = [f"http://127.0.0.1:{port}" for port in ports[:3]]
    peer_urls = [f"http://127.0.0.1:{port}" for port in ports[3:]]
    initial = ",".join(f"e{index}={url}" for index, url in enumerate(peer_urls))
    started = []
    for index in range(3):
        member_dir = data_dir / f"etcd{index}"
        member_dir.mkdir(parents=True)
        command = [
            "etcd", "--name", f"e{index}", "--data-dir", str(member_dir),
            "--listen-client-urls", client_urls[index],
            "--advertise-client-urls", client_urls[index],
            "--listen-peer-urls", peer_urls[index],
            "--initial-advertise-peer-urls", peer_urls[index],
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", "quorumdb-bench", "--logger", "zap",
            "--log-level", "warn",
        ]  # fmt: skip
        started.append(processes.start(command, data_dir / f"etcd{index}.log"))
    cluster = EtcdCluster(started, client_urls)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while etcd_leader(cluster) is None:
        if time.monotonic() > deadline or any(p.poll() is not None for p in started):
            raise RuntimeError(f"etcd did not start; logs in {data_dir}")
        time.sleep(0.2)
    return cluster


def etcd_leader(cluster: EtcdCluster) -> str | None:
    """The leader's client URL, from `etcdctl endpoint status`, or None."""
    result = subprocess.run(
        ["etcdctl", "--endpoints", ",".join(cluster.client_urls), "endpoint", "status",
         "-w", "json", "--command-timeout=2s"],
        capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"},
    )  # fmt: skip
    if result.returncode != 0:
        return None
    try:
        rows = json.loads(result.stdout)
    except json.JSONDecodeError:
        return None
    for row in rows:
        status = row["Status"]
        if status["leader"] and status["header"]["member_id"] == status["leader"]:
            return str(row["Endpoint"])
    return None


# --- measurements -------------------------------------------------------------------------


@dataclass
class Measurement:
    target: str
    round_number: int
    driver: str
    clients: int
    throughput_ops_per_second: float
    p50_ms: float
    p99_ms: float
    p99_9_ms: float
    errors: int
    count: int
    server_cpu_seconds: float
    client_cpu_seconds: float
    note: str = ""
    gc_seconds: float = 0.0  # the quorumdb nodes' garbage-collector pauses meanwhile
    fsync_seconds: float = 0.0  # and the time their group commits spent in fsync
    fsync_count: int = 0
    loop_stalls: int = 0  # the nodes' event-loop stalls (a timer 30 ms or more late)
    loop_stall_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def measurement_of(
    report: dict[str, Any],
    target: str,
    round_number: int,
    driver: str,
    clients: int,
    server_cpu: float,
    client_cpu: float,
) -> Measurement:
    """One target's round from a load tool's JSON report (both tools print the same keys)."""
    latency = report["latency_ms"]
    return Measurement(
        target=target,
        round_number=round_number,
        driver=driver,
        clients=clients,
        throughput_ops_per_second=report["throughput_ops_per_second"],
        p50_ms=latency["p50"],
        p99_ms=latency["p99"],
        p99_9_ms=latency["p99_9"],
        errors=report["errors"],
        count=report["count"],
        server_cpu_seconds=server_cpu,
        client_cpu_seconds=client_cpu,
        note=report.get("first_error") or "",
    )


def timed_run(
    command: list[str], server_pids: list[int], timeout_seconds: float, **options: Any
) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run a load generator; also the servers' and its own CPU seconds meanwhile."""
    servers_before = cpu_seconds(server_pids)
    client_before = children_cpu_seconds()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_seconds, **options
    )
    return (
        result,
        cpu_seconds(server_pids) - servers_before,
        children_cpu_seconds() - client_before,
    )


def measure_etcd(
    args: argparse.Namespace, etcd: EtcdCluster, tool: Path, round_number: int
) -> Measurement:
    endpoints = etcd.endpoints
    note = "connections to all members"
    if args.etcd_endpoints == "leader":
        leader = etcd_leader(etcd)
        if leader is not None:
            endpoints = [leader.removeprefix("http://")]
            note = "connections to the leader"
    command = [
        str(tool), "--endpoints", ",".join(endpoints), "--clients", str(args.clients),
        "--connections", str(args.etcd_connections), "--duration", f"{args.duration}s",
        "--warmup", f"{args.warmup}s", "--value-size", str(args.value_size),
        "--keys", str(args.keys),
    ]  # fmt: skip
    pids = [process.pid for process in etcd.processes]
    limit = args.duration + args.warmup + RUN_SLACK_SECONDS
    result, server_cpu, client_cpu = timed_run(command, pids, limit)
    if result.returncode != 0:
        raise RuntimeError(f"etcd_load failed: {result.stderr.strip()[-1000:]}")
    document = json.loads(result.stdout)
    driver = f"etcd_load (Go clientv3), {args.etcd_connections} gRPC connections, {note}"
    return measurement_of(
        document, "etcd", round_number, driver, args.clients, server_cpu, client_cpu
    )


def measure_etcd_check_perf(etcd: EtcdCluster, round_number: int) -> Measurement:
    """Fallback when the Go tool cannot be built: etcd's own fixed-rate check."""
    command = ["etcdctl", "--endpoints", ",".join(etcd.client_urls), "check", "perf",
               "--load", "l"]  # fmt: skip
    pids = [process.pid for process in etcd.processes]
    result, server_cpu, client_cpu = timed_run(
        command, pids, 60 + RUN_SLACK_SECONDS, env={**os.environ, "ETCDCTL_API": "3"}
    )
    text = result.stdout + result.stderr
    throughput = 0.0
    for line in text.splitlines():
        if "Throughput is" in line:
            throughput = float(line.split("Throughput is")[1].split()[0])
    return Measurement(
        target="etcd",
        round_number=round_number,
        driver="etcdctl check perf --load l (open loop, 8000 puts/s offered by 500 clients)",
        clients=500,
        throughput_ops_per_second=throughput,
        p50_ms=0.0,
        p99_ms=0.0,
        p99_9_ms=0.0,
        errors=0,
        count=0,
        server_cpu_seconds=server_cpu,
        client_cpu_seconds=client_cpu,
        note=" | ".join(line.strip() for line in text.splitlines() if line.strip())[-400:],
    )


def bench_command(args: argparse.Namespace, cluster: LocalTestCluster, keyspace: str) -> list[str]:
    return [
        sys.executable, "-m", "quorumdb", "bench",
        "--target", f"quorumdb://127.0.0.1:{cluster.resp_port(0)}", "--keyspace", keyspace,
        "--clients", str(quorumdb_connections(args)),
        "--pipeline", str(args.clients // quorumdb_connections(args)),
        "--read-ratio", "0", "--duration", str(args.duration),
        "--warmup", str(args.warmup), "--value-size", str(args.value_size),
        "--keys", str(args.keys), "--json",
    ]  # fmt: skip


def quorumdb_connections(args: argparse.Namespace) -> int:
    """Connections `quorumdb bench` opens: `--clients` requests stay in flight over them,
    `--clients / connections` pipelined on each, as etcd_load's clients share its gRPC
    connections (0: one connection per client)."""
    connections = args.quorumdb_connections
    return args.clients if connections <= 0 else min(connections, args.clients)


def measure_quorumdb(
    args: argparse.Namespace, cluster: LocalTestCluster, mode: str, round_number: int
) -> Measurement:
    keyspace = f"bench_{mode}"
    pids = [process.pid for process in cluster.processes.values()]
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    limit = args.duration + args.warmup + RUN_SLACK_SECONDS
    before = node_totals(cluster)
    result, server_cpu, client_cpu = timed_run(
        bench_command(args, cluster, keyspace), pids, limit, env=environment
    )
    after = node_totals(cluster)
    if result.returncode != 0:
        raise RuntimeError(f"quorumdb bench failed: {result.stderr.strip()[-1000:]}")
    report = json.loads(result.stdout)["targets"][0]
    connections = quorumdb_connections(args)
    driver = (
        f"quorumdb bench (quorumdb:// routing to partition leaders), {connections} connections"
        f" x {args.clients // connections} pipelined"
    )
    measurement = measurement_of(
        report, f"quorumdb-{mode}", round_number, driver, args.clients, server_cpu, client_cpu
    )
    measurement.gc_seconds = after[GC_PAUSE_METRIC] - before[GC_PAUSE_METRIC]
    measurement.fsync_seconds = after[FSYNC_SECONDS_METRIC] - before[FSYNC_SECONDS_METRIC]
    measurement.fsync_count = int(after[FSYNCS_METRIC] - before[FSYNCS_METRIC])
    measurement.loop_stalls = int(after[LOOP_STALLS_METRIC] - before[LOOP_STALLS_METRIC])
    measurement.loop_stall_seconds = (
        after[LOOP_STALL_SECONDS_METRIC] - before[LOOP_STALL_SECONDS_METRIC]
    )
    return measurement


GC_PAUSE_METRIC = "quorumdb_gc_pause_seconds_total"
FSYNC_SECONDS_METRIC = "quorumdb_fsync_seconds_total"
FSYNCS_METRIC = "quorumdb_fsyncs_total"
LOOP_STALLS_METRIC = "quorumdb_event_loop_stalls_total"
LOOP_STALL_SECONDS_METRIC = "quorumdb_event_loop_stall_seconds_total"


def node_totals(cluster: LocalTestCluster) -> dict[str, float]:
    """GC pauses, fsync time and count, event-loop stalls so far, from every node's
    /metrics, summed."""
    names = (
        GC_PAUSE_METRIC,
        FSYNC_SECONDS_METRIC,
        FSYNCS_METRIC,
        LOOP_STALLS_METRIC,
        LOOP_STALL_SECONDS_METRIC,
    )
    totals = dict.fromkeys(names, 0.0)
    for index in range(cluster.node_count):
        text = httpx.get(f"{cluster.http_url(index)}/metrics", timeout=10).text
        for line in text.splitlines():
            name = line.split("{", 1)[0]
            if name in totals:
                totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def measure_pysyncobj(
    args: argparse.Namespace, pylib: Path, data_dir: Path, processes: Processes, round_number: int
) -> Measurement:
    addresses = [f"127.0.0.1:{port}" for port in free_ports(3)]
    environment = {**os.environ, "PYTHONPATH": str(pylib)}
    driver_address = addresses[0]

    def partners(address: str) -> str:
        return ",".join(other for other in addresses if other != address)

    driver_command = [
        sys.executable, str(PYSYNCOBJ_PEER), "drive", "--address", driver_address,
        "--partners", partners(driver_address), "--threads", str(args.pysyncobj_threads),
        "--duration", str(args.duration), "--warmup", str(args.warmup),
        "--value-size", str(args.value_size), "--keys", str(args.keys),
    ]  # fmt: skip
    servers_before = children_cpu_seconds()
    driver = subprocess.Popen(
        driver_command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment
    )
    processes.started.append(driver)
    time.sleep(0.3)  # the driver first: its shorter election timeout makes it the leader
    replicas = [
        processes.start(
            [
                sys.executable,
                str(PYSYNCOBJ_PEER),
                "replica",
                "--address",
                address,
                "--partners",
                partners(address),
                "--driver",
                driver_address,
            ],
            data_dir / f"pysyncobj-{round_number}-{index}.log",
            env=environment,
        )  # fmt: skip
        for index, address in enumerate(addresses[1:], start=1)
    ]
    try:
        stdout, stderr = driver.communicate(timeout=args.duration + args.warmup + RUN_SLACK_SECONDS)
    finally:
        for replica in replicas:
            processes.stop(replica)
        processes.stop(driver)
    if driver.returncode != 0:
        raise RuntimeError(f"pysyncobj driver failed: {stderr.decode()[-1000:]}")
    document = json.loads(stdout)
    warnings = stderr.decode().count("state machine may have diverged")
    note = f"{warnings} PySyncObj 'state machine may have diverged' warnings" if warnings else ""
    total_cpu = children_cpu_seconds() - servers_before
    label = document["driver"] + ", no fsync"
    measurement = measurement_of(
        document, "pysyncobj", round_number, label, args.pysyncobj_threads, total_cpu, 0.0
    )
    measurement.note = note + " (CPU: all 3 processes, driver threads included)"
    return measurement


# --- quorumdb -----------------------------------------------------------------------------


def create_keyspaces(args: argparse.Namespace, cluster: LocalTestCluster) -> None:
    for mode in args.modes:
        body = {
            "name": f"bench_{mode}",
            "partitioning": args.partitioning,
            "replication": "single-leader",
            "replicas": 3,
            "sync": mode,
        }
        created = httpx.post(f"{cluster.http_url(0)}/v1/keyspaces", json=body, timeout=30)
        created.raise_for_status()
    wait_settled(cluster)


def profile_majority(
    args: argparse.Namespace, cluster: LocalTestCluster, pylib: Path | None, data_dir: Path
) -> dict[str, Any]:
    """One more majority run with py-spy sampling node0; top functions by own and total time."""
    spy = pylib / "bin" / "py-spy" if pylib else None
    if spy is None or not spy.exists():
        return {"error": "py-spy is not installed"}
    output = data_dir / "node0.pyspy.txt"
    process = cluster.processes[0]
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    recorder = subprocess.Popen(
        [str(spy), "record", "--pid", str(process.pid), "--duration",
         str(int(args.duration + args.warmup)), "--rate", "200", "--format", "raw",
         "--nonblocking", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        subprocess.run(
            bench_command(args, cluster, "bench_majority"),
            capture_output=True,
            timeout=args.duration + args.warmup + RUN_SLACK_SECONDS,
            env=environment,
        )
        _, error = recorder.communicate(timeout=60)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait(10)
    if not output.exists():
        return {"error": f"py-spy recorded nothing: {error.decode().strip()[-300:]}"}
    return summarize_collapsed_stacks(output.read_text())


def summarize_collapsed_stacks(text: str) -> dict[str, Any]:
    """Own (leaf) and total (anywhere on the stack) share of samples per function."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame.strip() for frame in stack.split(";") if frame.strip()]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count

    def top(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        """The largest entries, leaving out the frames under every sample (main, run...)."""
        rows = [
            (frame, round(100.0 * count / samples, 1))
            for frame, count in counter.most_common()
            if count < samples * 0.98
        ]
        return rows[:PROFILE_TOP_COUNT]

    return {"samples": samples, "own_percent": top(own), "total_percent": top(total)}


# --- the run ------------------------------------------------------------------------------


def run(args: argparse.Namespace, data_dir: Path, notes: list[str]) -> dict[str, Any]:
    install = not args.no_install
    etcd_tool: Path | None = None
    use_etcd = not args.skip_etcd
    if args.skip_etcd:
        notes.append("etcd: skipped (--skip-etcd)")
    else:
        missing = ensure_apt(APT_PACKAGES, install, notes)
        if "etcd-server" in missing or shutil.which("etcd") is None:
            notes.append("etcd: not measured: etcd-server is not installed")
            use_etcd = False
        else:
            etcd_tool = build_etcd_load(notes)
            if etcd_tool is None:
                notes.append("etcd: driven by `etcdctl check perf` (the Go tool was not built)")
    pylib: Path | None = None
    if args.skip_pysyncobj and not args.profile:
        notes.append("pysyncobj: skipped (--skip-pysyncobj)")
    else:
        pylib = ensure_pip(install, notes)
        if args.skip_pysyncobj:
            notes.append("pysyncobj: skipped (--skip-pysyncobj)")
        elif pylib is None:
            notes.append("pysyncobj: not measured: the package is not installed")
    processes = Processes()
    measurements: list[Measurement] = []
    profile: dict[str, Any] | None = None
    cluster = LocalTestCluster(
        3, data_dir / "quorumdb", fsync="always", extra_arguments=["--gc", args.quorumdb_gc]
    )
    try:
        etcd = start_etcd(data_dir / "etcd", processes) if use_etcd else None
        cluster.start()
        create_keyspaces(args, cluster)
        for round_number in range(1, args.rounds + 1):
            if etcd is not None:
                if etcd_tool is not None:
                    measurement = measure_etcd(args, etcd, etcd_tool, round_number)
                else:
                    measurement = measure_etcd_check_perf(etcd, round_number)
                report_progress(measurement)
                measurements.append(measurement)
            for mode in args.modes:
                measurement = measure_quorumdb(args, cluster, mode, round_number)
                report_progress(measurement)
                measurements.append(measurement)
            if pylib is not None and not args.skip_pysyncobj:
                measurement = measure_pysyncobj(args, pylib, data_dir, processes, round_number)
                report_progress(measurement)
                measurements.append(measurement)
        if args.profile and "majority" in args.modes:
            profile = profile_majority(args, cluster, pylib, data_dir)
    finally:
        cluster.stop()
        processes.stop_all()
    return {
        "measurements": [measurement.as_dict() for measurement in measurements],
        "summary": summarize(measurements),
        "profile_node0_majority": profile,
    }


def report_progress(measurement: Measurement) -> None:
    print(
        f"round {measurement.round_number} {measurement.target}: "
        f"{measurement.throughput_ops_per_second:,.0f} ops/s, p50 {measurement.p50_ms:.2f} ms,"
        f" p99 {measurement.p99_ms:.2f} ms, errors {measurement.errors}",
        file=sys.stderr,
    )


def summarize(measurements: list[Measurement]) -> list[dict[str, Any]]:
    """Per target: medians over rounds, and the median of the per-round ratios to etcd."""
    etcd_by_round = {
        m.round_number: m.throughput_ops_per_second for m in measurements if m.target == "etcd"
    }
    targets: dict[str, list[Measurement]] = {}
    for measurement in measurements:
        targets.setdefault(measurement.target, []).append(measurement)
    rows = []
    for target, runs in targets.items():
        ratios = [
            run.throughput_ops_per_second / etcd_by_round[run.round_number]
            for run in runs
            if etcd_by_round.get(run.round_number)
        ]
        operations = sum(run.count for run in runs)
        rows.append(
            {
                "target": target,
                "driver": runs[0].driver,
                "clients": runs[0].clients,
                "rounds": len(runs),
                "throughput_ops_per_second": statistics.median(
                    run.throughput_ops_per_second for run in runs
                ),
                "throughput_by_round": [round(run.throughput_ops_per_second) for run in runs],
                "p50_ms": statistics.median(run.p50_ms for run in runs),
                "p99_ms": statistics.median(run.p99_ms for run in runs),
                "p99_9_ms": statistics.median(run.p99_9_ms for run in runs),
                "errors": sum(run.errors for run in runs),
                "ratio_to_etcd": statistics.median(ratios) if ratios else None,
                "ratio_to_etcd_by_round": [round(ratio, 2) for ratio in ratios],
                "server_cpu_ms_per_1000_ops": (
                    1000.0 * 1000.0 * sum(run.server_cpu_seconds for run in runs) / operations
                    if operations
                    else None
                ),
                "gc_pause_ms_per_1000_ops": (
                    1000.0 * 1000.0 * sum(run.gc_seconds for run in runs) / operations
                    if operations and target.startswith("quorumdb")
                    else None
                ),
                "fsync_ms_mean_by_round": [
                    round(1000.0 * run.fsync_seconds / run.fsync_count, 2)
                    for run in runs
                    if run.fsync_count
                ],
                "loop_stalls_by_round": [
                    (run.loop_stalls, round(1000.0 * run.loop_stall_seconds))
                    for run in runs
                    if target.startswith("quorumdb")
                ],
                "client_cpu_ms_per_1000_ops": (
                    1000.0 * 1000.0 * sum(run.client_cpu_seconds for run in runs) / operations
                    if operations
                    else None
                ),
            }
        )
    return rows


def print_report(document: dict[str, Any]) -> None:
    for note in document["notes"]:
        print(f"- {note}")
    print()
    header = (
        "| target | clients | ops/s (median) | ops/s by round | p50 ms | p99 ms | p99.9 ms "
        "| errors | ratio to etcd (by round) | server CPU ms / 1000 ops "
        "| GC pause ms / 1000 ops |"
    )
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    for row in document["summary"]:
        ratio = row["ratio_to_etcd"]
        ratio_text = "-" if ratio is None else f"{ratio:.2f} ({row['ratio_to_etcd_by_round']})"
        cpu = row["server_cpu_ms_per_1000_ops"]
        gc_ms = row["gc_pause_ms_per_1000_ops"]
        print(
            f"| {row['target']} | {row['clients']} | {row['throughput_ops_per_second']:,.0f} "
            f"| {', '.join(f'{value:,}' for value in row['throughput_by_round'])} "
            f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['p99_9_ms']:.2f} "
            f"| {row['errors']} | {ratio_text} | {'-' if cpu is None else f'{cpu:,.0f}'} "
            f"| {'-' if gc_ms is None else f'{gc_ms:,.1f}'} |"
        )
    print()
    for row in document["summary"]:
        print(f"{row['target']}: {row['driver']}")
    for row in document["summary"]:
        if row["fsync_ms_mean_by_round"]:
            by_round = ", ".join(f"{value:.2f}" for value in row["fsync_ms_mean_by_round"])
            print(f"{row['target']}: mean fsync by round, ms: {by_round}")
    for row in document["summary"]:
        if row["loop_stalls_by_round"]:
            stalls = ", ".join(
                f"{count} ({stalled_ms:,} ms)" for count, stalled_ms in row["loop_stalls_by_round"]
            )
            print(f"{row['target']}: event-loop stalls of 30 ms or more by round: {stalls}")
    profile = document.get("profile_node0_majority")
    if profile:
        print()
        if "error" in profile:
            print(f"profile: {profile['error']}")
        else:
            print(f"py-spy on node0 during a majority run, {profile['samples']} samples:")
            print("own time:")
            for frame, percent in profile["own_percent"]:
                print(f"  {percent:5.1f} %  {frame}")
            print("total time (on the stack):")
            for frame, percent in profile["total_percent"]:
                print(f"  {percent:5.1f} %  {frame}")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--clients", type=int, default=256)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--modes", default=",".join(MODES), help="quorumdb sync modes")
    parser.add_argument("--partitioning", default="fixed:3", help="of the quorumdb keyspaces")
    parser.add_argument("--etcd-endpoints", choices=("leader", "all"), default="leader")
    parser.add_argument("--etcd-connections", type=int, default=32)
    parser.add_argument(
        "--quorumdb-connections",
        type=int,
        default=0,
        help="connections the quorumdb clients share, pipelining (default: one per client)",
    )
    parser.add_argument(
        "--quorumdb-gc",
        choices=("tuned", "default"),
        default="tuned",
        help="the nodes' garbage collector (quorumdb node --gc)",
    )
    parser.add_argument("--pysyncobj-threads", type=int, default=64)
    parser.add_argument("--skip-etcd", action="store_true")
    parser.add_argument("--skip-pysyncobj", action="store_true")
    parser.add_argument("--profile", action="store_true", help="py-spy on node0, majority")
    parser.add_argument("--no-install", action="store_true", help="install nothing")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    args.modes = [mode for mode in args.modes.split(",") if mode]
    unknown = [mode for mode in args.modes if mode not in MODES]
    if unknown or args.rounds < 1:
        parser.error(f"bad --modes {unknown} or --rounds {args.rounds}")
    if args.clients % quorumdb_connections(args):
        parser.error("--clients must be a multiple of --quorumdb-connections")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    notes: list[str] = []
    facts = machine(ROOT)
    with tempfile.TemporaryDirectory(prefix="quorumdb-replication-bench-") as directory:
        result = run(args, Path(directory), notes)
    document = {
        "machine": facts,
        "load_average_end": [round(value, 2) for value in os.getloadavg()],
        "settings": {key: value for key, value in vars(args).items() if key not in ("json",)},
        "notes": notes,
        **result,
    }
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print_report(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
