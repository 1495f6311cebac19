"""SWIM member, one protocol step at a time: messages are delivered by hand, so each test
decides exactly which ones are lost and when time passes."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from quorumdb.core.membership import (
    Ack,
    Fact,
    FactLearned,
    Gossip,
    Join,
    MemberChanged,
    Membership,
    MembershipConfig,
    MembershipEffect,
    MembershipMessage,
    MemberState,
    MemberUpdate,
    Nack,
    Phase,
    Ping,
    PingRequest,
    Send,
    SendToAddress,
)
from quorumdb.core.membership.gossip_buffer import GossipBuffer
from quorumdb.core.membership.member_state import precedence

CONFIG = MembershipConfig()
INTERVAL_MS = CONFIG.probe_interval_ms
TIMEOUT_MS = CONFIG.probe_timeout_ms

Drop = Callable[[str, str, MembershipMessage], bool]


def address(node_id: str) -> str:
    return f"test://{node_id}"


class Wire:
    """Members and the messages between them, delivered only when a test says so."""

    def __init__(self, node_ids: list[str], config: MembershipConfig = CONFIG) -> None:
        self.members = {
            node_id: Membership(node_id, address(node_id), config, random.Random(index))
            for index, node_id in enumerate(node_ids)
        }
        self.in_flight: list[tuple[str, str, MembershipMessage]] = []
        self.events: list[tuple[str, MembershipEffect]] = []
        self.crashed: set[str] = set()

    def start_formed(self, now_ms: int = 0) -> None:
        for node_id, member in self.members.items():
            others = [
                MemberUpdate(other, address(other), MemberState.ALIVE, 0)
                for other in self.members
                if other != node_id
            ]
            self.take(node_id, member.join(now_ms, (), others))

    def take(self, source: str, effects: list[MembershipEffect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self.in_flight.append((source, effect.destination, effect.message))
            elif isinstance(effect, SendToAddress):
                destination = effect.address.removeprefix("test://")
                self.in_flight.append((source, destination, effect.message))
            else:
                self.events.append((source, effect))

    def tick(self, node_id: str, now_ms: int) -> None:
        self.take(node_id, self.members[node_id].on_tick(now_ms))

    def deliver(self, now_ms: int, drop: Drop = lambda *_: False, rounds_max: int = 20) -> None:
        """Deliver everything in flight, and what that causes, instantly, in order."""
        for _ in range(rounds_max):
            batch, self.in_flight = self.in_flight, []
            if not batch:
                return
            for source, destination, message in batch:
                if destination in self.crashed or drop(source, destination, message):
                    continue
                effects = self.members[destination].on_message(now_ms, source, message)
                self.take(destination, effects)
        raise AssertionError("messages still flowing after the round limit")

    def state(self, observer: str, node_id: str) -> MemberState:
        update = self.members[observer].member(node_id)
        assert update is not None
        return update.state

    def probe_from(self, prober: str, target: str, start_ms: int, drop: Drop) -> int:
        """Run one full protocol period of `prober` against `target`; returns its end."""
        member = self.members[prober]
        member._probe_order.reshuffle([target])  # white-box: pick the target of this period
        member._next_probe_ms = start_ms
        self.tick(prober, start_ms)
        self.deliver(start_ms, drop)
        self.tick(prober, start_ms + TIMEOUT_MS)
        self.deliver(start_ms + TIMEOUT_MS, drop)
        for node_id in self.members:
            if node_id != prober and node_id not in self.crashed:
                self.tick(node_id, start_ms + 2 * TIMEOUT_MS)
        self.deliver(start_ms + 2 * TIMEOUT_MS, drop)
        end_ms = start_ms + INTERVAL_MS
        effects: list[MembershipEffect] = []
        member._conclude_probe(end_ms, effects)  # white-box: conclude, start no other probe
        self.take(prober, effects)
        return end_ms


def changes(wire: Wire, observer: str, node_id: str) -> list[MemberState]:
    return [
        effect.state
        for source, effect in wire.events
        if source == observer and isinstance(effect, MemberChanged) and effect.node_id == node_id
    ]


def nothing_dropped(*_: object) -> bool:
    return False


# --- probe, ack, indirect probe ------------------------------------------------------------


def test_a_probe_is_answered_by_an_ack_and_nothing_is_suspected() -> None:
    wire = Wire(["a", "b"])
    wire.start_formed()
    wire.probe_from("a", "b", 1000, nothing_dropped)
    assert wire.members["a"].statistics.probes_sent == 1
    assert wire.members["a"].statistics.probes_failed == 0
    assert wire.state("a", "b") is MemberState.ALIVE


def test_the_first_probe_pings_a_member_and_the_ack_names_the_responder() -> None:
    wire = Wire(["a", "b"])
    wire.start_formed()
    wakeup_ms = wire.members["a"].next_wakeup_ms()
    assert wakeup_ms is not None and 0 <= wakeup_ms < INTERVAL_MS
    wire.tick("a", wakeup_ms)
    [(source, destination, ping)] = wire.in_flight
    assert (source, destination) == ("a", "b")
    assert isinstance(ping, Ping)
    wire.in_flight.clear()
    effects = wire.members["b"].on_message(wakeup_ms, "a", ping)
    [ack] = [effect.message for effect in effects if isinstance(effect, Send)]
    assert isinstance(ack, Ack)
    assert (ack.sequence, ack.responder) == (ping.sequence, "b")


def test_a_lost_direct_probe_is_rescued_by_an_indirect_probe() -> None:
    wire = Wire(["a", "b", "c"])
    wire.start_formed()

    def drop_a_to_b(source: str, destination: str, message: MembershipMessage) -> bool:
        return (source, destination) == ("a", "b")

    wire.probe_from("a", "b", 1000, drop_a_to_b)
    assert wire.members["a"].statistics.indirect_requests_sent == 1
    assert wire.members["a"].statistics.probes_failed == 0
    assert wire.state("a", "b") is MemberState.ALIVE


def test_an_unreachable_member_is_suspected_by_the_prober_and_every_nacking_intermediary() -> None:
    wire = Wire(["a", "b", "c", "d"])
    wire.start_formed()
    wire.crashed.add("b")
    wire.probe_from("a", "b", 1000, nothing_dropped)
    assert wire.members["c"].statistics.nacks_sent == 1
    assert wire.members["d"].statistics.nacks_sent == 1
    suspicion = wire.members["a"].member("b")
    assert suspicion is not None
    assert suspicion.state is MemberState.SUSPECT
    assert set(suspicion.suspecters) <= {"a", "c", "d"}
    assert len(suspicion.suspecters) == CONFIG.required_sources


def test_a_ping_request_for_an_unknown_target_is_ignored() -> None:
    wire = Wire(["a", "b"])
    wire.start_formed()
    effects = wire.members["b"].on_message(0, "a", PingRequest(7, "stranger", address("a"), 0))
    assert [effect for effect in effects if isinstance(effect, Send)] == []


# --- suspicion, sources, down --------------------------------------------------------------


def suspect_alone(required_sources: int) -> tuple[Wire, int]:
    """`a` suspects crashed `b` on its own: the intermediary's nack is lost."""
    wire = Wire(["a", "b", "c"], MembershipConfig(required_sources=required_sources))
    wire.start_formed()
    wire.crashed.add("b")

    def drop_nacks(source: str, destination: str, message: MembershipMessage) -> bool:
        return isinstance(message, Nack)

    end_ms = wire.probe_from("a", "b", 1000, drop_nacks)
    suspicion = wire.members["a"].member("b")
    assert suspicion is not None and suspicion.suspecters == ("a",)
    return wire, end_ms


