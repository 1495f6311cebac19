"""The rebalance scenario's operator: grows the cluster by its spare node, then shrinks it.

It does what a person at `quorumdb rebalance status` would do, at times drawn from the
seed: add the spare as a member, approve the plan that gives it its share (unless the
run is in automatic mode; sometimes pausing and resuming it), wait until that plan is
done, decommission the spare, approve that plan, and wait until the spare has left.

Each step is a goal read from the metadata plus, for most, the command that moves
towards it. The operator watches the freshest metadata any live node has applied (the
highest version: every node applies one log) and sends its commands to a random live
node, which routes them to the controller leader; a command is sent again, through
another node, until its result is ok or the metadata shows the goal. The checkers never
read what the operator saw: they judge the clients' history and the end state.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from quorumdb.core.cluster import Member
from quorumdb.core.cluster_metadata import ClusterMetadata, PlanRecord, command
from quorumdb.core.messages import ChangeMetadata, Outcome
from quorumdb.sim.cluster import SimCluster
from quorumdb.sim.events import EventQueue
from quorumdb.sim.trace import Trace

# Far above the workload's request ids (they count from 1) and below the ids nodes use
# for their own proposals (1 << 62): replies are told apart by id alone.
OPERATOR_REQUESTS_FROM = 1 << 48
POLL_INTERVAL_MS = 200
REQUEST_TIMEOUT_MS = 3_000
START_DELAY_MS_MAX = 5_000
DECOMMISSION_DELAY_MS_MAX = 5_000
PAUSE_PROBABILITY = 0.3
PAUSE_AFTER_MS_MAX = 2_000
PAUSE_HOLD_MS_MAX = 5_000


@dataclass(frozen=True, slots=True)
class OperatorParameters:
    """What the seed decides about the operator."""

    start_delay_ms: int
    automatic: bool
    # Per move (join, then decommission): pause the plan this long after it was
    # approved, for that long; None: never paused.
    pauses: tuple[tuple[int, int] | None, tuple[int, int] | None]
    decommission_delay_ms: int

    def describe(self) -> str:
        def pause(drawn: tuple[int, int] | None) -> str:
            return "no" if drawn is None else f"after {drawn[0]}ms for {drawn[1]}ms"

        mode = "automatic" if self.automatic else "manual"
        return (
            f"operator: start_ms={self.start_delay_ms} mode={mode}"
            f" pause-join={pause(self.pauses[0])} pause-leave={pause(self.pauses[1])}"
            f" decommission-after_ms={self.decommission_delay_ms}"
        )


def draw_operator_parameters(rng: random.Random) -> OperatorParameters:
    """Draw every field in one fixed order."""
    start_delay_ms = rng.randint(0, START_DELAY_MS_MAX)
    automatic = rng.random() < 0.5
    pauses: list[tuple[int, int] | None] = []
    for _ in range(2):
        after_ms = rng.randint(0, PAUSE_AFTER_MS_MAX)
        hold_ms = rng.randint(1, PAUSE_HOLD_MS_MAX)
        pauses.append((after_ms, hold_ms) if rng.random() < PAUSE_PROBABILITY else None)
    decommission_delay_ms = rng.randint(0, DECOMMISSION_DELAY_MS_MAX)
    return OperatorParameters(
        start_delay_ms, automatic, (pauses[0], pauses[1]), decommission_delay_ms
    )


@dataclass(frozen=True, slots=True)
class _Step:
    name: str
    reached: Callable[[ClusterMetadata], bool]  # the goal, as the metadata shows it
    proposal: Callable[[ClusterMetadata], bytes] | None  # None: only wait
    delay_ms: int = 0  # wait this long after the previous step before acting


@dataclass(frozen=True, slots=True)
class MoveRecord:
    """A finished plan as the operator last saw it: what rebalancing actually did."""

    plan_id: int
    transfer_count: int
    transfers_done: int
    copied_bytes: int
    estimated_bytes: int
    finished_ms: int

    @classmethod
    def of(cls, plan: PlanRecord, finished_ms: int) -> MoveRecord:
        transfers = plan.transfers
        return cls(
            plan.plan_id,
            len(transfers),
            sum(1 for transfer in transfers if transfer.state == "done"),
            sum(transfer.copied_bytes for transfer in transfers),
            sum(transfer.estimated_bytes for transfer in transfers),
            finished_ms,
        )


@dataclass(slots=True)
class OperatorStats:
    requests: int = 0
    ok: int = 0
    refused: int = 0  # answered with an error or a result that is not ok
    unanswered: int = 0  # timed out, or the node crashed first
    moves: list[MoveRecord] = field(default_factory=list)


@dataclass(slots=True)
class _Request:
    request_id: int
    node_id: str
    deadline_ms: int


class RebalanceOperator:
    def __init__(
        self,
        queue: EventQueue,
        rng: random.Random,
        trace: Trace,
        cluster: SimCluster,
        spare: Member,
        parameters: OperatorParameters,
    ) -> None:
        self.queue = queue
        self.rng = rng
        self.trace = trace
        self.cluster = cluster
        self.spare = spare
        self.parameters = parameters
        self.stats = OperatorStats()
        self.join_plan_id: int | None = None
        self.leave_plan_id: int | None = None
        self.steps = self._steps()
        self.step_index = 0
        self.finished_ms: int | None = None
        self._step_started_ms = 0
        self._request: _Request | None = None
        self._seen: ClusterMetadata | None = None
        self._next_request_id = OPERATOR_REQUESTS_FROM
        cluster.attach(self)

    @property
    def finished(self) -> bool:
        return self.step_index == len(self.steps)

    @property
    def current_step(self) -> str:
        return "finished" if self.finished else self.steps[self.step_index].name

    def start(self) -> None:
        self._step_started_ms = self.queue.now_ms
        self.queue.schedule_in(self.parameters.start_delay_ms, self._poll)

    # --- the steps ------------------------------------------------------------------------

    def _steps(self) -> list[_Step]:
        spare_id = self.spare.node_id
        member = {**self.spare.to_dict(), "state": "active"}
        steps: list[_Step] = []
        if self.parameters.automatic:
            steps.append(
                _Step(
                    "mode-automatic",
                    lambda m: m.rebalance_mode == "automatic",
                    lambda m: command("set_rebalance_mode", mode="automatic"),
                )
            )
        steps.append(
            _Step(
                "add-spare",
                lambda m: spare_id in m.members,
                lambda m: command("add_member", member=member),
            )
        )
        steps.append(_Step("join-plan-proposed", self._join_plan_seen, None))
        steps += self._plan_steps("join", lambda: self.join_plan_id, self.parameters.pauses[0])
        steps.append(
            _Step(
                "decommission",
                lambda m: m.members[spare_id].state in ("leaving", "left"),
                lambda m: command("set_member_state", node_id=spare_id, state="leaving"),
                self.parameters.decommission_delay_ms,
            )
        )
        steps.append(_Step("leave-plan-proposed", self._leave_plan_seen, None))
        steps += self._plan_steps("leave", lambda: self.leave_plan_id, self.parameters.pauses[1])
        steps.append(_Step("spare-left", lambda m: m.members[spare_id].state == "left", None))
        return steps

    def _plan_steps(
        self, move: str, plan_id: Callable[[], int | None], pause: tuple[int, int] | None
    ) -> list[_Step]:
        def state(metadata: ClusterMetadata) -> str:
            plan = metadata.plan
            if plan is None or plan.plan_id != plan_id():
                return "done"  # a later plan exists only once this one has ended
            return plan.state

        def step(action: str) -> Callable[[ClusterMetadata], bytes]:
            return lambda m: command("plan_step", plan_id=plan_id(), action=action)

        steps: list[_Step] = []
        if not self.parameters.automatic:
            steps.append(
                _Step(f"{move}-approve", lambda m: state(m) != "proposed", step("approve"))
            )
        if pause is not None:
            after_ms, hold_ms = pause
            steps.append(
                _Step(
                    f"{move}-pause",
                    lambda m: state(m) in ("paused", "done", "cancelled"),
                    step("pause"),
                    after_ms,
                )
            )
            steps.append(
                _Step(f"{move}-resume", lambda m: state(m) != "paused", step("resume"), hold_ms)
            )
        steps.append(
            _Step(f"{move}-done", lambda m: self._record_done(m, plan_id(), state(m)), None)
        )
        return steps

    def _join_plan_seen(self, metadata: ClusterMetadata) -> bool:
        plan = metadata.plan
        if plan is None or self.spare.node_id not in plan.placed_for:
            return False
        self.join_plan_id = plan.plan_id
        return True

    def _leave_plan_seen(self, metadata: ClusterMetadata) -> bool:
        plan = metadata.plan
        assert self.join_plan_id is not None
        if plan is None or plan.plan_id <= self.join_plan_id:
            return False
        self.leave_plan_id = plan.plan_id
        return True

    def _record_done(self, metadata: ClusterMetadata, plan_id: int | None, state: str) -> bool:
        if state != "done":
            return False
        plan = metadata.plan
        if plan is not None and plan.plan_id == plan_id:
            self.stats.moves.append(MoveRecord.of(plan, self.queue.now_ms))
        return True

    # --- acting ---------------------------------------------------------------------------

    def freshest_metadata(self) -> ClusterMetadata | None:
        """The latest metadata seen on any live node now or earlier: every node applies
        one log, so a higher version is a later state. Remembered (a copy), because the
        nodes up at a moment may all lag (restarted, or cut off from the leader), and a
        person who saw a plan done does not forget it.

        Only a node whose writes are all synced is asked: the metadata in its memory may
        come from a log entry that is not durable yet (a one-voter leader applies what it
        has just appended), which a crash would undo and which no answer of the node can
        reveal before the sync (persist before send)."""
        for sim_node in self.cluster.nodes.values():
            if sim_node.node is None or not sim_node.synced:
                continue
            metadata = sim_node.node.controller.metadata
            if self._seen is None or metadata.version > self._seen.version:
                self._seen = ClusterMetadata()
                self._seen.restore(metadata.snapshot())
        return self._seen

    def _poll(self) -> None:
        if self.finished:
            return
        self.queue.schedule_in(POLL_INTERVAL_MS, self._poll)
        metadata = self.freshest_metadata()
        if metadata is None:
            return  # every node is down
        while not self.finished and self._step_due():
            step = self.steps[self.step_index]
            if not step.reached(metadata):
                self._act(step, metadata)
                return
            self._advance()

    def _step_due(self) -> bool:
        delay_ms = self.steps[self.step_index].delay_ms
        return self.queue.now_ms >= self._step_started_ms + delay_ms

    def _advance(self) -> None:
        self.trace.record(self.queue.now_ms, f"operator {self.current_step} done")
        self.step_index += 1
        self._step_started_ms = self.queue.now_ms
        self._request = None
        if self.finished:
            self.finished_ms = self.queue.now_ms

    def _act(self, step: _Step, metadata: ClusterMetadata) -> None:
        request = self._request
        if request is not None:
            if self.queue.now_ms < request.deadline_ms:
                return  # still waiting for its answer
            self.stats.unanswered += 1
            self._request = None
        if step.proposal is None:
            return
        up_node_ids = self.cluster.up_node_ids()
        if not up_node_ids:
            return
        node_id = self.rng.choice(up_node_ids)
        request_id = self._next_request_id
        self._next_request_id += 1
        self._request = _Request(request_id, node_id, self.queue.now_ms + REQUEST_TIMEOUT_MS)
        self.stats.requests += 1
        self.trace.record(self.queue.now_ms, f"operator {step.name} via {node_id}")
        self.cluster.client_request(node_id, request_id, ChangeMetadata(step.proposal(metadata)))

    # --- answers (the cluster's listener interface) ---------------------------------------

    def on_reply(self, node_id: str, request_id: int, outcome: Outcome) -> None:
        request = self._request
        if request is None or request.request_id != request_id or request.node_id != node_id:
            return  # the workload's, or a late answer to a request given up
        self._request = None
        if _result_ok(outcome):
            self.stats.ok += 1
            self._advance()
            return
        self.stats.refused += 1  # the next poll looks at the metadata and tries again

    def on_crash(self, node_id: str) -> None:
        if self._request is not None and self._request.node_id == node_id:
            self.stats.unanswered += 1
            self._request = None

    def summary_line(self) -> str:
        stats = self.stats
        return (
            f"operator: step={self.current_step} requests={stats.requests} ok={stats.ok}"
            f" refused={stats.refused} unanswered={stats.unanswered}"
            f" finished-ms={self.finished_ms if self.finished_ms is not None else '-'}"
        )


def _result_ok(outcome: Outcome) -> bool:
    if outcome.error is not None or not isinstance(outcome.value, bytes):
        return False
    try:
        result = json.loads(outcome.value)
    except ValueError:
        return False
    return isinstance(result, dict) and result.get("ok") is True
