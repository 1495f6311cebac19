"""Clients of the simulated Raft group, and the operator that changes its membership.

Clients put, compare-and-set and read a few registers, one operation at a time each,
and record what they were told as linearizability `Operation`s: a definite failure
(a refusal by a non-leader) did not happen and is left out, an indeterminate one
(timeout, crash, leadership lost) may take effect any time after its invocation. A
refused client follows the leader hint, or else tries another node.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass

from quorumdb.check.linearizability import Operation
from quorumdb.core.controller.raft import leader_hint
from quorumdb.core.controller.raft_configuration import MembershipChange, MembershipChangeKind
from quorumdb.core.messages import Outcome
from quorumdb.sim.controller_cluster import ControllerCluster
from quorumdb.sim.events import EventQueue
from quorumdb.sim.register_state_machine import cas_command, put_command
from quorumdb.sim.trace import Trace

PROCESS_FINAL = 1_000  # final readers are processes PROCESS_FINAL + key number
FINAL_RETRY_MS = 50
BACKOFF_MS_MIN = 50  # after a failure, so a leaderless group is not flooded


@dataclass(frozen=True, slots=True)
class ClientShape:
    client_count: int
    operation_count: int
    key_count: int
    think_ms_max: int
    timeout_ms: int


@dataclass(slots=True)
class _OpenCall:
    process: int
    function: str
    key: str
    argument: str | tuple[str | None, str] | None
    invoked_ms: int
    node_id: str


@dataclass(slots=True)
class WorkloadCounts:
    ok: int = 0
    fail: int = 0
    info: int = 0


class RegisterClients:
    def __init__(
        self,
        queue: EventQueue,
        rng: random.Random,
        trace: Trace,
        cluster: ControllerCluster,
        shape: ClientShape,
    ) -> None:
        self.queue = queue
        self.rng = rng
        self.trace = trace
        self.cluster = cluster
        self.shape = shape
        self.keys = [f"k{index}" for index in range(shape.key_count)]
        self.operations: list[Operation] = []
        self.counts = WorkloadCounts()
        self.issued_count = 0
        self.issuing = True
        self.final_read_count = 0
        self._open: dict[int, _OpenCall] = {}
        self._next_request_id = 1
        self._targets = {process: cluster.node_ids[0] for process in range(shape.client_count)}
        self._written: dict[str, list[str]] = {key: [] for key in self.keys}
        self._value_count = 0
        self._on_operator_reply: Callable[[int, Outcome], None] | None = None
        cluster.attach(self)

    @property
    def finished(self) -> bool:
        return self.issued_count >= self.shape.operation_count and not self._open

    @property
    def idle(self) -> bool:
        return not self._open

    def start(self) -> None:
        for process in range(self.shape.client_count):
            self._targets[process] = self.rng.choice(self.cluster.node_ids)
            self.queue.schedule_in(
                self.rng.randint(0, self.shape.think_ms_max),
                functools.partial(self._issue_next, process),
            )

    def read_every_key(self) -> None:
        """The final phase: one more read of each key, retried until answered."""
        for index, key in enumerate(self.keys):
            self._invoke(PROCESS_FINAL + index, "read", key, None)

    @property
    def final_reads_finished(self) -> bool:
        return self.final_read_count == len(self.keys)

    # --- issuing --------------------------------------------------------------------------

    def _issue_next(self, process: int) -> None:
        if not self.issuing or self.issued_count >= self.shape.operation_count:
            return
        self.issued_count += 1
        key = self.rng.choice(self.keys)
        roll = self.rng.random()
        if roll < 0.4:
            self._value_count += 1
            self._invoke(process, "put", key, f"v{self._value_count}")
        elif roll < 0.7:
            self._value_count += 1
            expected = self.rng.choice([None, *self._written[key][-3:]])
            self._invoke(process, "cas", key, (expected, f"v{self._value_count}"))
        else:
            self._invoke(process, "read", key, None)

    def _invoke(
        self, process: int, function: str, key: str, argument: str | tuple[str | None, str] | None
    ) -> None:
        request_id = self._next_request_id
        self._next_request_id += 1
        node_id = self._targets.get(process) or self.rng.choice(self.cluster.node_ids)
        call = _OpenCall(process, function, key, argument, self.queue.now_ms, node_id)
        self._open[request_id] = call
        if isinstance(argument, str):
            self._written[key].append(argument)
        elif isinstance(argument, tuple):
            self._written[key].append(argument[1])
        if function == "put":
            assert isinstance(argument, str)
            accepted = self.cluster.propose(node_id, request_id, put_command(key, argument))
        elif function == "cas":
            assert isinstance(argument, tuple)
            accepted = self.cluster.propose(node_id, request_id, cas_command(key, *argument))
        else:
            accepted = self.cluster.read(node_id, request_id)
        if not accepted:  # connection refused: it definitely did not happen
            self._targets[process] = self.rng.choice(self.cluster.node_ids)
            self._complete(request_id, "fail", None)
            return
        self.queue.schedule_in(
            self.shape.timeout_ms, functools.partial(self._on_timeout, request_id)
        )

    # --- completions ----------------------------------------------------------------------

    def on_reply(self, node_id: str, request_id: int, outcome: Outcome) -> None:
        if request_id < 0:
            assert self._on_operator_reply is not None
            self._on_operator_reply(request_id, outcome)
            return
        call = self._open.get(request_id)
        if call is None:
            return  # answered after the client gave up
        if outcome.ok:
            if call.function == "read":
                self._complete(request_id, "ok", self.cluster.register_value(node_id, call.key))
            elif call.function == "cas":
                self._complete(request_id, "ok", outcome.value == b"ok")
            else:
                self._complete(request_id, "ok", None)
            return
        assert outcome.error is not None
        if call.function == "read" or outcome.error.definite:
            self._targets[call.process] = leader_hint(outcome) or self.rng.choice(
                self.cluster.node_ids
            )
            self._complete(request_id, "fail", None)
        else:
            self._complete(request_id, "info", None)

    def on_crash(self, node_id: str) -> None:
        for request_id in sorted(self._open):
            if self._open[request_id].node_id == node_id:
                self._complete(request_id, "info", None)

    def _on_timeout(self, request_id: int) -> None:
        if request_id in self._open:
            self._complete(request_id, "info", None)

    def _complete(self, request_id: int, kind: str, result: str | bool | None) -> None:
        call = self._open.pop(request_id)
        self.trace.record(
            self.queue.now_ms, f"client p{call.process} {call.function} {call.key} {kind}"
        )
        if kind == "ok":
            self.counts.ok += 1
            completed_ms: int | None = self.queue.now_ms
        elif kind == "fail":
            self.counts.fail += 1
            completed_ms = None
        else:
            self.counts.info += 1
            completed_ms = None
            self._targets[call.process] = self.rng.choice(self.cluster.node_ids)
        definite_failure = kind == "fail"
        indeterminate_read = kind == "info" and call.function == "read"
        if not definite_failure and not indeterminate_read:
            self.operations.append(
                Operation(
                    call.process,
                    call.function,
                    call.key,
                    call.argument,
                    result,
                    call.invoked_ms,
                    completed_ms,
                )
            )
        if call.process >= PROCESS_FINAL:
            if kind == "ok":
                self.final_read_count += 1
            else:  # retried until answered: the healed group must serve it
                retry = functools.partial(self._invoke, call.process, "read", call.key, None)
                self.queue.schedule_in(FINAL_RETRY_MS, retry)
            return
        pause_ms = self.rng.randint(0, self.shape.think_ms_max)
        if kind != "ok":
            pause_ms += self.rng.randint(BACKOFF_MS_MIN, 2 * BACKOFF_MS_MIN)
        self.queue.schedule_in(pause_ms, functools.partial(self._issue_next, call.process))


@dataclass(slots=True)
class OperatorCounts:
    requested: int = 0
    committed: int = 0
    refused: int = 0


class MembershipOperator:
    """Adds learners, promotes them, removes voters (the leader too), one at a time.

    It looks at the current leader's configuration to choose a sensible change (an
    operator would ask the cluster), then asks that node; Raft itself validates.
    """

    def __init__(
        self,
        queue: EventQueue,
        rng: random.Random,
        trace: Trace,
        cluster: ControllerCluster,
        clients: RegisterClients,
        interval_ms: int,
    ) -> None:
        self.queue = queue
        self.rng = rng
        self.trace = trace
        self.cluster = cluster
        self.interval_ms = interval_ms
        self.active = False
        self.counts = OperatorCounts()
        self._next_request_id = -1
        clients._on_operator_reply = self._on_reply

    def start(self) -> None:
        if self.interval_ms > 0:
            self.active = True
            self.queue.schedule_in(self.interval_ms, self._act)

    def stop(self) -> None:
        self.active = False

    def _act(self) -> None:
        if not self.active:
            return
        self.queue.schedule_in(self.rng.randint(1, 2 * self.interval_ms), self._act)
        leader_id = self._current_leader()
        if leader_id is None:
            return
        leader = self.cluster.raft(leader_id)
        assert leader is not None
        change = self._choose(leader.configuration.voters, leader.configuration.learners)
        if change is None:
            return
        request_id = self._next_request_id
        self._next_request_id -= 1
        self.counts.requested += 1
        self.cluster.change_membership(leader_id, request_id, change)

    def _current_leader(self) -> str | None:
        leaders = []
        for node_id in self.cluster.up_node_ids():
            raft = self.cluster.raft(node_id)
            if raft is not None and raft.is_leader:
                leaders.append((raft.current_term, node_id))
        return max(leaders)[1] if leaders else None

    def _choose(self, voters: frozenset[str], learners: frozenset[str]) -> MembershipChange | None:
        if learners:
            return MembershipChange(MembershipChangeKind.PROMOTE_LEARNER, min(learners))
        outsiders = sorted(set(self.cluster.node_ids) - voters - learners)
        if outsiders and self.rng.random() < 0.6:
            return MembershipChange(MembershipChangeKind.ADD_LEARNER, self.rng.choice(outsiders))
        if len(voters) > 1 and self.rng.random() < 0.5:
            return MembershipChange(MembershipChangeKind.REMOVE, self.rng.choice(sorted(voters)))
        return None

    def _on_reply(self, request_id: int, outcome: Outcome) -> None:
        if outcome.ok:
            self.counts.committed += 1
        else:
            self.counts.refused += 1
