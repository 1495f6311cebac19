"""SWIM membership in the simulator: properties over seeded runs, many members at once.

Every randomized test prints its seed and the command that replays it; runs are
deterministic, so a failing seed fails the same way forever.
"""

from __future__ import annotations

import random

import pytest

from quorumdb.core.membership import MemberChanged, MembershipConfig, MemberState
from quorumdb.sim.membership_sim import (
    MembershipCluster,
    NetworkModel,
    RunParameters,
    node_name,
    run,
)


def replay(test: str, seed: int) -> str:
    return (
        f"seed {seed}; replay: PYTHONPATH=src pytest 'tests/test_membership_sim.py::{test}[{seed}]'"
    )


class DownLog:
    """Every `down` any member declares, with who and when."""

    def __init__(self, cluster: MembershipCluster) -> None:
        self.downs: list[tuple[int, str, str]] = []
        self.lefts: list[tuple[int, str, str]] = []
        cluster.observers.append(self.observe)

    def observe(self, now_ms: int, observer: str, change: MemberChanged) -> None:
        if change.state is MemberState.DOWN:
            self.downs.append((now_ms, observer, change.node_id))
        elif change.state is MemberState.LEFT:
            self.lefts.append((now_ms, observer, change.node_id))

    def downed(self) -> set[str]:
        return {node_id for _, _, node_id in self.downs}


@pytest.mark.parametrize("seed", range(1, 7))
def test_without_loss_every_crash_is_detected_by_all_and_no_live_member_ever_is(seed: int) -> None:
    print(
        replay("test_without_loss_every_crash_is_detected_by_all_and_no_live_member_ever_is", seed)
    )
    rng = random.Random(seed)
    node_count = rng.randint(5, 40)
    required_sources = rng.choice((1, 2))
    crash_count = rng.randint(1, 3)
    print(f"members {node_count}, required_sources {required_sources}, crashes {crash_count}")
    cluster = MembershipCluster(
        seed, node_count, NetworkModel(), MembershipConfig(required_sources=required_sources)
    )
    log = DownLog(cluster)
    cluster.start_converged()
    crashed = rng.sample(cluster.node_ids, crash_count)
    for node_id in crashed:
        cluster.run_until(cluster.now_ms + rng.randint(0, 10_000))
        cluster.crash(node_id)
    cluster.run_until(cluster.now_ms + 60_000)
    assert log.downed() <= set(crashed), f"live members declared down: {log.downs}"
    for observer in cluster.live_node_ids():
        for node_id in crashed:
            view = cluster.nodes[observer].member(node_id)
            assert view is not None and view.state is MemberState.DOWN, (observer, node_id)


def lossy_outbound_run(required_sources: int, seed: int) -> tuple[DownLog, str]:
    cluster = MembershipCluster(
        seed, 10, NetworkModel(), MembershipConfig(required_sources=required_sources)
    )
    lossy = node_name(0)
    cluster.outbound_loss[lossy] = 0.9
    log = DownLog(cluster)
    cluster.start_converged()
    cluster.run_until(120_000)
    return log, lossy


@pytest.mark.parametrize("seed", range(1, 4))
def test_a_member_with_a_lossy_outbound_link_alone_cannot_get_a_healthy_one_declared_down(
    seed: int,
) -> None:
    print(
        replay(
            "test_a_member_with_a_lossy_outbound_link_alone_cannot_get_a_healthy_one_declared_down",
            seed,
        )
    )
    log, lossy = lossy_outbound_run(required_sources=2, seed=seed)
    wrongly_downed = log.downed() - {lossy}
    assert wrongly_downed == set(), log.downs
    # The lossy member itself is rightly declared down by the others: it cannot answer.
    assert lossy in log.downed()
    # With one source, the same member alone does get healthy members declared down.
    plain_log, _ = lossy_outbound_run(required_sources=1, seed=seed)
    plain_wrongly_downed = {node_id for _, observer, node_id in plain_log.downs if node_id != lossy}
    assert plain_wrongly_downed, "with one source the lossy member should mislead itself"


def test_a_seed_replays_the_same_run_and_another_seed_does_not() -> None:
    parameters = RunParameters(
        seed=5,
        node_count=30,
        loss_probability=0.2,
        required_sources=2,
        duration_ms=30_000,
        crash_at_ms=5_000,
    )
    first, second = run(parameters), run(parameters)
    assert first.digest == second.digest
    assert first == second
    other = run(
        RunParameters(
            seed=6,
            node_count=30,
            loss_probability=0.2,
            required_sources=2,
            duration_ms=30_000,
            crash_at_ms=5_000,
        )
    )
    assert other.digest != first.digest


