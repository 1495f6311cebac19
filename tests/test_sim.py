"""The deterministic simulator: replay, each fault kind, persist-before-send, the verb.

Every randomized test names its seed and the replay command when it fails.
"""

from __future__ import annotations

import ast
import functools
import os
import pathlib
import random
import subprocess
import sys

import pytest

from quorumdb.check.history import load_history
from quorumdb.core.cluster import local_members
from quorumdb.core.controller.raft_messages import InstallSnapshotReply
from quorumdb.core.effects import Effect, Persist
from quorumdb.core.keyspace import DEFAULT_KEYSPACE
from quorumdb.core.messages import Get, Message, Outcome, Put
from quorumdb.core.partitioning import partition_of
from quorumdb.core.records import decode_record
from quorumdb.sim import command
from quorumdb.sim.cluster import NodeClock, SimCluster, SimNode
from quorumdb.sim.events import EventLimitExceeded, EventQueue
from quorumdb.sim.faults import FAULT_KINDS, ParameterOverrides, parse_faults
from quorumdb.sim.network import LinkProfile, Network
from quorumdb.sim.simulation import Simulation
from quorumdb.sim.trace import Trace

DEFAULT_PARTITIONS = 64  # the default keyspace's `fixed:64`

SIM = pathlib.Path(__file__).resolve().parents[1] / "src" / "quorumdb" / "sim"


def simulate(seed: int, faults: tuple[str, ...] | None = None, **kwargs: int) -> Simulation:
    overrides = ParameterOverrides(faults=faults, **kwargs)
    simulation = Simulation.from_seed(seed, overrides)
    simulation.run()
    return simulation


def replay(seed: int, faults: str = "all") -> str:
    return f"replay: quorumdb sim --seed {seed} --faults {faults} --check --trace"


# --- the event queue ------------------------------------------------------------------------


def test_events_at_one_instant_run_in_scheduling_order() -> None:
    queue = EventQueue(max_steps=100)
    order: list[str] = []
    queue.schedule(5, lambda: order.append("b"))
    queue.schedule(3, lambda: order.append("a"))
    queue.schedule(5, lambda: order.append("c"))
    queue.schedule(9, lambda: order.append("late"))
    assert queue.run_until(6) is False
    assert order == ["a", "b", "c"]
    assert queue.now_ms == 6
    with pytest.raises(ValueError):
        queue.schedule(2, lambda: None)


def test_run_until_stops_on_the_predicate_and_the_step_limit() -> None:
    queue = EventQueue(max_steps=10)
    seen: list[int] = []
    for at_ms in range(5):
        queue.schedule(at_ms, functools.partial(seen.append, at_ms))
    assert queue.run_until(100, stop=lambda: len(seen) == 2) is True
    assert queue.now_ms == 1

    def forever() -> None:
        queue.schedule_in(1, forever)

    queue.schedule_in(1, forever)
    with pytest.raises(EventLimitExceeded):
        queue.run_until(1_000)


# --- the network ----------------------------------------------------------------------------


def make_network(
    seed: int = 0, loss: float = 0.0, duplicate: float = 0.0, jitter_ms_mean: float = 1.0
) -> tuple[EventQueue, Network, list[tuple[str, str, int]]]:
    queue = EventQueue(max_steps=100_000)
    node_ids = ["a", "b", "c"]
    profiles = {
        (source, destination): LinkProfile(2, jitter_ms_mean)
        for source in node_ids
        for destination in node_ids
        if source != destination
    }
    network = Network(queue, random.Random(seed), Trace(), profiles, loss, duplicate)
    arrived: list[tuple[str, str, int]] = []

    def deliver(source: str, destination: str, message: Message) -> None:
        assert isinstance(message, InstallSnapshotReply)
        arrived.append((source, destination, message.term))

    network.attach(deliver)
    return queue, network, arrived


def test_loss_drops_and_counts_messages() -> None:
    queue, network, arrived = make_network(loss=1.0)
    for number in range(20):
        network.send("a", "b", InstallSnapshotReply(number, 0))
    queue.run_until(1_000)
    assert arrived == []
    assert network.stats.dropped_by_loss == 20


def test_duplication_delivers_twice_and_counts() -> None:
    queue, network, arrived = make_network(duplicate=1.0)
    for number in range(20):
        network.send("a", "b", InstallSnapshotReply(number, 0))
    queue.run_until(1_000)
    assert sorted(number for _, _, number in arrived) == sorted(list(range(20)) * 2)
    assert network.stats.duplicated == 20