def test_with_one_source_required_a_lone_suspicion_becomes_down_after_the_timeout() -> None:
    wire, end_ms = suspect_alone(required_sources=1)
    timeout_ms = CONFIG.suspicion_timeout_ms(3)
    wire.tick("a", end_ms + timeout_ms - 1)
    assert wire.state("a", "b") is MemberState.SUSPECT
    wire.tick("a", end_ms + timeout_ms)
    assert wire.state("a", "b") is MemberState.DOWN
    assert changes(wire, "a", "b") == [MemberState.SUSPECT, MemberState.DOWN]


def test_with_two_sources_required_a_lone_suspicion_never_becomes_down() -> None:
    wire, end_ms = suspect_alone(required_sources=2)
    wire.tick("a", end_ms + 100 * INTERVAL_MS)
    assert wire.state("a", "b") is MemberState.SUSPECT
    assert wire.members["a"].statistics.down_declared == 0


def test_a_second_source_after_the_timeout_turns_the_suspicion_into_down_at_once() -> None:
    wire, end_ms = suspect_alone(required_sources=2)
    later_ms = end_ms + CONFIG.suspicion_timeout_ms(3) + 5000
    wire.tick("a", later_ms)
    second = MemberUpdate("b", address("b"), MemberState.SUSPECT, 0, ("c",))
    wire.take("a", wire.members["a"].on_message(later_ms, "c", Gossip(address("c"), 0, (second,))))
    assert wire.state("a", "b") is MemberState.DOWN
    down = wire.members["a"].member("b")
    assert down is not None and down.suspecters == ("a", "c")


