"""A member's state and the one rule that orders what is known about it.

Every piece of membership knowledge is an update `(node_id, state, incarnation)`.
Two updates about the same member are ordered by `(incarnation, state rank)`: a
higher incarnation always wins, and at equal incarnation `left` beats `down` beats
`suspect` beats `alive`. Only the member itself raises its incarnation, so it alone
can overturn a suspicion or a wrongful `down`: it answers with `alive` at a higher
incarnation (a refutation). This is SWIM's precedence table written as one ordering.
"""

from __future__ import annotations

from enum import Enum


class MemberState(Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DOWN = "down"
    LEFT = "left"

    @property
    def rank(self) -> int:
        return RANK[self]

    @property
    def probeable(self) -> bool:
        return self in PROBEABLE


RANK = {MemberState.ALIVE: 0, MemberState.SUSPECT: 1, MemberState.DOWN: 2, MemberState.LEFT: 3}
"""The order of states at equal incarnation (plain dict: read on every gossip update)."""

PROBEABLE = frozenset({MemberState.ALIVE, MemberState.SUSPECT})
"""Down and left members are not probed: only a refutation brings them back."""


def precedence(state: MemberState, incarnation: int) -> tuple[int, int]:
    """The sort key of an update: the larger key is the newer knowledge."""
    assert incarnation >= 0
    return (incarnation, RANK[state])
