"""Whom to probe next: round-robin over a shuffled list, reshuffled after each round.

SWIM (section 4.3) probes in this order rather than at random so that every member
is probed within two rounds, which bounds the time to first detection. A member
that appears mid-round goes to a random place among those not yet probed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from quorumdb.core.membership.random_source import RandomSource


class ProbeOrder:
    def __init__(self, rng: RandomSource) -> None:
        self.rng = rng
        self._order: list[str] = []
        self._index = 0
        self._listed: set[str] = set()

    def reshuffle(self, node_ids: Iterable[str]) -> None:
        """Start a new round over `node_ids` in a fresh random order."""
        self._order = sorted(node_ids)
        self.rng.shuffle(self._order)
        self._listed = set(self._order)
        self._index = 0

    def add(self, node_id: str) -> None:
        if node_id in self._listed:
            return
        position = self.rng.randint(self._index, len(self._order))
        self._order.insert(position, node_id)
        self._listed.add(node_id)

    def next_in_round(self, probeable: Callable[[str], bool]) -> str | None:
        """The next probeable member of this round; None once the round is over.

        Members no longer probeable are dropped as they come up.
        """
        while self._index < len(self._order):
            node_id = self._order[self._index]
            self._index += 1
            if probeable(node_id):
                return node_id
            self._listed.discard(node_id)
        return None