def test_two_sources_before_the_timeout_still_wait_for_the_timeout() -> None:
    wire = Wire(["a", "b", "c"])
    wire.start_formed()
    wire.crashed.add("b")
    end_ms = wire.probe_from("a", "b", 1000, nothing_dropped)
    assert wire.state("a", "b") is MemberState.SUSPECT
    wire.tick("a", end_ms + CONFIG.suspicion_timeout_ms(3) - 1)
    assert wire.state("a", "b") is MemberState.SUSPECT
    wire.tick("a", end_ms + CONFIG.suspicion_timeout_ms(3))
    assert wire.state("a", "b") is MemberState.DOWN


def test_a_down_update_with_too_few_sources_is_only_a_suspicion() -> None:
    wire = Wire(["a", "b", "c"])
    wire.start_formed()
    rumour = MemberUpdate("b", address("b"), MemberState.DOWN, 0, ("c",))
    wire.members["a"].on_message(0, "c", Gossip(address("c"), 0, (rumour,)))
    assert wire.state("a", "b") is MemberState.SUSPECT
    confirmed = MemberUpdate("b", address("b"), MemberState.DOWN, 0, ("c", "d"))
    wire.members["a"].on_message(0, "c", Gossip(address("c"), 0, (confirmed,)))
    assert wire.state("a", "b") is MemberState.DOWN


# --- refutation ----------------------------------------------------------------------------


def test_a_suspected_member_refutes_with_a_higher_incarnation() -> None:
    wire = Wire(["a", "b", "c"])
    wire.start_formed()
    suspicion = MemberUpdate("b", address("b"), MemberState.SUSPECT, 0, ("a", "c"))
    wire.members["a"].on_message(0, "c", Gossip(address("c"), 0, (suspicion,)))
    assert wire.state("a", "b") is MemberState.SUSPECT
    wire.take("b", wire.members["b"].on_message(0, "c", Gossip(address("c"), 0, (suspicion,))))
    assert wire.members["b"].incarnation == 1
    assert wire.members["b"].statistics.refutations == 1
    # Any message from b now carries its incarnation 1: first-hand proof it is alive.
    wire.probe_from("b", "a", 1000, nothing_dropped)
    refuted = wire.members["a"].member("b")
    assert refuted is not None
    assert (refuted.state, refuted.incarnation, refuted.suspecters) == (MemberState.ALIVE, 1, ())


def test_a_wrongly_downed_member_learns_it_when_it_talks_and_comes_back() -> None:
    wire = Wire(["a", "b", "c"])
    wire.start_formed()
    wrong = MemberUpdate("b", address("b"), MemberState.DOWN, 0, ("a", "c"))
    wire.members["a"].on_message(0, "c", Gossip(address("c"), 0, (wrong,)))
    assert wire.state("a", "b") is MemberState.DOWN
    # b probes a; a's ack tells b first what a thinks of it; b refutes on its next message.
    wire.probe_from("b", "a", 1000, nothing_dropped)
    assert wire.members["b"].incarnation == 1
    wire.probe_from("b", "a", 2000, nothing_dropped)
    assert wire.state("a", "b") is MemberState.ALIVE


