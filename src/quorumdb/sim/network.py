"""The simulated network between node ids: latency with jitter, loss, duplication, cuts.

Messages are datagrams: each send draws, in a fixed order and always the same number
of times, a loss roll, a duplication roll and two delays from the simulation's one
`random.Random`, so a seed replays exactly and changing a rate does not shift every
later draw. Reordering is not a separate fault: it follows from jitter. A cut (full or
one-way partition) drops a message if it blocks the link when the message is sent or
when it arrives.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from quorumdb.core.messages import Message
from quorumdb.sim.events import EventQueue
from quorumdb.sim.trace import Trace, describe_message

Link = tuple[str, str]
Deliver = Callable[[str, str, Message], None]

# Jitter beyond this many means is cut off, so every delay has a maximum.
JITTER_MEANS_MAX = 20


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """One direction of one link: a fixed base latency plus exponential jitter."""

    latency_ms_base: int
    jitter_ms_mean: float

    def __post_init__(self) -> None:
        assert self.latency_ms_base >= 0
        assert self.jitter_ms_mean > 0

    @property
    def delay_ms_max(self) -> int:
        return self.latency_ms_base + int(self.jitter_ms_mean * JITTER_MEANS_MAX)

    def draw_delay_ms(self, rng: random.Random) -> int:
        jitter = rng.expovariate(1.0 / self.jitter_ms_mean)
        return self.latency_ms_base + int(min(jitter, self.jitter_ms_mean * JITTER_MEANS_MAX))


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    delivered: int = 0
    dropped_by_loss: int = 0
    dropped_by_cut: int = 0
    duplicated: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_by_loss + self.dropped_by_cut


class Network:
    def __init__(
        self,
        queue: EventQueue,
        rng: random.Random,
        trace: Trace,
        profiles: dict[Link, LinkProfile],
        loss_probability: float = 0.0,
        duplicate_probability: float = 0.0,
    ) -> None:
        self.queue = queue
        self.rng = rng
        self.trace = trace
        self.profiles = profiles
        self.loss_probability = 0.0
        self.duplicate_probability = 0.0
        self.set_rates(loss_probability, duplicate_probability)
        self.stats = NetworkStats()
        self._deliver: Deliver | None = None
        self._cuts: dict[int, frozenset[Link]] = {}
        self._next_cut_id = 1

    def attach(self, deliver: Deliver) -> None:
        """Where arriving messages go (the cluster), set once before the first send."""
        assert self._deliver is None
        self._deliver = deliver

    def set_rates(self, loss_probability: float, duplicate_probability: float) -> None:
        if not 0.0 <= loss_probability <= 1.0:
            raise ValueError("loss probability must be within [0, 1]")
        if not 0.0 <= duplicate_probability <= 1.0:
            raise ValueError("duplicate probability must be within [0, 1]")
        self.loss_probability = loss_probability
        self.duplicate_probability = duplicate_probability

    # --- cuts -----------------------------------------------------------------------------

    def partition(self, groups: Sequence[Sequence[str]]) -> int:
        """Nodes in different groups cannot talk in either direction; returns a cut id."""
        links = [
            (source, destination)
            for index, group in enumerate(groups)
            for other_index, other in enumerate(groups)
            if index != other_index
            for source in group
            for destination in other
        ]
        text = " | ".join(",".join(group) for group in groups)
        return self._add_cut(links, f"partition {text}")

    def cut_one_way(self, source: str, destination: str) -> int:
        """Drop source -> destination while destination -> source still works."""
        assert source != destination
        return self._add_cut([(source, destination)], f"one-way {source}-x->{destination}")

    def heal(self, cut_id: int) -> None:
        if self._cuts.pop(cut_id, None) is not None:
            self.trace.record(self.queue.now_ms, f"heal cut#{cut_id}")

    def heal_all(self) -> None:
        for cut_id in sorted(self._cuts):
            self.heal(cut_id)

    def blocked(self, source: str, destination: str) -> bool:
        link = (source, destination)
        return any(link in cut for cut in self._cuts.values())

    @property
    def cut_count(self) -> int:
        return len(self._cuts)

    def _add_cut(self, links: Iterable[Link], text: str) -> int:
        cut_id = self._next_cut_id
        self._next_cut_id += 1
        self._cuts[cut_id] = frozenset(links)
        self.trace.record(self.queue.now_ms, f"cut#{cut_id} {text}")
        return cut_id

    # --- traffic --------------------------------------------------------------------------

    def send(self, source: str, destination: str, message: Message) -> None:
        profile = self.profiles[(source, destination)]
        loss_roll = self.rng.random()
        duplicate_roll = self.rng.random()
        delay_ms = profile.draw_delay_ms(self.rng)
        duplicate_delay_ms = profile.draw_delay_ms(self.rng)
        self.stats.sent += 1
        if self.blocked(source, destination):
            self._drop("cut", source, destination, message)
            self.stats.dropped_by_cut += 1
            return
        if loss_roll < self.loss_probability:
            self._drop("loss", source, destination, message)
            self.stats.dropped_by_loss += 1
            return
        self._schedule_arrival(delay_ms, source, destination, message)
        if duplicate_roll < self.duplicate_probability:
            self.stats.duplicated += 1
            self.trace.record(
                self.queue.now_ms, f"duplicate {source}->{destination} {describe_message(message)}"
            )
            self._schedule_arrival(duplicate_delay_ms, source, destination, message)

    def _schedule_arrival(
        self, delay_ms: int, source: str, destination: str, message: Message
    ) -> None:
        def arrive() -> None:
            if self.blocked(source, destination):
                self._drop("cut", source, destination, message)
                self.stats.dropped_by_cut += 1
                return
            self.stats.delivered += 1
            self.trace.record(
                self.queue.now_ms, f"deliver {source}->{destination} {describe_message(message)}"
            )
            assert self._deliver is not None
            self._deliver(source, destination, message)

        self.queue.schedule_in(delay_ms, arrive)

    def _drop(self, reason: str, source: str, destination: str, message: Message) -> None:
        self.trace.record(
            self.queue.now_ms, f"drop-{reason} {source}->{destination} {describe_message(message)}"
        )
