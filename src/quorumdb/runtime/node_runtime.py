"""The asyncio driver of one node: carries out the core's effects with real I/O.

It owns the storage engine (behind group commit), the peer transport and the
clock, and offers `submit(operation, callback)` to the client-facing servers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from quorumdb.core.cluster import Member
from quorumdb.core.effects import Effect, Persist, Reply, Send
from quorumdb.core.errors import ErrorCode
from quorumdb.core.messages import LocalOperation, Message, Operation, Outcome, failure
from quorumdb.core.node import Node, NodeLimits
from quorumdb.core.records import PLAIN_RECORD_PREFIX
from quorumdb.runtime.group_commit import FsyncPolicy, GroupCommit
from quorumdb.runtime.loop_monitor import LoopMonitor
from quorumdb.runtime.metrics import NodeMetrics
from quorumdb.runtime.transport import PeerTransport, TransportLimits
from quorumdb.storage.lmdb_engine import LmdbStorage
from quorumdb.storage.logged_storage import LoggedStorage

LOG = logging.getLogger(__name__)
TICK_INTERVAL_MS = 20  # Raft heartbeats every 50 ms need finer ticks

OutcomeCallback = Callable[[Outcome], None]
_LOST = failure(ErrorCode.INTERNAL, "the write could not be stored; its outcome is unknown")


@dataclass(frozen=True, slots=True)
class NodeSettings:
    node_id: str
    members: tuple[Member, ...]
    data_dir: str
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    limits: NodeLimits = field(default_factory=NodeLimits)
    transport: TransportLimits = field(default_factory=TransportLimits)
    max_clients: int = 10_000
    max_pipeline_depth: int = 1_024
    # The cluster's founding members when this node joined later (None: it is a founder
    # and `members` are the founders). `join` is a member's HTTP address to join through.
    founders: tuple[Member, ...] | None = None
    join: str | None = None

    @property
    def member(self) -> Member:
        for member in self.members:
            if member.node_id == self.node_id:
                return member
        raise ValueError(f"node {self.node_id!r} is not among the members")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class NodeRuntime:
    def __init__(self, settings: NodeSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.started_at_ms = now_ms()
        path = os.path.join(settings.data_dir, settings.node_id)
        os.makedirs(path, exist_ok=True)
        # `no` never syncs, so a write-ahead log would only add work; the other policies
        # make groups durable by syncing the log (storage/logged_storage.py).
        self.storage: LmdbStorage | LoggedStorage = (
            LmdbStorage(path) if settings.fsync is FsyncPolicy.NO else LoggedStorage(path)
        )
        self.logged_storage = self.storage if isinstance(self.storage, LoggedStorage) else None
        self.commit = GroupCommit(self.storage, settings.fsync, loop)
        # Boot time in ms grows across restarts, so replies meant for a previous life of
        # this node are recognised (the core compares incarnations, never clocks).
        founders = settings.founders if settings.founders is not None else settings.members
        self.node = Node(
            settings.node_id,
            founders,
            self.commit,
            settings.limits,
            now_ms(),
            rng=random.Random(),
            founder=any(member.node_id == settings.node_id for member in founders),
        )
        self.transport = PeerTransport(
            settings.node_id,
            settings.members,
            self._on_message,
            self._on_unreachable,
            loop,
            settings.transport,
        )
        self.metrics = NodeMetrics()
        self.loop_monitor = LoopMonitor()
        # A plain GET of a local key: read_local(now_ms, keyspace, key) gives the value,
        # None, or NOT_LOCAL (the `get` handler; the RESP read loop calls the node's
        # `read_local_record` itself). The node's own method, not a wrapper; callers pass a
        # time they already have (the RESP server: the arrival of the chunk).
        self.read_local = self.node.read_local
        self._known_members = self.node.partition_map.members
        self._callbacks: dict[int, OutcomeCallback] = {}
        self._next_request_id = 1
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def start(self) -> None:
        await self.transport.start()
        self._tasks.append(self.loop.create_task(self._tick_forever()))
        self._tasks.append(self.loop.create_task(self.loop_monitor.run()))
        if self.settings.fsync is FsyncPolicy.EVERYSEC:
            self._tasks.append(self.loop.create_task(self._sync_every_second()))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        self.transport.close()
        if self.settings.fsync is not FsyncPolicy.NO:
            self.commit.sync_now()
        self.storage.close()

    # --- requests from clients -------------------------------------------------------

    def submit(
        self,
        operation: Operation | LocalOperation,
        callback: OutcomeCallback,
        redirect: bool = False,
    ) -> None:
        """Run one operation; `callback` gets its outcome once it may be released.

        `redirect`: answer REDIRECT instead of forwarding a key this node does not own."""
        if self.commit.failed:
            callback(failure(ErrorCode.UNAVAILABLE, "node storage failed; not accepting requests"))
            return
        request_id = self._next_request_id
        self._next_request_id = request_id + 1
        self._callbacks[request_id] = callback
        try:
            effects = self.node.on_client_request(now_ms(), request_id, operation, redirect)
        except Exception:
            # A bug, not bad input (the core validates input): answer this request, keep
            # serving the others, and leave the evidence in the log.
            LOG.exception("operation %r failed inside the node", operation)
            del self._callbacks[request_id]
            callback(failure(ErrorCode.INTERNAL, "internal error; see the node's log"))
            return
        self.execute(effects)

    def write_local(self, keyspace: str, key: bytes, value: bytes) -> bool:
        """Fast path for a plain SET of a local key; False means take the general path.

        The caller must release its reply through `commit.release_after_pending`."""
        if self.commit.failed:
            return False
        partition = self.node.write_partition(keyspace, key, value)
        if partition < 0:
            return False
        self.commit.add_one(keyspace, partition, key, PLAIN_RECORD_PREFIX + value)
        return True

    async def call(self, operation: Operation | LocalOperation) -> Outcome:
        future: asyncio.Future[Outcome] = self.loop.create_future()

        def resolve(outcome: Outcome) -> None:
            if not future.done():
                future.set_result(outcome)

        self.submit(operation, resolve)
        return await future

    # --- effects ---------------------------------------------------------------------

    def _follow_members(self) -> None:
        """Peers come and go with the metadata's member list."""
        members = self.node.partition_map.members
        if members is not self._known_members:
            self._known_members = members
            self.transport.update_members(members)

    def execute(self, effects: list[Effect]) -> None:
        commit = self.commit
        for effect in effects:
            if type(effect) is Reply:
                callback = self._callbacks.pop(effect.request_id, None)
                if callback is None:
                    continue
                if commit.pending:
                    commit.release_after_pending(
                        _bind(callback, effect.outcome), _bind(callback, _LOST)
                    )
                else:
                    callback(effect.outcome)
            elif type(effect) is Persist:
                commit.add(effect.writes)
            elif type(effect) is Send:
                if commit.pending:
                    commit.release_after_pending(
                        _bind_send(self.transport, effect.destination, effect.message)
                    )
                else:
                    self.transport.send(effect.destination, effect.message)
            else:
                raise TypeError(f"unknown effect {effect!r}")

    def _on_message(self, source: str, message: object) -> None:
        self.execute(self.node.on_message(now_ms(), source, message))  # type: ignore[arg-type]
        self._follow_members()

    def _on_unreachable(self, peer: str) -> None:
        self.execute(self.node.on_peer_unreachable(now_ms(), peer))

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL_MS / 1000)
            try:
                self.execute(self.node.on_tick(now_ms()))
                self._follow_members()
            except Exception:
                LOG.exception("tick failed")

    async def _sync_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                # On the loop: with the write-ahead log this is one fdatasync of the
                # log (~0.3 ms) once a second, less than a hand-off to a thread costs.
                self.storage.sync()
            except Exception:
                LOG.exception("background fsync failed")


def _bind(callback: OutcomeCallback, outcome: Outcome) -> Callable[[], None]:
    return lambda: callback(outcome)


def _bind_send(transport: PeerTransport, destination: str, message: Message) -> Callable[[], None]:
    return lambda: transport.send(destination, message)
