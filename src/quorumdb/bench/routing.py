"""Smart routing of a `quorumdb://` target: which node owns each workload key, and what
to do when a request finds out that the map it was routed by is stale.

The map is the one the Python client reads (`quorumdb.client._routing.ClientMap`, from
`QUORUMDB.MAP`), and an error reply is judged the way that client judges it
(`next_step`): REDIRECT means the map is stale (the partition moved, or the node no
longer leads it: a failover), UNAVAILABLE that the node could not reach the owner. Those,
Redis Cluster's MOVED, and a lost or refused connection are worth a retry after the map
is fetched again from any live node; any other error reply is the request's answer.

Nothing here touches the load generator's hot path: `ClusterRouting.key_owners` is a
plain list the runner indexes per drawn key, replaced whole when a newer map arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from quorumdb.bench.resp_client import ReplyError, RespConnection
from quorumdb.bench.workload import KEY_FORMAT
from quorumdb.client._routing import Address, ClientMap, Router, next_step
from quorumdb.core.partitioning import Layout
from quorumdb.core.partitioning.leaders import LeaderLayout

DEFAULT_RETRIES = 10
DEFAULT_RETRY_BACKOFF_SECONDS = 0.02
RETRY_BACKOFF_MAX_SECONDS = 0.5
"""Retry n waits 0 (right after the map refresh), then base, 2 base, 4 base... up to this.
With the defaults 10 retries span about 2.6 s: a failover takes the leader timeout (1 s)
and a metadata round, see docs/replication.md."""

MAP_REFRESH_INTERVAL_SECONDS = 0.05
"""However many requests fail at once, the map is fetched at most once per interval."""

MAP_FETCH_TIMEOUT_SECONDS = 1.0
"""Per node asked for the map: a stopped node accepts connections but never answers."""

NO_OWNER = -1
"""`key_owners` entry of a key whose owner the map does not list an address for."""


def is_retryable(reply: object) -> bool:
    """Whether a failed request may succeed at another node once the map is refreshed:
    a lost, refused or timed-out connection (any `OSError`: `RespConnectionError` is one),
    or an error reply that says the map is stale or the owner unreachable."""
    if isinstance(reply, OSError):
        return True
    if isinstance(reply, ReplyError):
        message = str(reply)
        return message.startswith("MOVED") or next_step(message) != "raise"
    return False


def retry_delay(attempt: int, base_seconds: float) -> float:
    """Seconds to wait before retry number `attempt` (1-based)."""
    if attempt <= 1:
        return 0.0
    return float(min(base_seconds * 2 ** (attempt - 2), RETRY_BACKOFF_MAX_SECONDS))


def _partitioning(layout: Layout) -> object:
    """What decides which partition a key is in: a replicated keyspace's failovers change
    only who leads, so its partitions need not be located again."""
    return layout.inner if isinstance(layout, LeaderLayout) else layout


class ClusterRouting:
    """The partition map of one keyspace as the bench uses it: the owner of every workload
    key as an index into `node_ids` / `endpoints` (append-only, so indexes stay valid
    across refreshes), and how many keys each node owns.

    `Router` (the Python client's) keeps the seeds and the current map and gives the
    order to ask nodes for a newer one."""

    def __init__(self, seeds: Sequence[Address], keyspace: str, key_count: int) -> None:
        self.router = Router([], keyspace)
        self.router.seeds = list(seeds)
        self.keyspace = keyspace
        self.key_count = key_count
        self.node_ids: list[str] = []
        self.endpoints: list[Address] = []
        self.key_owners: list[int] = []
        self.owned_keys: list[int] = []
        self.refreshes = 0
        self._partitioning: object = None
        self._key_partitions: list[int] = []

    @property
    def map(self) -> ClientMap | None:
        return self.router.map

    @property
    def version(self) -> int:
        return self.router.map.version if self.router.map is not None else -1

    def owners(self) -> list[int]:
        """Node indexes that own at least one workload key, in node-id order."""
        owning = [index for index, count in enumerate(self.owned_keys) if count]
        return sorted(owning, key=lambda index: self.node_ids[index])

    def choose_home(self, homed: Mapping[int, int], avoid: set[int]) -> int | None:
        """The node a client that lost its own should connect to: of the nodes owning
        keys, the one with the fewest clients per owned key (ties: node-id order)."""
        candidates = [index for index in self.owners() if index not in avoid]
        if not candidates:
            return None
        return min(candidates, key=lambda index: homed[index] / self.owned_keys[index])

    def refresh_order(self, prefer: int | None, suspects: set[int]) -> list[Address]:
        """Where to ask for the map: `prefer` (a node that answered REDIRECT has the newer
        map) first, then every node and seed, the ones that just failed last."""
        suspected = {self.endpoints[index] for index in suspects}
        order = [address for address in self.router.addresses() if address not in suspected]
        order += [address for address in self.router.addresses() if address in suspected]
        if prefer is not None and prefer != NO_OWNER:
            first = self.endpoints[prefer]
            order = [first] + [address for address in order if address != first]
        return order

    async def fetch(
        self, order: Sequence[Address], connect_timeout_seconds: float
    ) -> ClientMap | None:
        """The map from the first node in `order` that answers with one (None: nobody)."""
        timeout_seconds = min(connect_timeout_seconds, MAP_FETCH_TIMEOUT_SECONDS)
        for host, port in order:
            try:
                connection = await RespConnection.open(host, port, timeout_seconds)
            except (OSError, TimeoutError):
                continue
            try:
                document = await asyncio.wait_for(
                    connection.execute("QUORUMDB.MAP"), timeout_seconds
                )
            except (OSError, TimeoutError):
                continue
            finally:
                connection.close()
            if not isinstance(document, bytes):
                continue
            try:
                candidate = ClientMap.parse(document)
            except (ValueError, KeyError, TypeError):
                continue
            if self.keyspace in candidate.layouts:
                return candidate
        return None

    async def adopt(self, candidate: ClientMap) -> bool:
        """Route by `candidate` unless the current map is newer; True when it was taken.

        Locating every key again (a new layout, not just new leaders) runs in a worker
        thread: about 0.7 s per million keys that would otherwise stall the load."""
        current = self.router.map
        if current is not None and candidate.version < current.version:
            return False
        layout = candidate.layouts[self.keyspace]
        partitioning = _partitioning(layout)
        key_partitions = self._key_partitions
        if partitioning != self._partitioning or len(key_partitions) != self.key_count:
            if current is None:
                key_partitions = _locate_keys(layout, self.key_count)
            else:
                key_partitions = await asyncio.to_thread(_locate_keys, layout, self.key_count)
            latest = self.router.map
            if latest is not None and latest is not current and latest.version > candidate.version:
                return False  # a newer map was adopted while this one was located
        indexes = {
            partition: self._node_index(layout.owner(partition), candidate)
            for partition in layout.partition_ids
        }
        key_owners = [indexes[partition] for partition in key_partitions]
        owned_keys = [0] * len(self.node_ids)
        for owner in key_owners:
            if owner != NO_OWNER:
                owned_keys[owner] += 1
        self.router.map = candidate
        self._partitioning = partitioning
        self._key_partitions = key_partitions
        self.key_owners = key_owners
        self.owned_keys = owned_keys
        return True

    def _node_index(self, node_id: str, candidate: ClientMap) -> int:
        node = candidate.nodes.get(node_id)
        if node is None:
            return NO_OWNER
        address = (node.host, node.port)
        try:
            index = self.node_ids.index(node_id)
        except ValueError:
            self.node_ids.append(node_id)
            self.endpoints.append(address)
            return len(self.node_ids) - 1
        self.endpoints[index] = address
        return index


def _locate_keys(layout: Layout, key_count: int) -> list[int]:
    locate = layout.locate
    return [locate((KEY_FORMAT % index).encode()) for index in range(key_count)]
