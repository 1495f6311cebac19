"""Start and stop real quorumdb node processes on loopback for tests.

Processes are stopped by PID (SIGTERM, then SIGKILL); nothing is killed by name.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from quorumdb.core.cluster import Member, local_members

PORT_SPAN = 300  # the local layout uses base .. base+200+N


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_range() -> tuple[int, int]:
    """Where to look for free ports: below the kernel's ephemeral range when there is room
    (else an outgoing connection may take a port between the check and the bind)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    return (10_000, low - PORT_SPAN) if low >= 15_000 else (20_000, 60_000 - PORT_SPAN)


def free_base_port(node_count: int) -> int:
    """A base port whose RESP, HTTP and peer ports are all free right now."""
    chooser = random.Random()  # port choice is not part of any replayed behaviour
    low, high = port_range()
    for _ in range(200):
        base = chooser.randrange(low, high, 10)
        ports = [base + offset + index for offset in (0, 100, 200) for index in range(node_count)]
        if all(_port_free(port) for port in ports):
            return base
    raise RuntimeError("no free port range found")


def wait_for_port(
    host: str,
    port: int,
    timeout_seconds: float = 20.0,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited with {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout_seconds} s")


def wait_for(condition: Callable[[], bool], timeout_seconds: float = 30.0) -> None:
    """Poll `condition` (an HTTP error counts as not yet) until it holds or time is up."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@dataclass
class LocalTestCluster:
    node_count: int
    data_dir: Path
    fsync: str = "always"
    base_port: int = 0
    extra_arguments: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.base_port:
            self.base_port = free_base_port(self.node_count)
        self.members: tuple[Member, ...] = local_members(self.node_count, self.base_port)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.log_paths = {i: self.data_dir / f"node{i}.log" for i in range(self.node_count)}

    def join_node(self, index: int) -> subprocess.Popen[bytes]:
        """Start node `index` (beyond the founders) joining through node0; the base port
        must leave room for it (free_base_port(index + 1))."""
        member = local_members(index + 1, self.base_port)[index]
        self.members = (*self.members, member)
        self.log_paths[index] = self.data_dir / f"node{index}.log"
        command = [
            sys.executable, "-m", "quorumdb", "node",
            "--index", str(index), "--port", str(self.base_port),
            "--data-dir", str(self.data_dir), "--fsync", self.fsync,
            "--join", f"127.0.0.1:{self.members[0].http_port}",
        ]  # fmt: skip
        log = open(self.log_paths[index], "ab")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.processes[index] = process
        self.wait_ready(index)
        return process

    def command(self, index: int) -> list[str]:
        return [
            sys.executable, "-m", "quorumdb", "node",
            "--index", str(index), "--nodes", str(self.node_count),
            "--port", str(self.base_port), "--data-dir", str(self.data_dir),
            "--fsync", self.fsync, *self.extra_arguments,
        ]  # fmt: skip

    def start_node(self, index: int, wait: bool = True) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_paths[index], "ab")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(self.command(index), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.processes[index] = process
        if wait:
            self.wait_ready(index)
        return process

    def wait_ready(self, index: int) -> None:
        member = self.members[index]
        process = self.processes[index]
        wait_for_port(member.host, member.resp_port, process=process)
        wait_for_port(member.host, member.http_port, process=process)

    def start(self) -> LocalTestCluster:
        try:
            for index in range(self.node_count):
                self.start_node(index, wait=False)
            for index in range(self.node_count):
                self.wait_ready(index)
            self.wait_linked()
        except BaseException:
            self.stop()  # never leave half a cluster running
            raise
        return self

    def wait_linked(self, timeout_seconds: float = 20.0) -> None:
        """Until every node can forward to every other: nodes that started before a peer
        listened back off for a moment and fail forwards to it fast meanwhile (UNAVAILABLE),
        which tests must not mistake for the behaviour they check. Reads only: nothing is
        written, so key counts stay exact."""
        import json

        import redis

        from quorumdb.core.partitioning import layout_from_dict

        self.wait_controller_leader(timeout_seconds)
        if self.node_count < 2:
            return
        with redis.Redis(port=self.resp_port(0)) as client:
            document = json.loads(client.execute_command("QUORUMDB.MAP"))
        layout = layout_from_dict(document["keyspaces"]["default"]["layout"])
        key_of: dict[str, bytes] = {}
        for candidate in range(10_000):
            key = b"harness:link:%d" % candidate
            key_of.setdefault(layout.owner(layout.locate(key)), key)
            if len(key_of) == self.node_count:
                break
        deadline = time.monotonic() + timeout_seconds
        for index in range(self.node_count):
            with redis.Redis(port=self.resp_port(index), socket_timeout=10) as client:
                for key in key_of.values():
                    while True:
                        try:
                            client.get(key)
                            break
                        except redis.ResponseError:
                            if time.monotonic() > deadline:
                                raise
                            time.sleep(0.05)

    def wait_controller_leader(self, timeout_seconds: float = 20.0) -> str:
        """Until every running node names the same controller leader (its first no-op
        committed), so tests that count writes or create keyspaces start from quiet."""
        import httpx

        deadline = time.monotonic() + timeout_seconds
        while True:
            views = set()
            for index in self.processes:
                try:
                    status = httpx.get(f"{self.http_url(index)}/v1/cluster", timeout=5).json()
                    controller = status["controller"]
                    views.add((controller["leader"], controller["commit_index"] > 0))
                except httpx.HTTPError:
                    views.add((None, False))
            if len(views) == 1:
                leader, committed = views.pop()
                if leader is not None and committed:
                    return str(leader)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no agreed controller leader: {views}")
            time.sleep(0.05)

    def kill_node(self, index: int) -> None:
        """SIGKILL: a crash, nothing flushed."""
        process = self.processes.pop(index)
        process.kill()
        process.wait(10)

    def stop_node(self, index: int, timeout_seconds: float = 10.0) -> int:
        process = self.processes.pop(index)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        return process.returncode

    def stop(self) -> None:
        for index in list(self.processes):
            self.stop_node(index)

    def resp_port(self, index: int = 0) -> int:
        return self.members[index].resp_port

    def http_url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.members[index].http_port}"

    def logs(self) -> str:
        return "\n".join(
            f"--- node{i} ---\n{path.read_text(errors='replace')[-4000:]}"
            for i, path in self.log_paths.items()
            if path.exists()
        )

    def __enter__(self) -> LocalTestCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
