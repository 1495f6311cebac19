"""The membership protocol's messages: frozen records, piggy-backed gossip on each one.

Every message names its sender's address and incarnation, so a receiver that has
never heard of the sender can still answer it (service discovery rides on the
protocol itself), and a sender's own message counts as first-hand evidence that it
is alive at that incarnation. The wire codec lives in `runtime/`, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from quorumdb.core.membership.member_state import MemberState


@dataclass(frozen=True, slots=True)
class MemberUpdate:
    """What one member knows about another; `suspecters` are the distinct members that
    failed to reach it at this incarnation (empty unless suspect or down)."""

    node_id: str
    address: str
    state: MemberState
    incarnation: int
    suspecters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Fact:
    """A small versioned value spread by gossip (e.g. the partition map version)."""

    key: str
    version: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A probe: the receiver answers `Ack(sequence, responder=itself)`."""

    sequence: int
    sender_address: str
    sender_incarnation: int
    updates: tuple[MemberUpdate, ...] = ()
    facts: tuple[Fact, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """`responder` answered probe `sequence`; relayed by an intermediary for indirect probes."""

    sequence: int
    responder: str
    sender_address: str
    sender_incarnation: int
    updates: tuple[MemberUpdate, ...] = ()
    facts: tuple[Fact, ...] = ()


@dataclass(frozen=True, slots=True)
class PingRequest:
    """Ask the receiver to probe `target` on the sender's behalf (an indirect probe)."""

    sequence: int
    target: str
    sender_address: str
    sender_incarnation: int
    updates: tuple[MemberUpdate, ...] = ()
    facts: tuple[Fact, ...] = ()


@dataclass(frozen=True, slots=True)
class Nack:
    """The intermediary also failed to reach `target`: an independent source of suspicion."""

    sequence: int
    target: str
    sender_address: str
    sender_incarnation: int
    updates: tuple[MemberUpdate, ...] = ()
    facts: tuple[Fact, ...] = ()


@dataclass(frozen=True, slots=True)
class Gossip:
    """One-way push of updates, used for a leave or a decommission that must spread now."""

    sender_address: str
    sender_incarnation: int
    updates: tuple[MemberUpdate, ...] = ()
    facts: tuple[Fact, ...] = ()


@dataclass(frozen=True, slots=True)
class Join:
    """Sent to a seed address: the seed answers with its whole view (`JoinReply`)."""

    sender_address: str
    sender_incarnation: int


@dataclass(frozen=True, slots=True)
class JoinReply:
    sender_address: str
    sender_incarnation: int
    updates: tuple[MemberUpdate, ...] = ()
    facts: tuple[Fact, ...] = ()


MembershipMessage = Ping | Ack | PingRequest | Nack | Gossip | Join | JoinReply
