"""The node's SWIM member: who is alive, suspect or down, as this node's probes and the
cluster's gossip say, and the partition-map version spread piggy-backed on probes.

The metadata (Raft) decides who is a member; SWIM only judges their health. A member the
metadata has never heard of is still probed if it probes us (a joiner announces itself
that way); a member the metadata marks left is decommissioned here so nobody probes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from quorumdb.core.cluster import Member
from quorumdb.core.effects import Effect, Send
from quorumdb.core.membership import (
    FactLearned,
    MemberChanged,
    Membership,
    MembershipConfig,
    MembershipMessage,
    MemberState,
    MemberUpdate,
)
from quorumdb.core.membership import Send as MembershipSend
from quorumdb.core.membership.random_source import RandomSource

MAP_VERSION_FACT = "map-version"
MEASUREMENTS_FACT = "measurements:"  # + node id: its partition sizes and range loads


def address_of(member: Member) -> str:
    return f"{member.host}:{member.peer_port}"


class FailureDetector:
    def __init__(
        self,
        node_id: str,
        address: str,
        rng: RandomSource,
        incarnation: int,
        config: MembershipConfig | None = None,
    ) -> None:
        # Incarnations must grow across restarts; the node's start time (ms) does.
        self.membership = Membership(
            node_id, address, config or MembershipConfig(), rng, incarnation
        )
        self.node_id = node_id
        self.states: dict[str, MemberState] = {}
        self.newest_map_version = 0  # the highest version any member's gossip mentioned
        self._started = False
        self._left: set[str] = set()

    def health(self, node_id: str) -> str:
        """alive, suspect, down or left as this node knows it; "unknown" before any news."""
        if node_id == self.node_id:
            return "alive"
        state = self.states.get(node_id)
        return "unknown" if state is None else state.value

    def on_tick(
        self, now_ms: int, members: Sequence[Member], map_version: int, left: set[str]
    ) -> list[Effect]:
        effects: list[Effect] = []
        membership = self.membership
        if not self._started:
            self._started = True
            known = [
                MemberUpdate(member.node_id, address_of(member), MemberState.ALIVE, 0)
                for member in members
                if member.node_id != self.node_id
            ]
            for update in known:
                self.states[update.node_id] = MemberState.ALIVE
            effects += self._translate(membership.join(now_ms, (), known))
        for node_id in sorted(left - self._left):
            self._left.add(node_id)
            # A node started after the member left (its map no longer lists it) never
            # knew it: there is nothing to remove.
            if node_id != self.node_id and membership.member(node_id) is not None:
                effects += self._translate(membership.decommission(now_ms, node_id))
        membership.set_piggyback(MAP_VERSION_FACT, map_version, b"")
        effects += self._translate(membership.on_tick(now_ms))
        return effects

    def publish(self, prefix: str, version: int, payload: bytes) -> None:
        """Spread a fact of this node's on its probes: partition sizes (the controller
        leader sizes plans with them) and range measurements (it splits and merges by
        them). A higher version replaces the previous one everywhere."""
        self.membership.set_piggyback(prefix + self.node_id, version, payload)

    def heard(self, prefix: str) -> dict[str, bytes]:
        """node id -> the newest payload under `prefix` heard from it (ours included)."""
        return {
            key[len(prefix) :]: fact.payload
            for key, fact in self.membership.facts().items()
            if key.startswith(prefix)
        }

    def on_message(self, now_ms: int, source: str, message: MembershipMessage) -> list[Effect]:
        if not self._started:
            return []
        return self._translate(self.membership.on_message(now_ms, source, message))

    def _translate(self, effects: Sequence[object]) -> list[Effect]:
        """SWIM's effects in the node's terms: sends by node id; the rest is bookkeeping
        (seeds by address are not used: members come from the metadata)."""
        result: list[Effect] = []
        for effect in effects:
            if isinstance(effect, MembershipSend):
                result.append(Send(effect.destination, effect.message))
            elif isinstance(effect, MemberChanged):
                self.states[effect.node_id] = effect.state
            elif isinstance(effect, FactLearned) and effect.key == MAP_VERSION_FACT:
                self.newest_map_version = max(self.newest_map_version, effect.version)
        return result
