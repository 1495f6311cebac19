"""One SWIM member: probes, indirect probes, suspicion, refutation, join, leave, gossip.

Each protocol period the member probes the next member of a shuffled round-robin
list. Without a direct ack within `probe_timeout_ms` it asks `indirect_probe_count`
other members to probe the target; an intermediary relays the target's ack, or
answers `Nack` when it also got none. Without any ack by the end of the period, the
target becomes suspect. Suspicion turns into `down` after the suspicion timeout, but
only when enough independent sources agree (the notes' rule):

    A source is a distinct member that failed to reach the target at the target's
    current incarnation: the prober whose direct and indirect probes all failed, and
    each intermediary that answered `Nack`. A suspect update carries its set of
    sources; sets for the same incarnation merge by union as they spread. A member
    declares the target down only once the suspicion timeout has run out *and* the
    set holds at least `required_sources` members. A `down` update carries that set,
    and a receiver that counts too few sources in it keeps the target suspect.

With `required_sources=1` this is plain SWIM with suspicion. The suspected member
refutes by raising its incarnation and gossiping `alive`; only it can do so.

The class is sans-IO: time comes in as `now_ms`, randomness from the `random.Random`
it is given, and everything it wants done comes back as effects.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from quorumdb.core.membership.config import MembershipConfig
from quorumdb.core.membership.effects import (
    FactLearned,
    MemberChanged,
    MembershipEffect,
    Send,
    SendToAddress,
)
from quorumdb.core.membership.gossip_buffer import GossipBuffer
from quorumdb.core.membership.member_state import PROBEABLE, RANK, MemberState, precedence
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
from quorumdb.core.membership.probe_order import ProbeOrder
from quorumdb.core.membership.random_source import RandomSource

RELAYS_PENDING_MAX = 1024
"""Indirect probes an intermediary runs at once; further requests are ignored."""


class Phase(Enum):
    IDLE = "idle"
    JOINING = "joining"
    ACTIVE = "active"
    LEFT = "left"


class _Timer(Enum):
    INDIRECT = 1
    RELAY = 2
    SUSPICION = 3


@dataclass(slots=True)
class _Member:
    node_id: str
    address: str
    state: MemberState
    incarnation: int
    suspecters: tuple[str, ...] = ()
    suspicion_expired: bool = False

    def as_update(self) -> MemberUpdate:
        return MemberUpdate(
            self.node_id, self.address, self.state, self.incarnation, self.suspecters
        )


@dataclass(slots=True)
class _Probe:
    sequence: int
    target: str
    acked: bool = False
    nackers: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Relay:
    requester: str
    requester_sequence: int
    target: str


@dataclass(slots=True)
class Statistics:
    """Counters for measurement; they never influence the protocol."""

    probes_sent: int = 0
    probes_failed: int = 0
    indirect_requests_sent: int = 0
    nacks_sent: int = 0
    messages_sent: int = 0
    refutations: int = 0
    reconnects_sent: int = 0
    invalid_updates_ignored: int = 0
    down_declared: int = 0


class Membership:
    def __init__(
        self,
        node_id: str,
        address: str,
        config: MembershipConfig,
        rng: RandomSource,
        incarnation: int = 0,
    ) -> None:
        """`rng` is a seeded `random.Random`. `incarnation` should exceed any used by a
        previous life of this node (the runtime persists it); a stale one is corrected as
        soon as a peer mentions it."""
        assert node_id
        assert incarnation >= 0
        self.node_id = node_id
        self.address = address
        self.config = config
        self.rng = rng
        self.incarnation = incarnation
        self.phase = Phase.IDLE
        self.statistics = Statistics()
        self._members: dict[str, _Member] = {}
        self._member_ids: list[str] = []
        """Every member ever known, for O(1) random draws; never shrinks (members stay)."""
        self._facts: dict[str, Fact] = {}
        self._updates: GossipBuffer[str, MemberUpdate] = GossipBuffer(config.gossip_buffer_size_max)
        self._fact_buffer: GossipBuffer[str, Fact] = GossipBuffer(config.gossip_buffer_size_max)
        self._probe_order = ProbeOrder(rng)
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._timers: list[tuple[int, int, _Timer, str, int]] = []
        self._timer_count = 0
        self._sequence = 0
        self._next_probe_ms = 0
        self._seed_addresses: tuple[str, ...] = ()
        self._join_retry_ms = 0
        self._down: set[str] = set()
        self._next_reconnect_ms = 0

    # --- queries --------------------------------------------------------------------------

    def members(self) -> list[MemberUpdate]:
        """Every known member, this one included, sorted by node id."""
        view = [member.as_update() for member in self._members.values()]
        view.append(self._self_update())
        return sorted(view, key=lambda update: update.node_id)

    def member(self, node_id: str) -> MemberUpdate | None:
        if node_id == self.node_id:
            return self._self_update()
        member = self._members.get(node_id)
        return None if member is None else member.as_update()

    def facts(self) -> dict[str, Fact]:
        """The newest version of every piggy-backed fact this member knows."""
        return dict(self._facts)

    @property
    def removed(self) -> bool:
        """Left gracefully or decommissioned: the member no longer probes or answers."""
        return self.phase is Phase.LEFT

    def next_wakeup_ms(self) -> int | None:
        """When `on_tick` next has work to do; None while idle or gone."""
        if self.phase in (Phase.IDLE, Phase.LEFT):
            return None
        wakeup = self._next_probe_ms
        if self._timers:
            wakeup = min(wakeup, self._timers[0][0])
        if self.phase is Phase.JOINING:
            wakeup = min(wakeup, self._join_retry_ms)
        if self._down:
            wakeup = min(wakeup, self._next_reconnect_ms)
        return wakeup

    # --- commands -------------------------------------------------------------------------

    def join(
        self,
        now_ms: int,
        seed_addresses: Iterable[str],
        known_members: Iterable[MemberUpdate] = (),
    ) -> list[MembershipEffect]:
        """Start: ask every seed for its view, retrying until one answers.

        `known_members` (a view persisted by a previous life, or handed over by a
        simulator) are taken as local knowledge without gossiping them again; those
        alive are not reported by `MemberChanged`, as the caller has them. With no
        seed other than itself the member is active at once: the first of a cluster.
        """
        if self.phase is Phase.LEFT:
            self.incarnation += 1
        elif self.phase is not Phase.IDLE:
            raise RuntimeError(f"join while {self.phase.value}")
        effects: list[MembershipEffect] = []
        for update in known_members:
            self._load_known(now_ms, update, effects)
        self._reshuffle()
        self._updates.add(self.node_id, self._self_update_as(MemberState.ALIVE))
        self._seed_addresses = tuple(
            address for address in seed_addresses if address != self.address
        )
        self._next_probe_ms = now_ms + self.rng.randrange(self.config.probe_interval_ms)
        if self._seed_addresses:
            self.phase = Phase.JOINING
            self._send_joins(now_ms, effects)
        else:
            self.phase = Phase.ACTIVE
        return effects

    def leave(self, now_ms: int) -> list[MembershipEffect]:
        """Leave gracefully: push `left` to a few members, who gossip it on; not a failure."""
        if self.phase in (Phase.IDLE, Phase.LEFT):
            return []
        self.phase = Phase.LEFT
        update = self._self_update()
        effects: list[MembershipEffect] = []
        for destination in self._random_alive_members(self.config.push_fanout, exclude=()):
            self._send(effects, destination, Gossip(self.address, self.incarnation, (update,)))
        return effects

    def decommission(self, now_ms: int, node_id: str) -> list[MembershipEffect]:
        """Operator-initiated removal of a member: it becomes `left` everywhere.

        The `left` update takes the member's incarnation plus one, so it outranks any
        `alive` the member may be gossiping; the member itself, told directly and by
        gossip, stops instead of refuting.
        """
        if node_id == self.node_id:
            return self.leave(now_ms)
        member = self._members.get(node_id)
        if member is None:
            raise ValueError(f"unknown member {node_id!r}")
        effects: list[MembershipEffect] = []
        if member.state is MemberState.LEFT:
            return effects
        update = MemberUpdate(node_id, member.address, MemberState.LEFT, member.incarnation + 1)
        self._apply(now_ms, update, effects)
        destinations = [node_id, *self._random_alive_members(self.config.push_fanout, (node_id,))]
        for destination in destinations:
            self._send(effects, destination, Gossip(self.address, self.incarnation, (update,)))
        return effects

    def set_piggyback(self, key: str, version: int, payload: bytes) -> None:
        """Spread a small versioned fact on the probes; an older or equal version is ignored."""
        current = self._facts.get(key)
        if current is not None and current.version >= version:
            return
        fact = Fact(key, version, payload)
        self._facts[key] = fact
        self._fact_buffer.add(key, fact)

    # --- driver entry points --------------------------------------------------------------

    def on_tick(self, now_ms: int) -> list[MembershipEffect]:
        effects: list[MembershipEffect] = []
        if self.phase in (Phase.IDLE, Phase.LEFT):
            return effects
        self._run_due_timers(now_ms, effects)
        if now_ms >= self._next_probe_ms:
            self._conclude_probe(now_ms, effects)
            self._start_probe(effects)
            self._next_probe_ms = max(
                self._next_probe_ms + self.config.probe_interval_ms, now_ms + 1
            )
        if self.phase is Phase.JOINING and now_ms >= self._join_retry_ms:
            self._send_joins(now_ms, effects)
        if now_ms >= self._next_reconnect_ms:
            self._reconnect(effects)
            self._next_reconnect_ms = now_ms + self.config.reconnect_interval_ms
        return effects

    def on_message(
        self, now_ms: int, source: str, message: MembershipMessage
    ) -> list[MembershipEffect]:
        effects: list[MembershipEffect] = []
        if self.phase is Phase.IDLE or source == self.node_id:
            return effects
        if self.phase is Phase.LEFT:
            if isinstance(message, Ping | PingRequest | Join):
                self._send(
                    effects, source, Gossip(self.address, self.incarnation, (self._self_update(),))
                )
            return effects
        sender = MemberUpdate(
            source, message.sender_address, MemberState.ALIVE, message.sender_incarnation
        )
        self._apply(now_ms, sender, effects)
        if isinstance(message, Join):
            self._on_join(source, effects)
            return effects
        spread = not isinstance(message, JoinReply)
        for update in message.updates:
            self._apply(now_ms, update, effects, spread=spread)
        for fact in message.facts:
            self._learn_fact(fact, effects)
        if self.removed:
            return effects  # this member just learned it was removed
        if isinstance(message, Ping):
            self._send(effects, source, self._ack(message.sequence, source))
        elif isinstance(message, Ack):
            self._on_ack(source, message, effects)
        elif isinstance(message, PingRequest):
            self._on_ping_request(now_ms, source, message, effects)
        elif isinstance(message, Nack):
            probe = self._probe
            if probe and probe.sequence == message.sequence and probe.target == message.target:
                probe.nackers.add(source)
        elif isinstance(message, JoinReply):
            self.phase = Phase.ACTIVE
        return effects

    # --- probing --------------------------------------------------------------------------

    def _start_probe(self, effects: list[MembershipEffect]) -> None:
        target = self._next_probe_target()
        if target is None:
            self._probe = None
            return
        self._sequence += 1
        self._probe = _Probe(self._sequence, target)
        self.statistics.probes_sent += 1
        self._send(effects, target, self._ping(self._sequence, target))
        self._add_timer(
            self._next_probe_ms + self.config.probe_timeout_ms,
            _Timer.INDIRECT,
            target,
            self._sequence,
        )

    def _next_probe_target(self) -> str | None:
        target = self._probe_order.next_in_round(self._probeable)
        if target is None:
            self._reshuffle()
            target = self._probe_order.next_in_round(self._probeable)
        return target

    def _probeable(self, node_id: str) -> bool:
        member = self._members.get(node_id)
        return member is not None and member.state in PROBEABLE

    def _reshuffle(self) -> None:
        self._probe_order.reshuffle(
            node_id for node_id, member in self._members.items() if member.state in PROBEABLE
        )

    def _reconnect(self, effects: list[MembershipEffect]) -> None:
        """Ping one member held down, in case it is alive after all.

        Down members are never probed, so after a healed partition, where each side
        declared the other down, nobody would talk across again. The ping carries our
        `down` about it first; a live member refutes, and its ack's incarnation revives
        it here (Serf's reconnect does the same job).
        """
        if not self._down:
            return
        candidates = sorted(self._down)
        target = candidates[self.rng.randrange(len(candidates))]
        self._sequence += 1
        self.statistics.reconnects_sent += 1
        self._send(effects, target, self._ping(self._sequence, target))

    def _send_indirect_probes(self, probe: _Probe, effects: list[MembershipEffect]) -> None:
        # A second direct ping too (memberlist sends it over TCP): another independent path.
        self._send(effects, probe.target, self._ping(probe.sequence, probe.target))
        count = self.config.indirect_probe_count
        for intermediary in self._random_alive_members(count, exclude=(probe.target,)):
            self.statistics.indirect_requests_sent += 1
            request = PingRequest(
                probe.sequence,
                probe.target,
                self.address,
                self.incarnation,
                *self._piggyback(intermediary),
            )
            self._send(effects, intermediary, request)

    def _conclude_probe(self, now_ms: int, effects: list[MembershipEffect]) -> None:
        """End of period: a probe without any ack makes its target suspect."""
        probe = self._probe
        self._probe = None
        if probe is None or probe.acked:
            return
        member = self._members.get(probe.target)
        if member is None or member.state not in PROBEABLE:
            return
        self.statistics.probes_failed += 1
        sources = tuple(sorted({self.node_id, *probe.nackers}))
        suspicion = MemberUpdate(
            member.node_id, member.address, MemberState.SUSPECT, member.incarnation, sources
        )
        self._apply(now_ms, suspicion, effects)

    def _on_ack(self, source: str, message: Ack, effects: list[MembershipEffect]) -> None:
        probe = self._probe
        if probe and probe.sequence == message.sequence and probe.target == message.responder:
            probe.acked = True
            return
        relay = self._relays.get(message.sequence)
        if relay is not None and relay.target == message.responder == source:
            del self._relays[message.sequence]
            relayed = Ack(
                relay.requester_sequence,
                relay.target,
                self.address,
                self.incarnation,
                *self._piggyback(relay.requester),
            )
            self._send(effects, relay.requester, relayed)

    def _on_ping_request(
        self, now_ms: int, source: str, message: PingRequest, effects: list[MembershipEffect]
    ) -> None:
        target = message.target
        if target in (self.node_id, source) or target not in self._members:
            return
        if len(self._relays) >= RELAYS_PENDING_MAX:
            return
        self._sequence += 1
        self._relays[self._sequence] = _Relay(source, message.sequence, target)
        self._send(effects, target, self._ping(self._sequence, target))
        self._add_timer(now_ms + self.config.probe_timeout_ms, _Timer.RELAY, target, self._sequence)

    def _on_join(self, source: str, effects: list[MembershipEffect]) -> None:
        updates = tuple(member.as_update() for member in self._members.values())
        reply = JoinReply(
            self.address,
            self.incarnation,
            (*updates, self._self_update()),
            tuple(self._facts.values()),
        )
        self._send(effects, source, reply)

    def _send_joins(self, now_ms: int, effects: list[MembershipEffect]) -> None:
        for address in self._seed_addresses:
            effects.append(SendToAddress(address, Join(self.address, self.incarnation)))
            self.statistics.messages_sent += 1
        self._join_retry_ms = now_ms + self.config.join_retry_interval_ms

    # --- timers ---------------------------------------------------------------------------

    def _add_timer(self, deadline_ms: int, kind: _Timer, node_id: str, number: int) -> None:
        self._timer_count += 1
        heapq.heappush(self._timers, (deadline_ms, self._timer_count, kind, node_id, number))

    def _run_due_timers(self, now_ms: int, effects: list[MembershipEffect]) -> None:
        while self._timers and self._timers[0][0] <= now_ms:
            _, _, kind, node_id, number = heapq.heappop(self._timers)
            if kind is _Timer.INDIRECT:
                probe = self._probe
                if probe and probe.sequence == number and not probe.acked:
                    self._send_indirect_probes(probe, effects)
            elif kind is _Timer.RELAY:
                relay = self._relays.pop(number, None)
                if relay is not None:
                    self.statistics.nacks_sent += 1
                    nack = Nack(
                        relay.requester_sequence,
                        relay.target,
                        self.address,
                        self.incarnation,
                        *self._piggyback(relay.requester),
                    )
                    self._send(effects, relay.requester, nack)
            else:
                self._suspicion_timeout(now_ms, node_id, number, effects)

    def _suspicion_timeout(
        self, now_ms: int, node_id: str, incarnation: int, effects: list[MembershipEffect]
    ) -> None:
        member = self._members.get(node_id)
        if member is None or member.state is not MemberState.SUSPECT:
            return
        if member.incarnation != incarnation:
            return
        member.suspicion_expired = True
        self._declare_down_if_confirmed(member, effects)

    def _declare_down_if_confirmed(self, member: _Member, effects: list[MembershipEffect]) -> None:
        if not member.suspicion_expired:
            return
        if len(member.suspecters) < self.config.required_sources:
            return
        self.statistics.down_declared += 1
        self._set_state(member, MemberState.DOWN, effects)
        self._updates.add(member.node_id, member.as_update())

    # --- merging knowledge ----------------------------------------------------------------

    def _apply(
        self,
        now_ms: int,
        update: MemberUpdate,
        effects: list[MembershipEffect],
        spread: bool = True,
    ) -> None:
        """Merge one update into the view by the precedence rule; spread what is news."""
        if update.node_id == self.node_id:
            self._apply_about_self(update, effects)
            return
        member = self._members.get(update.node_id)
        state = update.state
        if member is not None and self._known_already(member, update):
            return  # the common case, decided without building anything
        suspecters = self._cap_sources(update.suspecters)
        if state is MemberState.DOWN and len(suspecters) < self.config.required_sources:
            state = MemberState.SUSPECT  # too few sources: keep suspecting, never down
        if state not in (MemberState.SUSPECT, MemberState.DOWN):
            suspecters = ()
        elif not suspecters:
            self.statistics.invalid_updates_ignored += 1
            return  # a suspicion without any source: no member sends that, so drop it
        if member is None:
            member = _Member(update.node_id, update.address, state, update.incarnation, suspecters)
            self._members[update.node_id] = member
            self._member_ids.append(member.node_id)
            effects.append(MemberChanged(member.node_id, member.address, state, member.incarnation))
            self._track_down(member)
            self._entered_state(now_ms, member)
        elif precedence(state, update.incarnation) > precedence(member.state, member.incarnation):
            member.address = update.address
            member.incarnation = update.incarnation
            member.suspecters = suspecters
            member.suspicion_expired = False
            self._set_state(member, state, effects)
            self._entered_state(now_ms, member)
        elif member.state is MemberState.SUSPECT and update.incarnation == member.incarnation:
            merged = self._cap_sources((*member.suspecters, *suspecters))
            if len(merged) == len(member.suspecters):
                return
            member.suspecters = merged
            self._declare_down_if_confirmed(member, effects)
        else:
            return
        if spread:
            self._updates.add(member.node_id, member.as_update())

    def _known_already(self, member: _Member, update: MemberUpdate) -> bool:
        if update.incarnation != member.incarnation:
            return update.incarnation < member.incarnation
        if update.state is not member.state:
            return RANK[update.state] < RANK[member.state]
        if update.state is not MemberState.SUSPECT:
            return True
        return len(member.suspecters) >= self.config.required_sources

    def _load_known(
        self, now_ms: int, update: MemberUpdate, effects: list[MembershipEffect]
    ) -> None:
        """The fast path of `_apply` for a view handed over at start: a thousand members
        must not cost a thousand random insertions and events; `join` shuffles once after."""
        if update.node_id == self.node_id or update.node_id in self._members:
            self._apply(now_ms, update, effects, spread=False)
            return
        if update.state is not MemberState.ALIVE:
            self._apply(now_ms, update, effects, spread=False)
            return
        member = _Member(update.node_id, update.address, update.state, update.incarnation)
        self._members[update.node_id] = member
        self._member_ids.append(member.node_id)

    def _entered_state(self, now_ms: int, member: _Member) -> None:
        if member.state in PROBEABLE:
            self._probe_order.add(member.node_id)
        if member.state is MemberState.SUSPECT:
            timeout_ms = self.config.suspicion_timeout_ms(len(self._members) + 1)
            self._add_timer(
                now_ms + timeout_ms, _Timer.SUSPICION, member.node_id, member.incarnation
            )

    def _set_state(
        self, member: _Member, state: MemberState, effects: list[MembershipEffect]
    ) -> None:
        if member.state is state:
            return
        member.state = state
        self._track_down(member)
        effects.append(MemberChanged(member.node_id, member.address, state, member.incarnation))

    def _track_down(self, member: _Member) -> None:
        if member.state is MemberState.DOWN:
            self._down.add(member.node_id)
        else:
            self._down.discard(member.node_id)

    def _apply_about_self(self, update: MemberUpdate, effects: list[MembershipEffect]) -> None:
        if update.incarnation < self.incarnation:
            return
        if update.state is MemberState.LEFT:
            self.incarnation = update.incarnation
            self.phase = Phase.LEFT
            effects.append(
                MemberChanged(self.node_id, self.address, MemberState.LEFT, self.incarnation)
            )
            return
        if update.state is MemberState.ALIVE and update.incarnation == self.incarnation:
            return
        # Suspect or down at our incarnation, or a newer incarnation of a past life: refute.
        self.incarnation = update.incarnation + 1
        self.statistics.refutations += 1
        self._updates.add(self.node_id, self._self_update())

    def _learn_fact(self, fact: Fact, effects: list[MembershipEffect]) -> None:
        current = self._facts.get(fact.key)
        if current is not None and current.version >= fact.version:
            return
        self._facts[fact.key] = fact
        self._fact_buffer.add(fact.key, fact)
        effects.append(FactLearned(fact.key, fact.version, fact.payload))

    def _cap_sources(self, sources: Iterable[str]) -> tuple[str, ...]:
        """Distinct sources, sorted, at most `required_sources`: more proves nothing more."""
        return tuple(sorted(set(sources)))[: self.config.required_sources]

    # --- building messages ----------------------------------------------------------------

    def _self_update(self) -> MemberUpdate:
        state = MemberState.LEFT if self.phase is Phase.LEFT else MemberState.ALIVE
        return self._self_update_as(state)

    def _self_update_as(self, state: MemberState) -> MemberUpdate:
        return MemberUpdate(self.node_id, self.address, state, self.incarnation)

    def _ping(self, sequence: int, destination: str) -> Ping:
        return Ping(sequence, self.address, self.incarnation, *self._piggyback(destination))

    def _ack(self, sequence: int, destination: str) -> Ack:
        return Ack(
            sequence, self.node_id, self.address, self.incarnation, *self._piggyback(destination)
        )

    def _piggyback(self, destination: str) -> tuple[tuple[MemberUpdate, ...], tuple[Fact, ...]]:
        """Recent updates and facts for one message; a member that we do not think alive
        always hears what we think of it first, so it can refute or learn its removal."""
        member_count = len(self._members) + 1
        send_limit = self.config.retransmit_limit(member_count)
        count_max = self.config.updates_per_message_max
        member = self._members.get(destination)
        about: list[MemberUpdate] = []
        if member is not None and member.state is not MemberState.ALIVE:
            about.append(member.as_update())
            count_max -= 1
        updates = about + self._updates.take(count_max, send_limit)
        facts = self._fact_buffer.take(self.config.facts_per_message_max, send_limit)
        return tuple(updates), tuple(facts)

    def _send(
        self, effects: list[MembershipEffect], destination: str, message: MembershipMessage
    ) -> None:
        self.statistics.messages_sent += 1
        effects.append(Send(destination, message))

    def _random_alive_members(self, count: int, exclude: Iterable[str]) -> list[str]:
        """Up to `count` distinct alive members, drawn by bounded rejection sampling so
        that a large cluster costs O(count), not O(n)."""
        excluded = set(exclude)
        chosen: list[str] = []
        candidates = self._member_ids
        for _ in range(4 * count + 16):
            if len(chosen) == count or not candidates:
                break
            node_id = candidates[self.rng.randrange(len(candidates))]
            member = self._members.get(node_id)
            if node_id in excluded or member is None or member.state is not MemberState.ALIVE:
                continue
            excluded.add(node_id)
            chosen.append(node_id)
        return chosen
