"""Workload clients: processes issuing one operation at a time and recording a history.

The history is the JSON Lines format of `quorumdb.check.history` (see its docstring
and docs/history-format.md). Keys follow patterns the checkers can judge:

- `w<p>-<j>`: written only by process p, with puts of unique values and deletes, so
  reads show whether an acknowledged write was lost;
- `counter-<i>` (increments) and `log-<i>` (appends): shared by every process.

Besides these writers, `reader_count` readers (processes numbered after the writers)
only read, any key, and issue for as long as the writers do.

A writer's request goes to a random live node, which forwards it to the key's owner;
a reader's straight to the key's owner (a partition's leader) in a map the reader
cached from a random live node, as the Python client routes. A reader keeps its map
until an answer is not `ok` (or the owner it names is down), so after a failover it
keeps reading at the old leader for as long as that leader answers.

A request ends `ok`, `fail` (a definite error), or `info` (indefinite error, its node
crashed before answering, or no answer within the client timeout). Late answers are
ignored. Each `ok` records the replication position (epoch, sequence) its answer
carries, if any (replicated keyspaces).
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from quorumdb.check.history import HistoryEvent, HistoryValue, Position
from quorumdb.core.cluster import PartitionMap
from quorumdb.core.keyspace import DEFAULT_KEYSPACE
from quorumdb.core.messages import Append, Delete, Get, Increment, KeyOperation, Outcome, Put
from quorumdb.sim.cluster import SimCluster
from quorumdb.sim.events import EventQueue
from quorumdb.sim.trace import Trace

FINAL_READ_ATTEMPTS = 20
RETRY_DELAY_MS = 100


@dataclass(frozen=True, slots=True)
class WorkloadShape:
    client_count: int
    operation_count: int
    keys_per_writer: int
    shared_key_count: int
    think_ms_max: int
    client_timeout_ms: int
    client_latency_ms_max: int

    def __post_init__(self) -> None:
        assert self.client_count >= 1
        assert self.operation_count >= 0
        assert self.keys_per_writer >= 1
        assert self.shared_key_count >= 1
        assert self.client_timeout_ms > 2 * self.client_latency_ms_max


def _never() -> bool:
    return False


class _Mismatch:
    """An answer whose type cannot belong to the operation: a routing or matching bug."""


@dataclass(slots=True)
class ClientRequest:
    request_id: int
    process: int
    node_id: str
    f: str
    key: str
    operation: KeyOperation
    invoke_value: HistoryValue
    replied: bool = False


class Workload:
    def __init__(
        self,
        queue: EventQueue,
        rng: random.Random,
        trace: Trace,
        cluster: SimCluster,
        shape: WorkloadShape,
        keyspace: str = DEFAULT_KEYSPACE,
        reader_count: int = 0,
    ) -> None:
        assert reader_count >= 0
        self.queue = queue
        self.rng = rng
        self.trace = trace
        self.cluster = cluster
        self.shape = shape
        self.keyspace = keyspace  # every operation's keyspace
        self.readers = range(shape.client_count, shape.client_count + reader_count)
        self._cached_maps: dict[int, PartitionMap] = {}  # each reader's, once fetched
        self.history: list[HistoryEvent] = []
        self.outcome_counts: Counter[str] = Counter()
        self.stray_reply_count = 0
        # Answers that cannot belong to their request: reported as violations.
        self.anomalies: list[str] = []
        self.issued_count = 0
        self.issuing = True
        self.outstanding: dict[int, ClientRequest] = {}
        self._next_request_id = 1
        self._value_sequence = [0] * shape.client_count
        self.final_process = self.readers.stop
        self._final_keys: list[str] = []
        self._final_attempts = 0
        self.final_reads_finished = False
        # While this holds, clients keep issuing past `operation_count` (the rebalance
        # scenario keeps load on the cluster until its operator is done).
        self.keep_issuing: Callable[[], bool] = _never
        cluster.attach(self)

    # --- keys -----------------------------------------------------------------------------

    def writer_keys(self, process: int) -> list[str]:
        return [f"w{process}-{index}" for index in range(self.shape.keys_per_writer)]

    def shared_keys(self) -> list[str]:
        count = self.shape.shared_key_count
        counters = [f"counter-{index}" for index in range(count)]
        return counters + [f"log-{index}" for index in range(count)]

    def all_keys(self) -> list[str]:
        processes = range(self.shape.client_count)
        keys = [key for process in processes for key in self.writer_keys(process)]
        return keys + self.shared_keys()

    # --- the safety phase -----------------------------------------------------------------

    def start(self) -> None:
        for process in range(self.readers.stop):
            delay_ms = self.rng.randint(0, self.shape.think_ms_max)
            self.queue.schedule_in(delay_ms, functools.partial(self._issue_next, process))

    def stop_issuing(self) -> None:
        self.issuing = False

    @property
    def finished(self) -> bool:
        """Every operation of the safety phase has been issued and has completed."""
        return self._done_issuing() and not self.outstanding

    def _done_issuing(self) -> bool:
        if not self.issuing:
            return True
        return self.issued_count >= self.shape.operation_count and not self.keep_issuing()

    def _issue_next(self, process: int) -> None:
        if self._done_issuing():
            return
        if not self.cluster.up_node_ids():
            self.queue.schedule_in(RETRY_DELAY_MS, functools.partial(self._issue_next, process))
            return
        if process in self.readers:
            key = self.rng.choice(self.all_keys())
            self._invoke(process, "get", key, Get(self.keyspace, key.encode()), None)
            return
        self.issued_count += 1
        f, key, operation, value = self._choose(process)
        self._invoke(process, f, key, operation, value)

    def _choose(self, process: int) -> tuple[str, str, KeyOperation, HistoryValue]:
        keyspace = self.keyspace
        roll = self.rng.random()
        own_key = self.rng.choice(self.writer_keys(process))
        shared_index = self.rng.randrange(self.shape.shared_key_count)
        self._value_sequence[process] += 1
        sequence = self._value_sequence[process]
        if roll < 0.40:
            value = f"p{process}-{sequence}"
            return "put", own_key, Put(keyspace, own_key.encode(), value.encode()), value
        if roll < 0.48:
            return "delete", own_key, Delete(keyspace, own_key.encode()), None
        if roll < 0.70:
            key = self.rng.choice(self.all_keys())
            return "get", key, Get(keyspace, key.encode()), None
        if roll < 0.85:
            key = f"counter-{shared_index}"
            delta = 1 + sequence % 5
            return "increment", key, Increment(keyspace, key.encode(), delta), delta
        key = f"log-{shared_index}"
        piece = f"{process}.{sequence};"
        return "append", key, Append(keyspace, key.encode(), piece.encode()), piece

    # --- requests and their outcomes ------------------------------------------------------

    def _invoke(
        self, process: int, f: str, key: str, operation: KeyOperation, value: HistoryValue
    ) -> None:
        node_id = self._route(process, key)
        request = ClientRequest(self._next_request_id, process, node_id, f, key, operation, value)
        self._next_request_id += 1
        self.outstanding[request.request_id] = request
        self._record(process, "invoke", f, key, value, None)
        self.queue.schedule_in(self._client_latency_ms(), functools.partial(self._arrive, request))
        self.queue.schedule_in(
            self.shape.client_timeout_ms,
            functools.partial(self._on_timeout, request.request_id),
        )

    def _route(self, process: int, key: str) -> str:
        """The node a request goes to: a reader's, the key's owner in its cached map
        (fetched from a random live node when it has none); else a random live node."""
        up_node_ids = self.cluster.up_node_ids()
        if process not in self.readers:
            return self.rng.choice(up_node_ids)
        cached = self._cached_maps.get(process)
        if cached is None:
            node = self.cluster.nodes[self.rng.choice(up_node_ids)].node
            assert node is not None
            cached = self._cached_maps[process] = node.partition_map
        placement = cached.keyspaces.get(self.keyspace)
        owner = None if placement is None else placement.owner_of_key(key.encode())[1]
        if owner is not None and owner in up_node_ids:
            return owner
        del self._cached_maps[process]  # it named no live owner: ask again next time
        return self.rng.choice(up_node_ids)

    def _client_latency_ms(self) -> int:
        return self.rng.randint(1, self.shape.client_latency_ms_max)

    def _arrive(self, request: ClientRequest) -> None:
        if request.request_id not in self.outstanding:
            return  # already ended as info (crash or timeout) while on its way
        accepted = self.cluster.client_request(
            request.node_id, request.request_id, request.operation
        )
        assert accepted, "a crash ends the requests on their way to the node"

    def on_reply(self, node_id: str, request_id: int, outcome: Outcome) -> None:
        request = self.outstanding.get(request_id)
        if request is None:
            return  # late: the client already gave up
        if request.node_id != node_id or request.replied:
            self.stray_reply_count += 1
            return
        request.replied = True
        self.queue.schedule_in(
            self._client_latency_ms(), functools.partial(self._on_answer, request, outcome)
        )

    def on_crash(self, node_id: str) -> None:
        for request in list(self.outstanding.values()):
            if request.node_id == node_id and not request.replied:
                self._complete(request, "info", request.invoke_value, "node-crashed")

    def _on_answer(self, request: ClientRequest, outcome: Outcome) -> None:
        if request.request_id not in self.outstanding:
            return
        if outcome.error is None:
            value = self._result_value(request, outcome)
            if isinstance(value, _Mismatch):
                self.anomalies.append(
                    f"req#{request.request_id} ({request.f} {request.key}) by p{request.process}"
                    f" at {self.queue.now_ms} ms was answered with {outcome.value!r}:"
                    " an answer meant for another operation"
                )
                self._complete(request, "info", self._failed_value(request), "mismatched-reply")
                return
            self._complete(request, "ok", value, None, outcome.position)
            return
        kind = "fail" if outcome.error.definite else "info"
        self._complete(request, kind, self._failed_value(request), outcome.error.value)

    def _on_timeout(self, request_id: int) -> None:
        request = self.outstanding.get(request_id)
        if request is not None:
            self._complete(request, "info", self._failed_value(request), "client-timeout")

    @staticmethod
    def _result_value(request: ClientRequest, outcome: Outcome) -> HistoryValue | _Mismatch:
        """The history value of a successful answer; `_Mismatch` if it cannot be one."""
        value = outcome.value
        if request.f == "get":
            if value is None:
                return None
            return value.decode() if isinstance(value, bytes) else _Mismatch()
        if request.f == "put":
            return request.invoke_value if value is True else _Mismatch()
        if request.f == "delete":
            return value if isinstance(value, bool) else _Mismatch()
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return _Mismatch()

    @staticmethod
    def _failed_value(request: ClientRequest) -> HistoryValue:
        return None if request.f in ("get", "delete") else request.invoke_value

    def _complete(
        self,
        request: ClientRequest,
        kind: str,
        value: HistoryValue,
        error: str | None,
        position: Position | None = None,
    ) -> None:
        del self.outstanding[request.request_id]
        self.outcome_counts[kind] += 1
        self._record(request.process, kind, request.f, request.key, value, error, position)
        if kind != "ok":
            self._cached_maps.pop(request.process, None)  # route by a fresh map next
        if request.process == self.final_process:
            self._after_final_read(kind)
            return
        delay_ms = self.rng.randint(0, self.shape.think_ms_max)
        self.queue.schedule_in(delay_ms, functools.partial(self._issue_next, request.process))

    def _record(
        self,
        process: int,
        kind: str,
        f: str,
        key: str,
        value: HistoryValue,
        error: str | None,
        position: Position | None = None,
    ) -> None:
        event = HistoryEvent(
            len(self.history), self.queue.now_ms, process, kind, f, key, value, error, position
        )
        self.history.append(event)
        shown = f" {value}" if value is not None else ""
        problem = f" ({error})" if error is not None else ""
        at = "" if position is None else f" @{position[0]}.{position[1]}"
        self.trace.record(
            self.queue.now_ms, f"client p{process} {kind} {f} {key}{shown}{problem}{at}"
        )

    # --- final reads ----------------------------------------------------------------------

    def start_final_reads(self) -> None:
        """Read every key once more, retrying until one read succeeds (bounded)."""
        assert not self.outstanding
        self._final_keys = self.all_keys()
        self._final_attempts = 0
        self._final_read_next()

    def _final_read_next(self) -> None:
        if not self._final_keys:
            self.final_reads_finished = True
            return
        if not self.cluster.up_node_ids():
            self.queue.schedule_in(RETRY_DELAY_MS, self._final_read_next)
            return
        key = self._final_keys[0]
        self._final_attempts += 1
        operation = Get(self.keyspace, key.encode())
        self._invoke(self.final_process, "get", key, operation, None)

    def _after_final_read(self, kind: str) -> None:
        if kind == "ok" or self._final_attempts >= FINAL_READ_ATTEMPTS:
            self._final_keys.pop(0)
            self._final_attempts = 0
            self._final_read_next()
            return
        self.queue.schedule_in(RETRY_DELAY_MS, self._final_read_next)