@pytest.mark.parametrize("seed", range(1, 4))
def test_members_joining_through_seeds_all_come_to_know_each_other(seed: int) -> None:
    print(replay("test_members_joining_through_seeds_all_come_to_know_each_other", seed))
    rng = random.Random(seed)
    node_count = 30
    cluster = MembershipCluster(
        seed, node_count, NetworkModel(loss_probability=0.05), MembershipConfig()
    )
    log = DownLog(cluster)
    first, second, *others = cluster.node_ids
    cluster.start_joining(first, [])
    cluster.start_joining(second, [first])
    for node_id in others:
        cluster.run_until(cluster.now_ms + rng.randint(0, 500))
        cluster.start_joining(node_id, [first, second])
    cluster.run_until(cluster.now_ms + 60_000)
    for observer in cluster.node_ids:
        view = cluster.nodes[observer].members()
        assert len(view) == node_count, observer
        assert {update.state for update in view} == {MemberState.ALIVE}, observer
    assert log.downs == []


@pytest.mark.parametrize("seed", range(1, 4))
def test_a_piggybacked_fact_reaches_every_member(seed: int) -> None:
    print(replay("test_a_piggybacked_fact_reaches_every_member", seed))
    cluster = MembershipCluster(seed, 100, NetworkModel(loss_probability=0.05), MembershipConfig())
    cluster.start_converged()
    cluster.run_until(2_000)
    origin = cluster.node_ids[random.Random(seed).randrange(100)]
    cluster.nodes[origin].set_piggyback("partition-map", 7, b"map-7")
    cluster.run_until(30_000)
    for node_id in cluster.node_ids:
        fact = cluster.nodes[node_id].facts().get("partition-map")
        assert fact is not None and fact.version == 7, node_id
    learned = [node_id for node_id, facts in cluster.facts_learned.items() if facts]
    assert len(learned) == 99


@pytest.mark.parametrize("seed", range(1, 3))
def test_a_leave_and_a_decommission_spread_as_left_never_as_down(seed: int) -> None:
    print(replay("test_a_leave_and_a_decommission_spread_as_left_never_as_down", seed))
    cluster = MembershipCluster(seed, 40, NetworkModel(loss_probability=0.05), MembershipConfig())
    log = DownLog(cluster)
    cluster.start_converged()
    cluster.run_until(3_000)
    leaver, removed, operator = cluster.node_ids[3], cluster.node_ids[7], cluster.node_ids[0]
    cluster.act(leaver, lambda member: member.leave(cluster.now_ms))
    cluster.act(operator, lambda member: member.decommission(cluster.now_ms, removed))
    cluster.run_until(40_000)
    assert cluster.nodes[leaver].removed and cluster.nodes[removed].removed
    for observer in cluster.live_node_ids():
        for node_id in (leaver, removed):
            view = cluster.nodes[observer].member(node_id)
            assert view is not None and view.state is MemberState.LEFT, (observer, node_id)
    assert log.downs == []


@pytest.mark.parametrize("seed", range(1, 4))
def test_after_a_partition_heals_both_sides_come_back_alive(seed: int) -> None:
    print(replay("test_after_a_partition_heals_both_sides_come_back_alive", seed))
    cluster = MembershipCluster(seed, 12, NetworkModel(loss_probability=0.05), MembershipConfig())
    log = DownLog(cluster)
    cluster.start_converged()
    cluster.run_until(2_000)
    left_side, right_side = cluster.node_ids[:6], cluster.node_ids[6:]
    cluster.partition([left_side, right_side])
    cluster.run_until(40_000)
    # Each side has declared the whole other side down ...
    for observer in left_side:
        assert {cluster.nodes[observer].member(other).state for other in right_side} == {
            MemberState.DOWN
        }, observer
    assert log.downed() == set(cluster.node_ids)
    cluster.heal()
    cluster.run_until(100_000)
    # ... and after healing nobody is held down any more.
    for observer in cluster.node_ids:
        states = {update.state for update in cluster.nodes[observer].members()}
        assert states == {MemberState.ALIVE}, (observer, cluster.nodes[observer].members())


def test_no_member_is_ever_held_down_on_fewer_sources_than_required() -> None:
    """The two-sources rule as an invariant, checked on every view every second."""
    seed = 11
    print(replay("test_no_member_is_ever_held_down_on_fewer_sources_than_required", seed))
    config = MembershipConfig(required_sources=2)
    cluster = MembershipCluster(seed, 20, NetworkModel(loss_probability=0.2), config)
    cluster.outbound_loss[node_name(0)] = 0.9
    log = DownLog(cluster)
    cluster.start_converged()
    cluster.crash(node_name(5))
    for second in range(1, 121):
        cluster.run_until(second * 1000)
        for observer in cluster.live_node_ids():
            for update in cluster.nodes[observer].members():
                if update.state is MemberState.DOWN:
                    assert len(set(update.suspecters)) >= 2, (observer, update)
    assert node_name(5) in log.downed()  # the check saw downs, not an idle cluster
