"""The `quorumdb` command, run as a subprocess: help texts, data and admin verbs against a
real cluster, and `quorumdb up` started and stopped with SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from cluster_harness import free_base_port

HELP_COMMANDS = [
    [],
    ["up"],
    ["node"],
    ["get"],
    ["put"],
    ["del"],
    ["scan"],
    ["status"],
    ["keyspace"],
    ["keyspace", "create"],
    ["keyspace", "list"],
    ["keyspace", "show"],
    ["bench"],
    ["sim"],
    ["check"],
    ["lostfound"],
    ["lostfound", "list"],
    ["lostfound", "replay"],
]
HELP_MUST_MENTION = {
    "up": "--nodes",
    "node": "--config",
    "get": "--node",
    "put": "--expire-ms",
    "del": "keys",
    "scan": "--match",
    "status": "--http",
    "keyspace": "create",
    "keyspace create": "--partitioning",
    "keyspace list": "--http",
    "keyspace show": "name",
    "check": "--json",
    "lostfound": "replay",
    "lostfound list": "--json",
    "lostfound replay": "NODE:HEX",
}


def quorumdb(*arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorumdb", *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def create_keyspace(*arguments: str) -> tuple[subprocess.CompletedProcess[str], bool]:
    """`quorumdb keyspace create`, again while the controller answers that leadership
    moved before the entry applied ("it may still commit": on a loaded machine a leader
    can lose an election mid-request). Also says whether an attempt was indeterminate,
    after which "created": false is as right as true."""
    indeterminate = False
    for _ in range(5):
        outcome = quorumdb("keyspace", "create", *arguments)
        if "may still commit" not in outcome.stderr:
            return outcome, indeterminate
        indeterminate = True
        time.sleep(0.5)
    return outcome, indeterminate


def test_help_of_every_verb() -> None:
    # All at once: each is a Python start-up, and they are independent.
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "quorumdb", *verb, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for verb in HELP_COMMANDS
    ]
    for verb, process in zip(HELP_COMMANDS, processes, strict=True):
        stdout, stderr = process.communicate(timeout=60)
        name = " ".join(verb)
        assert process.returncode == 0, (name, stderr)
        assert stdout.startswith(f"usage: quorumdb {name}".rstrip()), (name, stdout)
        assert "options:" in stdout and "-h, --help" in stdout
        if not verb:
            for listed in ("up", "node", "get", "put", "del", "scan", "status", "keyspace"):
                assert re.search(rf"^\s+{listed}\s+\S", stdout, re.MULTILINE), listed
        elif name in HELP_MUST_MENTION:
            assert HELP_MUST_MENTION[name] in stdout, (name, stdout)
    unknown = quorumdb("frobnicate")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr


def test_data_verbs(cluster3) -> None:
    node = ["--node", f"127.0.0.1:{cluster3.resp_port(1)}"]
    other = ["--node", f"127.0.0.1:{cluster3.resp_port(2)}"]
    put = quorumdb("put", "cli-key", "héllo value", *node)
    assert (put.returncode, put.stdout.strip()) == (0, "OK"), put.stderr
    got = quorumdb("get", "cli-key", *other)
    assert (got.returncode, got.stdout.strip()) == (0, "héllo value"), got.stderr
    refused = quorumdb("put", "cli-key", "x", "--if-absent", *node)
    assert refused.returncode == 1 and "not written" in refused.stdout
    assert quorumdb("get", "cli-key", *node).stdout.strip() == "héllo value"
    with redis.Redis(port=cluster3.resp_port(0)) as client:
        client.mset({f"cli-scan:{i}": "v" for i in range(25)})
    scan = quorumdb("scan", "--match", "cli-scan:*", *other)
    assert scan.returncode == 0
    assert sorted(scan.stdout.split()) == sorted(f"cli-scan:{i}" for i in range(25))
    limited = quorumdb("scan", "--match", "cli-scan:*", "--limit", "5", *node)
    assert len(limited.stdout.split()) == 5
    deleted = quorumdb("del", "cli-key", "cli-scan:0", "cli-never", *node)
    assert (deleted.returncode, deleted.stdout.strip()) == (0, "2")
    missing = quorumdb("get", "cli-key", *other)
    assert (missing.returncode, missing.stdout.strip()) == (1, "(nil)")
    expiring = quorumdb("put", "cli-ttl", "v", "--expire-ms", "100000", *node)
    assert expiring.returncode == 0
    with redis.Redis(port=cluster3.resp_port(0)) as client:
        assert client.get("cli-ttl") == b"v"


def test_errors_are_reported_without_tracebacks(cluster3) -> None:
    port = free_base_port(1)  # nothing listens there
    down = quorumdb("get", "k", "--node", f"127.0.0.1:{port}")
    assert down.returncode == 1
    assert down.stderr.startswith("error:") and "Traceback" not in down.stderr
    status = quorumdb("status", "--http", f"127.0.0.1:{port}")
    assert status.returncode == 1 and "cannot reach" in status.stderr
    node = f"127.0.0.1:{cluster3.resp_port(0)}"
    unknown = quorumdb("get", "k", "--keyspace", "no_such_keyspace", "--node", node)
    assert unknown.returncode == 1
    assert "unknown keyspace" in unknown.stderr and "Traceback" not in unknown.stderr


def test_status_and_keyspace_verbs(cluster3) -> None:
    http = ["--http", f"127.0.0.1:{cluster3.members[1].http_port}"]
    status = quorumdb("status", *http)
    assert status.returncode == 0, status.stderr
    for expected in ("node0", "node1", "node2", "default", "alive", str(cluster3.resp_port(2))):
        assert expected in status.stdout
    assert "unreachable" not in status.stdout
    as_json = json.loads(quorumdb("status", "--json", *http).stdout)
    assert [m["node_id"] for m in as_json["members"]] == ["node0", "node1", "node2"]
    created, indeterminate = create_keyspace("cli_ks", "--partitioning", "fixed:8", *http)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["created"] is True or indeterminate
    again, _ = create_keyspace("cli_ks", "--partitioning", "fixed:8", *http)
    assert again.returncode == 0 and json.loads(again.stdout)["created"] is False
    conflict, _ = create_keyspace("cli_ks", "--partitioning", "fixed:4", *http)
    assert conflict.returncode == 1 and "exists" in conflict.stderr
    invalid = quorumdb("keyspace", "create", "bad name", *http)
    assert invalid.returncode == 1 and "invalid keyspace name" in invalid.stderr
    other_http = ["--http", f"127.0.0.1:{cluster3.members[2].http_port}"]
    listed = json.loads(quorumdb("keyspace", "list", *other_http).stdout)
    assert {k["name"] for k in listed["keyspaces"]} >= {"default", "cli_ks"}
    shown = quorumdb("keyspace", "show", "cli_ks", *other_http)
    assert json.loads(shown.stdout) == {
        "name": "cli_ks",
        "partitioning": "fixed:8",
        "replication_factor": 1,
    }
    absent = quorumdb("keyspace", "show", "nope", *other_http)
    assert absent.returncode == 1 and "no keyspace named" in absent.stderr
    node = ["--node", f"127.0.0.1:{cluster3.resp_port(0)}"]
    put = quorumdb("put", "ks-key", "ks-value", "--keyspace", "cli_ks", *node)
    assert put.returncode == 0, put.stderr
    assert quorumdb("get", "ks-key", "--keyspace", "cli_ks", *node).stdout.strip() == "ks-value"
    assert quorumdb("get", "ks-key", *node).stdout.strip() == "(nil)"  # not in default
    status = quorumdb("status", *http)
    assert "cli_ks" in status.stdout
    replicated, _ = create_keyspace(
        "cli_replicated", "--replication", "single-leader", "--sync", "semi", *http
    )
    assert replicated.returncode == 0, replicated.stderr
    config = json.loads(replicated.stdout)["keyspace"]
    assert (config["replication_factor"], config["sync"]) == (3, "semi")
    status = quorumdb("status", *http)
    assert "replicas on node1" in status.stdout and "worst follower lag" in status.stdout
    every = quorumdb("status", "--replicas", *http)
    assert "leader" in every.stdout and "follower" in every.stdout
    assert "entries" in every.stdout  # followers' lag, on the leaders
    too_many = quorumdb("keyspace", "create", "cli_five", "--replication", "single-leader",
                        "--replicas", "5", *http)  # fmt: skip
    assert too_many.returncode == 1 and "5 replicas need 5 active members" in too_many.stderr
    full = quorumdb("keyspace", "move-replica", "cli_replicated", "0", "--from", "node1",
                    "--to", "node2", *http)  # fmt: skip
    assert full.returncode == 1 and "node2 already holds a replica" in full.stderr, full.stderr


def test_lostfound_verbs(cluster3) -> None:
    http = ["--http", f"127.0.0.1:{cluster3.members[1].http_port}"]
    listed = quorumdb("lostfound", "list", "--json", *http)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    table = quorumdb("lostfound", "list", *http)
    assert table.returncode == 0 and "empty on every reachable node" in table.stdout
    unknown = "node2:" + (b"orders\x00" + bytes(24)).hex()
    for verb in ("replay", "discard"):
        missing = quorumdb("lostfound", verb, unknown, *http)
        assert missing.returncode == 1 and "no lost+found entry" in missing.stderr
        assert "Traceback" not in missing.stderr
    malformed = quorumdb("lostfound", "replay", "node2:xyz", *http)
    assert malformed.returncode == 1 and "malformed lost+found id" in malformed.stderr
    stranger = quorumdb("lostfound", "discard", "node9:" + unknown.split(":")[1], *http)
    assert stranger.returncode == 1 and "not a member" in stranger.stderr
    down = quorumdb("lostfound", "list", "--http", f"127.0.0.1:{free_base_port(1)}")
    assert down.returncode == 1 and "cannot reach" in down.stderr


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of a child we did not reap is as good as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def test_up_starts_nodes_and_sigint_stops_them(tmp_path) -> None:
    base = free_base_port(2)
    ports = [base + offset + index for offset in (0, 100, 200) for index in range(2)]
    process = subprocess.Popen(
        [sys.executable, "-m", "quorumdb", "up", "--nodes", "2", "--port", str(base),
         "--data-dir", str(tmp_path / "up")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    node_pids: list[int] = []
    try:
        assert process.stdout is not None
        help_text = ""
        deadline = time.monotonic() + 45
        while "Ctrl-C stops every node" not in help_text:
            line = process.stdout.readline()
            assert line, f"quorumdb up ended early: {help_text!r}"
            help_text += line
            assert time.monotonic() < deadline, help_text
        node_pids = [int(pid) for pid in re.findall(r"pid (\d+)", help_text)]
        assert len(node_pids) == 2
        assert f"redis-cli -p {base} set hello world" in help_text
        assert f"http://127.0.0.1:{base + 100}" in help_text
        with redis.Redis(port=base) as first, redis.Redis(port=base + 1) as second:
            assert first.set("hello", "world") is True
            assert second.get("hello") == b"world"
            assert second.dbsize() == 1
        assert all(port_open(port) for port in ports)
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0
        deadline = time.monotonic() + 5
        while any(process_alive(pid) for pid in node_pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(process_alive(pid) for pid in node_pids)
        assert not any(port_open(port) for port in ports)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for pid in node_pids:  # only the node processes this `up` reported
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