def test_jitter_reorders_and_a_seed_replays_the_same_order() -> None:
    orders = []
    for _ in range(2):
        queue, network, arrived = make_network(seed=11, jitter_ms_mean=20.0)
        for number in range(30):
            network.send("a", "b", InstallSnapshotReply(number, 0))
        queue.run_until(10_000)
        orders.append([number for _, _, number in arrived])
    assert orders[0] == orders[1]
    assert orders[0] != sorted(orders[0])


def test_a_partition_blocks_both_directions_until_healed() -> None:
    queue, network, arrived = make_network()
    cut_id = network.partition([["a"], ["b", "c"]])
    network.send("a", "b", InstallSnapshotReply(1, 0))
    network.send("c", "a", InstallSnapshotReply(2, 0))
    network.send("b", "c", InstallSnapshotReply(3, 0))
    queue.run_until(100)
    assert arrived == [("b", "c", 3)]
    assert network.stats.dropped_by_cut == 2
    network.heal(cut_id)
    network.send("a", "b", InstallSnapshotReply(4, 0))
    queue.run_until(200)
    assert arrived[-1] == ("a", "b", 4)


def test_a_one_way_partition_blocks_only_one_direction() -> None:
    queue, network, arrived = make_network()
    network.cut_one_way("a", "b")
    network.send("a", "b", InstallSnapshotReply(1, 0))
    network.send("b", "a", InstallSnapshotReply(2, 0))
    queue.run_until(100)
    assert arrived == [("b", "a", 2)]


def test_a_cut_drops_messages_already_in_flight() -> None:
    queue, network, arrived = make_network()
    network.send("a", "b", InstallSnapshotReply(1, 0))
    network.partition([["a"], ["b"]])
    queue.run_until(100)
    assert arrived == []
    assert network.stats.dropped_by_cut == 1


# --- the driver: persist-before-send, group commit, crash -----------------------------------


class Client:
    def __init__(self, queue: EventQueue) -> None:
        self.queue = queue
        self.replies: dict[int, tuple[int, Outcome]] = {}
        self.crashed: list[str] = []

    def on_reply(self, node_id: str, request_id: int, outcome: Outcome) -> None:
        assert request_id not in self.replies
        self.replies[request_id] = (self.queue.now_ms, outcome)

    def on_crash(self, node_id: str) -> None:
        self.crashed.append(node_id)


def make_cluster(
    node_count: int = 1, fsync_ms: int = 5, slow_links: tuple[tuple[str, str], ...] = ()
) -> tuple[EventQueue, SimCluster, Client]:
    """A cluster with 1 ms links (50 ms on `slow_links`) and negligible jitter."""
    queue = EventQueue(max_steps=100_000)
    rng = random.Random(0)
    trace = Trace()
    members = local_members(node_count, 7000)
    profiles = {
        (a.node_id, b.node_id): LinkProfile(50 if (a.node_id, b.node_id) in slow_links else 1, 0.01)
        for a in members
        for b in members
        if a != b
    }
    network = Network(queue, rng, trace, profiles)
    clocks = [NodeClock()] * node_count
    cluster = SimCluster(queue, rng, trace, network, members, clocks, (fsync_ms, fsync_ms))
    client = Client(queue)
    cluster.attach(client)
    return queue, cluster, client


def stored(sim_node: SimNode, key: bytes) -> bytes | None:
    raw = sim_node.disk.get(DEFAULT_KEYSPACE, partition_of(key, DEFAULT_PARTITIONS), key)
    return None if raw is None else decode_record(raw)[0]


def put(key: bytes, value: bytes) -> Put:
    return Put(DEFAULT_KEYSPACE, key, value)


def test_replies_wait_for_the_sync_and_one_sync_serves_the_instant() -> None:
    queue, cluster, client = make_cluster(fsync_ms=5)
    cluster.client_request("node0", 1, put(b"a", b"1"))
    cluster.client_request("node0", 2, put(b"b", b"2"))
    cluster.client_request("node0", 3, Get(DEFAULT_KEYSPACE, b"a"))
    assert client.replies == {}
    queue.run_until(50)
    assert {request_id: at_ms for request_id, (at_ms, _) in client.replies.items()} == {
        1: 5,
        2: 5,
        3: 5,  # it read an unsynced write, so it waits too
    }
    assert client.replies[3][1] == Outcome(b"1")
    assert cluster.stats.syncs == 1
    assert cluster.stats.persists == 2


