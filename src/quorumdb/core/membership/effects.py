"""What a member asks its driver to do, and the membership events it reports.

`Send` has the shape of `quorumdb.core.effects.Send`, but that one's message type is
the data plane's union, which this package does not own; the node runtime can widen
that union with `MembershipMessage` and use one `Send` for both.
"""

from __future__ import annotations

from typing import NamedTuple

from quorumdb.core.membership.member_state import MemberState
from quorumdb.core.membership.messages import MembershipMessage


class Send(NamedTuple):
    """Send to a member by node id; the transport resolves its address from
    `MemberChanged` events (every member appears in one before any send to it)."""

    destination: str
    message: MembershipMessage


class SendToAddress(NamedTuple):
    """Send to an address whose node id is not known yet: a seed, during a join."""

    address: str
    message: MembershipMessage


class MemberChanged(NamedTuple):
    """A member appeared or changed state (alive, suspect, down, left) in this view.

    Reported about this node itself only when it learns it was removed (`left`).
    """

    node_id: str
    address: str
    state: MemberState
    incarnation: int


class FactLearned(NamedTuple):
    """A newer version of a piggy-backed fact arrived by gossip."""

    key: str
    version: int
    payload: bytes


MembershipEffect = Send | SendToAddress | MemberChanged | FactLearned