def test_precedence_orders_incarnation_then_state() -> None:
    alive, suspect, down, left = (
        MemberState.ALIVE,
        MemberState.SUSPECT,
        MemberState.DOWN,
        MemberState.LEFT,
    )
    assert precedence(suspect, 3) > precedence(alive, 3)
    assert precedence(alive, 4) > precedence(suspect, 3)
    assert precedence(down, 3) > precedence(suspect, 3)
    assert precedence(alive, 4) > precedence(down, 3)
    assert precedence(left, 3) > precedence(down, 3)
    assert precedence(alive, 3) < precedence(left, 3)


# --- join, leave, decommission -------------------------------------------------------------


def test_joining_through_a_seed_learns_the_members_and_the_seed_spreads_the_arrival() -> None:
    wire = Wire(["a", "b", "c"])
    wire.take("a", wire.members["a"].join(0, [address("a")]))
    assert wire.members["a"].phase is Phase.ACTIVE  # its own address only: first of a cluster
    wire.take("b", wire.members["b"].join(0, [address("a")]))
    assert wire.members["b"].phase is Phase.JOINING
    [(_, destination, join)] = wire.in_flight
    assert destination == "a" and isinstance(join, Join)
    wire.deliver(0)
    assert wire.members["b"].phase is Phase.ACTIVE
    assert wire.state("a", "b") is MemberState.ALIVE
    wire.take("c", wire.members["c"].join(10, [address("a")]))
    wire.deliver(10)
    assert wire.state("c", "b") is MemberState.ALIVE  # from the seed's reply
    assert wire.members["b"].member("c") is None
    # The seed gossips c's arrival on its next probe, which here goes to b.
    wire.probe_from("a", "b", 1000, nothing_dropped)
    assert wire.state("b", "c") is MemberState.ALIVE
    # b's transport learned c's address from the event.
    [event] = [
        effect
        for source, effect in wire.events
        if source == "b" and isinstance(effect, MemberChanged) and effect.node_id == "c"
    ]
    assert event.address == address("c")


def test_a_join_is_retried_until_a_seed_answers() -> None:
    wire = Wire(["a", "b"])
    wire.take("a", wire.members["a"].join(0, []))
    wire.take("b", wire.members["b"].join(0, [address("a")]))
    wire.in_flight.clear()  # the first join is lost
    retry_ms = CONFIG.join_retry_interval_ms
    assert wire.members["b"].next_wakeup_ms() is not None
    wire.tick("b", retry_ms - 1)
    assert not any(isinstance(message, Join) for _, _, message in wire.in_flight)
    wire.tick("b", retry_ms)
    wire.deliver(retry_ms)
    assert wire.members["b"].phase is Phase.ACTIVE
    assert wire.state("b", "a") is MemberState.ALIVE


def test_leaving_spreads_left_not_a_failure_and_the_member_goes_quiet() -> None:
    wire = Wire(["a", "b", "c"])
    wire.start_formed()
    wire.take("b", wire.members["b"].leave(500))
    assert wire.members["b"].removed
    wire.deliver(500)
    assert wire.state("a", "b") is MemberState.LEFT
    assert wire.state("c", "b") is MemberState.LEFT
    assert wire.members["b"].on_tick(10_000) == []
    assert wire.members["b"].next_wakeup_ms() is None
    assert MemberState.DOWN not in changes(wire, "a", "b")


def test_a_left_member_answers_a_probe_with_its_departure() -> None:
    wire = Wire(["a", "b"])
    wire.start_formed()
    wire.members["b"].leave(0)
    effects = wire.members["b"].on_message(1, "a", Ping(1, address("a"), 0))
    [send] = effects
    assert isinstance(send, Send) and isinstance(send.message, Gossip)
    assert send.message.updates[0].state is MemberState.LEFT


