"""SWIM-style membership and failure detection; see docs/membership.md."""

from quorumdb.core.membership.config import MembershipConfig
from quorumdb.core.membership.effects import (
    FactLearned,
    MemberChanged,
    MembershipEffect,
    Send,
    SendToAddress,
)
from quorumdb.core.membership.member_state import MemberState
from quorumdb.core.membership.messages import (
    Ack,
    Fact,
    Gossip,
    Join,
    JoinReply,
    MembershipMessage,
    MemberUpdate,
    Nack,
    Ping,
    PingRequest,
)
from quorumdb.core.membership.swim import Membership, Phase, Statistics

__all__ = [
    "Ack",
    "Fact",
    "FactLearned",
    "Gossip",
    "Join",
    "JoinReply",
    "MemberChanged",
    "MemberState",
    "MemberUpdate",
    "Membership",
    "MembershipConfig",
    "MembershipEffect",
    "MembershipMessage",
    "Nack",
    "Phase",
    "Ping",
    "PingRequest",
    "Send",
    "SendToAddress",
    "Statistics",
]
