"""The failure detector's bridge between the metadata's members and SWIM."""

from __future__ import annotations

import random

from quorumdb.core.cluster import local_members
from quorumdb.core.failure_detector import FailureDetector, address_of


def test_a_node_started_after_a_member_left_ignores_that_member() -> None:
    """Found by the rebalance simulation: a node restarting after the spare had left got
    a map without it but the metadata's `left` set with it, and crashed on removing a
    member its SWIM never knew."""
    members = local_members(2, 7000)
    detector = FailureDetector("node0", address_of(members[0]), random.Random(1), 1)
    detector.on_tick(0, members, 7, {"node2"})
    assert detector.health("node2") == "unknown"
    assert detector.health("node1") == "alive"


def test_a_known_member_that_leaves_is_marked_left() -> None:
    members = local_members(3, 7000)
    detector = FailureDetector("node0", address_of(members[0]), random.Random(1), 1)
    detector.on_tick(0, members, 1, set())
    detector.on_tick(100, members, 2, {"node2"})
    assert detector.health("node2") == "left"