def test_a_crash_loses_exactly_the_unsynced_writes_and_none_acknowledged() -> None:
    queue, cluster, client = make_cluster(fsync_ms=5)
    sim_node = cluster.nodes["node0"]
    cluster.client_request("node0", 1, put(b"a", b"1"))
    queue.run_until(10)
    assert client.replies[1][1] == Outcome(True)
    cluster.client_request("node0", 2, put(b"b", b"2"))
    cluster.client_request("node0", 3, put(b"a", b"3"))
    queue.run_until(12)
    assert stored(sim_node, b"b") == b"2"  # applied, visible, not durable
    cluster.crash("node0")
    assert client.crashed == ["node0"]
    assert stored(sim_node, b"a") == b"1"
    assert stored(sim_node, b"b") is None
    assert cluster.stats.writes_lost == 2
    queue.run_until(100)
    assert sorted(client.replies) == [1]
    cluster.restart("node0")
    cluster.client_request("node0", 4, Get(DEFAULT_KEYSPACE, b"a"))
    queue.run_until(200)
    assert client.replies[4][1] == Outcome(b"1")


def test_a_forward_to_a_down_node_fails_as_unavailable() -> None:
    queue, cluster, client = make_cluster(node_count=2)
    cluster.crash("node1")
    cluster.client_request("node0", 1, Get(DEFAULT_KEYSPACE, key_owned_by(1, 2)))
    queue.run_until(100)
    outcome = client.replies[1][1]
    assert outcome.error is not None and outcome.error.value == "unavailable"
    assert cluster.stats.refused == 1


def key_owned_by(owner_index: int, node_count: int) -> bytes:
    """A key whose partition the round-robin assignment gives to node<owner_index>."""
    return next(
        key
        for key in (f"k{index}".encode() for index in range(1_000))
        if partition_of(key, DEFAULT_PARTITIONS) % node_count == owner_index
    )


def test_a_reply_to_a_previous_life_does_not_answer_a_new_request() -> None:
    """node0 forwards a put to node1, crashes and restarts, then forwards a get to node2.

    node1's late answer to the old forward#1 reaches the new node0, whose fresh
    forward#1 is the get; the reply carries the old incarnation, so it must be ignored.
    Seen first as a `mismatched-reply` in the swarm.
    """
    slow = (("node1", "node0"), ("node2", "node0"))
    queue, cluster, client = make_cluster(node_count=3, slow_links=slow)
    cluster.client_request("node0", 1, put(key_owned_by(1, 3), b"v"))
    queue.run_until(10)
    cluster.crash("node0")
    cluster.restart("node0")
    cluster.client_request("node0", 2, Get(DEFAULT_KEYSPACE, key_owned_by(2, 3)))
    queue.run_until(200)
    answer = client.replies[2][1]
    assert answer.value is None or isinstance(answer.value, bytes), answer


def test_each_node_sees_its_own_skewed_clock() -> None:
    clock = NodeClock(offset_ms=-250, drift_ppm=1_000)
    assert clock.local_ms(1_000_000) - clock.local_ms(0) == 1_001_000
    simulation = Simulation.from_seed(4, ParameterOverrides(node_count=5, faults=("skew",)))
    seen = {sim_node.clock.local_ms(10_000) for sim_node in simulation.cluster.nodes.values()}
    assert len(seen) == 5


# --- whole runs -----------------------------------------------------------------------------


def test_a_seed_replays_to_the_same_digest_and_history() -> None:
    digests = []
    for seed in range(1, 11):
        first, second = simulate(seed), simulate(seed)
        assert first.digest() == second.digest(), f"non-deterministic: seed {seed}"
        assert first.workload.history == second.workload.history, f"seed {seed}"
        digests.append(first.digest())
    assert len(set(digests)) == len(digests)


def test_overrides_replay_too() -> None:
    first = simulate(3, parse_faults("all"), node_count=4, operation_count=50)
    second = simulate(3, parse_faults("all"), node_count=4, operation_count=50)
    assert first.digest() == second.digest()
    assert first.parameters.node_count == 4
    assert first.workload.issued_count == 50


