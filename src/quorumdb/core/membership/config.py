"""Membership parameters, validated in one place, and the limits derived from cluster size.

Defaults follow HashiCorp memberlist's LAN profile (1 s period, 3 indirect probes,
suspicion and retransmission scaled by log10 of the cluster size) with a shorter
probe timeout (300 ms, not 500 ms) so that an intermediary's nack, which takes two
timeouts and two hops, still arrives within the period; and the notes' rule on top:
two independent sources before `down`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    probe_interval_ms: int = 1000
    """One protocol period: one member probed, its outcome decided at the period's end."""
    probe_timeout_ms: int = 300
    """Wait this long for a direct ack before asking intermediaries; also how long an
    intermediary waits for the target before answering `Nack`."""
    indirect_probe_count: int = 3
    """k: members asked to probe a target that missed its direct ack."""
    required_sources: int = 2
    """Distinct members that must have failed to reach a member (at one incarnation)
    before anyone declares it down; 1 is plain SWIM."""
    suspicion_multiplier: float = 4.0
    """Suspicion lasts multiplier x max(1, log10 n) probe periods before `down`."""
    retransmit_multiplier: int = 4
    """lambda: each update is piggy-backed about lambda x ceil(log10(n + 1)) times."""
    updates_per_message_max: int = 20
    """About what fits in one 1,400-byte datagram next to the probe itself."""
    facts_per_message_max: int = 2
    gossip_buffer_size_max: int = 4096
    """Pending updates kept for retransmission; the most-sent are dropped beyond this."""
    push_fanout: int = 4
    """Members told at once, by a one-way `Gossip`, of a leave or a decommission."""
    join_retry_interval_ms: int = 2000
    reconnect_interval_ms: int = 10_000
    """How often a member pings one member it holds down, so that a healed partition,
    whose sides declared each other down, reconnects."""

    def __post_init__(self) -> None:
        assert self.probe_interval_ms > 0
        assert 0 < self.probe_timeout_ms
        # A nack (two timeouts plus two hops) must be able to arrive before the period ends.
        assert 3 * self.probe_timeout_ms <= self.probe_interval_ms
        assert self.indirect_probe_count >= 0
        assert self.required_sources >= 1
        assert self.suspicion_multiplier > 0
        assert self.retransmit_multiplier >= 1
        assert self.updates_per_message_max >= 1
        assert self.facts_per_message_max >= 0
        assert self.gossip_buffer_size_max >= self.updates_per_message_max
        assert self.push_fanout >= 1
        assert self.join_retry_interval_ms > 0
        assert self.reconnect_interval_ms > 0

    def suspicion_timeout_ms(self, member_count: int) -> int:
        scale = max(1.0, math.log10(max(member_count, 1)))
        return int(self.suspicion_multiplier * scale * self.probe_interval_ms)

    def retransmit_limit(self, member_count: int) -> int:
        return self.retransmit_multiplier * max(1, math.ceil(math.log10(member_count + 1)))
