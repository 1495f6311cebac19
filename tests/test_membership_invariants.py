"""Arbitrary message sequences against one member: it never raises, never holds anyone
down on fewer sources than required, and its own incarnation never goes back."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from quorumdb.core.membership import (
    Ack,
    Fact,
    Gossip,
    Join,
    JoinReply,
    Membership,
    MembershipConfig,
    MembershipMessage,
    MemberState,
    MemberUpdate,
    Nack,
    Ping,
    PingRequest,
)

NODES = ["a", "b", "c", "d", "e"]

updates = st.builds(
    MemberUpdate,
    node_id=st.sampled_from(NODES),
    address=st.sampled_from(["x://1", "x://2"]),
    state=st.sampled_from(list(MemberState)),
    incarnation=st.integers(0, 4),
    suspecters=st.lists(st.sampled_from(NODES), max_size=3).map(tuple),
)
facts = st.builds(
    Fact,
    key=st.sampled_from(["map", "epoch"]),
    version=st.integers(0, 5),
    payload=st.binary(max_size=4),
)
gossip = {
    "sender_address": st.just("x://sender"),
    "sender_incarnation": st.integers(0, 4),
    "updates": st.lists(updates, max_size=4).map(tuple),
    "facts": st.lists(facts, max_size=2).map(tuple),
}
sequence = st.integers(0, 12)
target = st.sampled_from(NODES + ["stranger"])
messages: st.SearchStrategy[MembershipMessage] = st.one_of(
    st.builds(Ping, sequence=sequence, **gossip),
    st.builds(Ack, sequence=sequence, responder=target, **gossip),
    st.builds(PingRequest, sequence=sequence, target=target, **gossip),
    st.builds(Nack, sequence=sequence, target=target, **gossip),
    st.builds(Gossip, **gossip),
    st.builds(JoinReply, **gossip),
    st.builds(Join, sender_address=st.just("x://sender"), sender_incarnation=st.integers(0, 4)),
)
steps = st.lists(st.tuples(st.integers(0, 700), st.sampled_from(NODES[1:]), messages), max_size=40)


@settings(max_examples=300, deadline=None)
@given(steps=steps, required_sources=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_any_message_sequence_keeps_the_invariants(
    steps: list[tuple[int, str, MembershipMessage]], required_sources: int, seed: int
) -> None:
    config = MembershipConfig(required_sources=required_sources)
    member = Membership("a", "x://a", config, random.Random(seed))
    known = [MemberUpdate(node, f"x://{node}", MemberState.ALIVE, 0) for node in NODES[1:3]]
    member.join(0, (), known)
    now_ms = 0
    incarnation = member.incarnation
    for delay_ms, source, message in steps:
        now_ms += delay_ms
        member.on_tick(now_ms)
        member.on_message(now_ms, source, message)
        assert member.incarnation >= incarnation
        incarnation = member.incarnation
        for view in member.members():
            if view.state is MemberState.DOWN:
                assert len(set(view.suspecters)) >= required_sources, view
            if view.state is MemberState.SUSPECT:
                assert 1 <= len(set(view.suspecters)) <= required_sources, view
        wakeup_ms = member.next_wakeup_ms()
        assert wakeup_ms is None or member.removed is False