@pytest.mark.parametrize(
    ("fault", "counter"),
    [
        ("loss", lambda s: s.network.stats.dropped_by_loss),
        ("duplicate", lambda s: s.network.stats.duplicated),
        ("partition", lambda s: s.nemesis.stats.partitions),
        ("partition", lambda s: s.network.stats.dropped_by_cut),
        ("one-way", lambda s: s.nemesis.stats.one_way_partitions),
        ("one-way", lambda s: s.network.stats.dropped_by_cut),
        ("crash", lambda s: s.cluster.stats.crashes),
        ("crash", lambda s: s.cluster.stats.writes_lost),
    ],
)
def test_each_enabled_fault_happens(fault: str, counter: object) -> None:
    assert callable(counter)
    runs = [simulate(seed, (fault,), node_count=3) for seed in (1, 2, 3)]
    assert sum(counter(run) for run in runs) > 0
    for run in runs:
        assert run.check() == [], replay(run.parameters.seed, fault)
        if fault == "crash":
            assert run.cluster.stats.restarts == run.cluster.stats.crashes
            assert run.cluster.down_node_ids() == []


def test_without_faults_nothing_is_lost_and_every_operation_succeeds() -> None:
    run = simulate(5, (), node_count=4)
    assert run.network.stats.dropped == 0
    assert run.network.stats.duplicated == 0
    assert run.cluster.stats.crashes == 0
    assert run.workload.outcome_counts["info"] == 0
    assert run.workload.outcome_counts["fail"] == 0
    assert run.check() == [], replay(5, "none")


@pytest.mark.parametrize("seed", range(100, 130))
def test_no_acknowledged_write_is_lost_under_all_faults(seed: int) -> None:
    run = simulate(seed, FAULT_KINDS)
    violations = run.check()
    assert violations == [], f"seed {seed}: {violations}\n{replay(seed)}"
    assert run.phase_times is not None
    assert run.workload.final_reads_finished


def test_the_checker_catches_a_driver_that_replies_before_syncing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mutation test: break persist-before-send and the simulator must notice."""

    def reckless(self: SimCluster, sim_node: SimNode, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Persist):
                self._persist(sim_node, effect)
            else:
                self._emit(sim_node, effect)

    monkeypatch.setattr(SimCluster, "_carry_out", reckless)
    found = [seed for seed in range(1, 41) if simulate(seed, ("crash",), node_count=2).check()]
    assert found, "40 seeds replying before the sync never lost an acknowledged write"


# --- the command ----------------------------------------------------------------------------


def test_the_command_prints_parameters_digest_and_violations(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    history = tmp_path / "history.jsonl"
    status = command.main(["--seed", "7", "--check", "--history", str(history)])
    output = capsys.readouterr().out
    assert status == 0, output
    assert output.startswith("seed: 7\n")
    assert "trace-digest: " in output
    assert output.rstrip().endswith("violations: 0")
    events = load_history(history)
    assert events and events[0].type == "invoke"


def test_the_command_runs_seed_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    status = command.main(["--seeds", "1..3", "--faults", "crash,loss", "--check"])
    output = capsys.readouterr().out
    assert status == 0, output
    assert [line.split(":")[0] for line in output.splitlines()[:3]] == [
        "seed 1",
        "seed 2",
        "seed 3",
    ]
    assert "seeds: 3 run, 0 with violations" in output
    assert output.rstrip().endswith("violations: 0")


def test_the_command_prints_the_trace_of_a_replay(capsys: pytest.CaptureFixture[str]) -> None:
    assert command.main(["--seed", "2", "--nodes", "2", "--operations", "20", "--trace"]) == 0
    output = capsys.readouterr().out
    assert "trace: " in output
    assert "violations:" not in output
    digest = output.split("trace-digest: ")[1].split()[0]
    assert digest == simulate(2, None, node_count=2, operation_count=20).digest()


def test_the_command_rejects_unknown_faults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        command.main(["--faults", "loss,meteor"])
    assert "meteor" in capsys.readouterr().err


# --- replayability rules --------------------------------------------------------------------


def test_sim_uses_neither_wall_clocks_nor_asyncio_nor_global_random() -> None:
    offences = []
    for path in sorted(SIM.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names]
                module = node.module if isinstance(node, ast.ImportFrom) else None
                for name in [module or "", *names]:
                    if name.split(".")[0] in {"time", "asyncio", "datetime", "uuid", "secrets"}:
                        offences.append(f"{path.name} imports {name}")
                if module == "random":
                    offences.append(f"{path.name} imports from random")
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "random"
                and node.attr != "Random"
            ):
                offences.append(f"{path.name} uses random.{node.attr}")
    assert offences == []


def test_digest_does_not_depend_on_string_hashing() -> None:
    """In-process reruns share one hash seed; separate processes catch set-order leaks."""
    digests = set()
    for hash_seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-m", "quorumdb.sim.command", "--seed", "3", "--faults", "all"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        digests.add(result.stdout.split("trace-digest: ")[1].split()[0])
    assert len(digests) == 1