def test_decommission_removes_a_member_everywhere_and_it_learns_it_was_removed() -> None:
    wire = Wire(["a", "b", "c", "d"])
    wire.start_formed()
    wire.take("a", wire.members["a"].decommission(100, "c"))
    wire.deliver(100)
    for observer in ("a", "b", "d"):
        assert wire.state(observer, "c") is MemberState.LEFT
    assert wire.members["c"].removed
    assert ("c", MemberChanged("c", address("c"), MemberState.LEFT, 1)) in wire.events
    # A removed member does not refute: no alive at a higher incarnation comes back.
    wire.tick("c", 5000)
    assert wire.in_flight == []


def test_decommission_outranks_the_members_own_alive() -> None:
    wire = Wire(["a", "b", "c"])
    wire.start_formed()
    wire.members["a"].decommission(0, "c")
    alive = MemberUpdate("c", address("c"), MemberState.ALIVE, 0)
    wire.members["a"].on_message(1, "b", Gossip(address("b"), 0, (alive,)))
    assert wire.state("a", "c") is MemberState.LEFT
    with pytest.raises(ValueError):
        wire.members["a"].decommission(0, "nobody")


# --- piggy-backed facts --------------------------------------------------------------------


def test_a_piggybacked_fact_rides_on_probes_and_only_newer_versions_replace_it() -> None:
    wire = Wire(["a", "b"])
    wire.start_formed()
    wire.members["a"].set_piggyback("partition-map", 3, b"v3")
    wire.probe_from("a", "b", 1000, nothing_dropped)
    assert wire.members["b"].facts() == {"partition-map": Fact("partition-map", 3, b"v3")}
    assert ("b", FactLearned("partition-map", 3, b"v3")) in wire.events
    wire.members["a"].set_piggyback("partition-map", 2, b"old")
    assert wire.members["a"].facts()["partition-map"].version == 3
    wire.members["b"].set_piggyback("partition-map", 4, b"v4")
    wire.probe_from("b", "a", 2000, nothing_dropped)
    assert wire.members["a"].facts()["partition-map"].payload == b"v4"


# --- the gossip buffer ---------------------------------------------------------------------


def test_the_gossip_buffer_sends_least_sent_newest_first_and_retires_after_the_limit() -> None:
    buffer: GossipBuffer[str, str] = GossipBuffer(size_max=8)
    buffer.add("x", "x1")
    buffer.add("y", "y1")
    assert buffer.take(1, send_limit=2) == ["y1"]
    assert buffer.take(1, send_limit=2) == ["x1"]
    buffer.add("z", "z1")
    assert buffer.take(3, send_limit=2) == ["z1", "x1", "y1"]
    assert len(buffer) == 1 and "z" in buffer  # x and y reached the limit
    buffer.add("z", "z2")  # a newer update replaces the old one and starts from zero sends
    assert buffer.send_count("z") == 0
    assert buffer.take(5, send_limit=2) == ["z2"]


def test_the_gossip_buffer_is_bounded_and_drops_the_most_sent() -> None:
    buffer: GossipBuffer[int, int] = GossipBuffer(size_max=3)
    for key in range(3):
        buffer.add(key, key)
    buffer.take(1, send_limit=10)  # sends 2 once
    buffer.add(3, 3)
    assert len(buffer) == 3
    assert 2 not in buffer


def test_limits_scale_with_the_cluster_and_bad_settings_are_refused() -> None:
    assert CONFIG.retransmit_limit(10) == 8
    assert CONFIG.retransmit_limit(1000) == 16
    assert CONFIG.suspicion_timeout_ms(10) == 4000
    assert CONFIG.suspicion_timeout_ms(1000) == 12000
    with pytest.raises(AssertionError):
        MembershipConfig(required_sources=0)
    with pytest.raises(AssertionError):
        MembershipConfig(probe_interval_ms=1000, probe_timeout_ms=400)


def test_a_suspicion_without_any_source_is_ignored_as_invalid() -> None:
    wire = Wire(["a", "b"])
    wire.start_formed()
    sourceless = MemberUpdate("b", address("b"), MemberState.SUSPECT, 0, ())
    wire.members["a"].on_message(0, "b", Gossip(address("b"), 0, (sourceless,)))
    assert wire.state("a", "b") is MemberState.ALIVE
    assert wire.members["a"].statistics.invalid_updates_ignored == 1
