"""`quorumdb up`: a local cluster of separate node processes in the foreground."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
from rich.console import Console

from quorumdb.core.cluster import local_members

READY_TIMEOUT_SECONDS = 30.0


@dataclass
class LocalCluster:
    node_count: int
    base_port: int
    data_dir: str
    fsync: str = "always"
    host: str = "127.0.0.1"
    log_level: str = "info"

    def __post_init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.members = local_members(self.node_count, self.base_port, self.host)

    def command_for(self, index: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "quorumdb",
            "node",
            "--index",
            str(index),
            "--nodes",
            str(self.node_count),
            "--port",
            str(self.base_port),
            "--host",
            self.host,
            "--data-dir",
            self.data_dir,
            "--fsync",
            self.fsync,
            "--log-level",
            self.log_level,
        ]

    def start(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        for index in range(self.node_count):
            self.processes.append(subprocess.Popen(self.command_for(index)))

    def wait_ready(self, timeout_seconds: float = READY_TIMEOUT_SECONDS) -> bool:
        """True once every node serves HTTP; until the deadline, also waits for every node
        to see every other alive. A node that tried a peer before it listened backs off
        and answers UNAVAILABLE for what it would forward there until the peer is seen,
        so serving ports alone left the first requests to chance (flaky under load)."""
        deadline = time.monotonic() + timeout_seconds
        pending = list(self.members)
        while pending and time.monotonic() < deadline:
            if any(process.poll() is not None for process in self.processes):
                return False
            pending = [m for m in pending if not _port_open(m.host, m.http_port)]
            if pending:
                time.sleep(0.1)
        if pending:
            return False
        while time.monotonic() < deadline:
            if any(process.poll() is not None for process in self.processes):
                return False
            if all(_sees_everyone_alive(m.host, m.http_port) for m in self.members):
                break
            time.sleep(0.1)
        return True

    def stop(self, timeout_seconds: float = 10.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_seconds
        for process in self.processes:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.wait(remaining)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def connection_help(self) -> str:
        first = self.members[0]
        return (
            f"quorumdb: {self.node_count} nodes up, data in {os.path.abspath(self.data_dir)}"
            f" (fsync {self.fsync})\n"
            + "".join(
                f"  {m.node_id}: RESP {m.host}:{m.resp_port}  HTTP http://{m.host}:{m.http_port}"
                f"  pid {p.pid}\n"
                for m, p in zip(self.members, self.processes, strict=True)
            )
            + "Connect:\n"
            f"  redis-cli -p {first.resp_port} set hello world\n"
            f"  curl http://{first.host}:{first.http_port}/v1/keyspaces/default/keys/hello\n"
            f'  {sys.executable} -c "from quorumdb.client import Client; '
            f"print(Client('{first.host}:{first.resp_port}').get('hello'))\"\n"
            f"  metrics: curl http://{first.host}:{first.http_port}/metrics\n"
            "Ctrl-C stops every node."
        )


def _sees_everyone_alive(host: str, http_port: int) -> bool:
    try:
        document = httpx.get(f"http://{host}:{http_port}/v1/cluster", timeout=2.0).json()
    except (httpx.HTTPError, ValueError):
        return False
    return all(member.get("health") == "alive" for member in document.get("members", []))


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def run_up(cluster: LocalCluster) -> int:
    console = Console(stderr=True)
    stopping = False

    def request_stop(signal_number: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    cluster.start()
    try:
        with console.status(f"starting {cluster.node_count} nodes..."):
            ready = cluster.wait_ready()
        if not ready:
            console.print("[red]a node failed to start; stopping the others[/red]")
            return 1
        print(cluster.connection_help(), flush=True)
        while not stopping:
            exited = [p for p in cluster.processes if p.poll() is not None]
            if exited:
                codes = ", ".join(f"pid {p.pid} exit {p.returncode}" for p in exited)
                console.print(f"[red]node process ended unexpectedly ({codes})[/red]")
                return 1
            time.sleep(0.2)
        console.print("stopping...")
        return 0
    finally:
        cluster.stop()
        console.print("all nodes stopped")
