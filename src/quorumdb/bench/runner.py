"""Drive RESP servers with GET/SET traffic and measure throughput and latency.

Every target (one Redis, one quorumdb node, or a comma-separated list of nodes that the clients
are spread over) is measured with the same client code, one target after another, each with
fresh connections and the same deterministic operation sequence.

Two load models:

* closed loop (`mode="closed"`): each of `clients` connections keeps `pipeline` requests in
  flight and sends the next one when a reply arrives. It measures what the server sustains,
  but a slow reply also delays every request the client would have sent meanwhile, so a
  stall shows up as one slow sample instead of many ("coordinated omission").
* open loop (`mode="open"`): requests are due on a fixed schedule, one every
  `1 / rate_per_second` seconds, dealt round-robin over the clients. A request that cannot be
  sent because its connection already has `pipeline` requests in flight waits in that client's
  queue. Latency is measured from the request's INTENDED start time on the schedule, not from
  when it was actually written, so time spent queued behind a slow server is counted and
  coordinated omission does not hide it. The generator's own lateness (event loop timers have
  about 1 ms resolution) is included in that latency and reported separately as
  `scheduler_lag` so it can be told apart from the server's.

Latency is recorded in microseconds into HdrHistograms (1 us .. 60 s, 3 significant digits),
one for reads and one for writes; the total is their sum. Only successful replies are
recorded; error replies and lost requests are counted in `errors`.

Runs are always bounded: by `duration_seconds` and/or `request_count`, and in any case by
`max_duration_seconds` and `max_request_count`; replies still missing `drain_timeout_seconds`
after the end are counted as errors.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import urlsplit

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

from quorumdb.bench.resp_client import RespConnection, RespConnectionError, encode_command
from quorumdb.bench.workload import (
    KEY_FORMAT,
    OperationStream,
    WorkloadConfig,
    make_value,
)

Mode = Literal["closed", "open"]
MODES: tuple[Mode, ...] = ("closed", "open")

DEFAULT_TARGET = "redis://127.0.0.1:7000"
DEFAULT_PORT = 6379
DEFAULT_DURATION_SECONDS = 10.0
"""Used when neither a duration nor a request count is given."""

LOWEST_LATENCY_MICROSECONDS = 1
HIGHEST_LATENCY_MICROSECONDS = 60_000_000
SIGNIFICANT_DIGITS = 3

MINIMUM_TIMER_SECONDS = 0.001
"""Event loop timers round to milliseconds; shorter sleeps would turn into busy spinning."""

PROGRESS_INTERVAL_SECONDS = 0.25
PRELOAD_BATCH_SIZE = 64


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One server address."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_target(target: str) -> list[Endpoint]:
    """Endpoints of a target: `redis://host:port`, or several joined by commas (a cluster).

    The `redis://` scheme may be omitted; the port defaults to 6379. `quorumdb://host:port`
    means "route like the smart client": the node's partition map is fetched and every
    request goes straight to its key's owner (see `_smart_routing`).
    """
    endpoints = []
    for part in target.split(","):
        part = part.strip()
        if not part:
            continue
        url = urlsplit(part if "://" in part else f"redis://{part}")
        if url.scheme not in ("redis", "quorumdb"):
            raise ValueError(
                f"unsupported scheme {url.scheme!r} in {part!r} (use redis:// or quorumdb://)"
            )
        if not url.hostname:
            raise ValueError(f"no host in target {part!r}")
        try:
            port = url.port or DEFAULT_PORT
        except ValueError as error:
            raise ValueError(f"bad port in target {part!r}") from error
        endpoints.append(Endpoint(url.hostname, port))
    if not endpoints:
        raise ValueError(f"empty target {target!r}")
    return endpoints


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """One benchmark: the same load applied to each target in turn."""

    targets: Sequence[str] = (DEFAULT_TARGET,)
    clients: int = 50
    mode: Mode = "closed"
    rate_per_second: float | None = None
    duration_seconds: float | None = None
    request_count: int | None = None
    pipeline: int = 1
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    warmup_seconds: float = 0.0
    preload: bool = False
    keyspace: str | None = None
    """Selected on every connection with `QUORUMDB.KEYSPACE` before any traffic; None keeps
    the server's default (and sends nothing, so a plain Redis can be measured)."""
    max_duration_seconds: float = 600.0
    max_request_count: int = 100_000_000
    drain_timeout_seconds: float = 10.0
    connect_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        if not self.targets:
            raise ValueError("at least one target is needed")
        for target in self.targets:
            parse_target(target)
        if self.clients < 1:
            raise ValueError(f"clients must be >= 1, got {self.clients}")
        if self.pipeline < 1:
            raise ValueError(f"pipeline must be >= 1, got {self.pipeline}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "open" and not (self.rate_per_second and self.rate_per_second > 0):
            raise ValueError("open loop needs rate_per_second > 0")
        if self.duration_seconds is not None and self.duration_seconds <= 0:
            raise ValueError(f"duration_seconds must be > 0, got {self.duration_seconds}")
        if self.request_count is not None and self.request_count < 1:
            raise ValueError(f"request_count must be >= 1, got {self.request_count}")
        if self.warmup_seconds < 0:
            raise ValueError(f"warmup_seconds must be >= 0, got {self.warmup_seconds}")
        if self.keyspace is not None and not self.keyspace:
            raise ValueError("keyspace must not be empty")
        if self.max_duration_seconds <= 0 or self.max_request_count < 1:
            raise ValueError("max_duration_seconds and max_request_count must be positive")

    @property
    def time_limit_seconds(self) -> float:
        """Measured time after warmup: the duration given, else the default, within the cap."""
        if self.duration_seconds is not None:
            planned = self.duration_seconds
        elif self.request_count is not None:
            planned = math.inf
        else:
            planned = DEFAULT_DURATION_SECONDS
        return min(planned, self.max_duration_seconds)

    @property
    def request_limit(self) -> int:
        """Measured requests to send: the count given, within the cap."""
        if self.request_count is None:
            return self.max_request_count
        return min(self.request_count, self.max_request_count)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of one histogram, in milliseconds."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p99_9_ms: float
    max_ms: float

    @classmethod
    def from_histogram(cls, histogram: HdrHistogram) -> LatencySummary:
        count = histogram.get_total_count()
        if count == 0:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)

        def milliseconds(percentile: float) -> float:
            return float(histogram.get_value_at_percentile(percentile)) / 1000.0

        return cls(
            count=count,
            p50_ms=milliseconds(50.0),
            p90_ms=milliseconds(90.0),
            p99_ms=milliseconds(99.0),
            p99_9_ms=milliseconds(99.9),
            max_ms=float(histogram.get_max_value()) / 1000.0,
        )


_EMPTY_SUMMARY = LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True, slots=True)
class BenchReport:
    """What one target achieved during the measured window (warmup excluded).

    `count` is measured requests that finished (successfully or not); `errors` those that got
    an error reply, lost their connection or timed out. Throughput counts successes only, over
    the time from the end of warmup to the last measured reply.
    """

    target: str
    count: int
    errors: int
    elapsed_seconds: float
    throughput_ops_per_second: float
    latency: LatencySummary
    reads: LatencySummary
    writes: LatencySummary
    read_misses: int = 0
    scheduler_lag: LatencySummary | None = None
    preload_errors: int = 0
    first_error: str | None = None
    failure: str | None = None
    """Set when the target could not be measured at all (e.g. connection refused)."""

    @classmethod
    def failed(cls, target: str, reason: str) -> BenchReport:
        return cls(
            target=target,
            count=0,
            errors=0,
            elapsed_seconds=0.0,
            throughput_ops_per_second=0.0,
            latency=_EMPTY_SUMMARY,
            reads=_EMPTY_SUMMARY,
            writes=_EMPTY_SUMMARY,
            failure=reason,
        )


class ProgressListener(Protocol):
    """Receives progress while a target runs (the terminal progress bar implements it)."""

    def target_started(
        self, target: str, planned_seconds: float | None, planned_requests: int | None
    ) -> None: ...

    def target_progress(self, elapsed_seconds: float, completed_requests: int) -> None: ...

    def target_finished(self) -> None: ...


def new_latency_histogram() -> HdrHistogram:
    """An empty histogram with the bench's fixed range and precision (microseconds)."""
    return HdrHistogram(
        LOWEST_LATENCY_MICROSECONDS, HIGHEST_LATENCY_MICROSECONDS, SIGNIFICANT_DIGITS
    )


class CommandTemplates:
    """GET and SET commands pre-encoded up to the key index.

    Keys are fixed-width and the value never changes, so one `%` formatting produces a whole
    RESP command: a single allocation per request, and the value is never re-encoded.
    """

    def __init__(self, value: bytes) -> None:
        key_format = KEY_FORMAT.encode()
        key_length = len(KEY_FORMAT % 0)
        self.get = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (key_length, key_format)
        escaped_value = value.replace(b"%", b"%%")
        self.set = b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            key_length,
            key_format,
            len(value),
            escaped_value,
        )


class _Client:
    """One connection's share of the load; callbacks are bound once to avoid per-request work."""

    __slots__ = (
        "run",
        "connection",
        "start_times",
        "read_flags",
        "backlog",
        "on_reply",
        "alive",
        "node_index",
    )

    def __init__(self, run: _TargetRun, connection: RespConnection, node_index: int = -1) -> None:
        self.run = run
        self.node_index = node_index
        self.connection = connection
        self.start_times: deque[float] = deque()
        self.read_flags: deque[bool] = deque()
        self.backlog: deque[tuple[float, bool, int]] = deque()
        self.on_reply = self._on_reply
        self.alive = True

    def transmit(self, start_time: float, is_read: bool, key_index: int) -> None:
        """Write one request now; `start_time` is when its latency clock started."""
        run = self.run
        payload = (run.get_template if is_read else run.set_template) % key_index
        try:
            self.connection.send_encoded(payload, self.on_reply)
        except RespConnectionError as error:
            now = time.perf_counter()
            run.complete(start_time, is_read, error, now)
            self.fail_backlog(error, now)
            return
        self.start_times.append(start_time)
        self.read_flags.append(is_read)

    def issue_next(self, now: float) -> None:
        """Closed loop: send the next operation, its latency clock starting now."""
        run = self.run
        if now >= run.measure_start:
            run.measured_issued += 1
        is_read, key_index = run.next_operation(self.node_index)
        run.outstanding += 1
        self.transmit(now, is_read, key_index)

    def submit(self, intended_start: float, is_read: bool, key_index: int) -> None:
        """Open loop: send now if the pipeline has room, else queue (the clock already runs)."""
        self.run.outstanding += 1
        if not self.alive:
            self.run.complete(
                intended_start, is_read, RespConnectionError("connection lost"), time.perf_counter()
            )
        elif len(self.start_times) < self.run.pipeline and not self.backlog:
            self.transmit(intended_start, is_read, key_index)
        else:
            self.backlog.append((intended_start, is_read, key_index))

    def fail_backlog(self, error: RespConnectionError, now: float) -> None:
        """The connection is gone: count every queued request as failed, accept no more."""
        self.alive = False
        while self.backlog:
            start_time, is_read, _ = self.backlog.popleft()
            self.run.complete(start_time, is_read, error, now)

    def _on_reply(self, reply: object) -> None:
        now = time.perf_counter()
        run = self.run
        run.complete(self.start_times.popleft(), self.read_flags.popleft(), reply, now)
        if isinstance(reply, RespConnectionError):
            self.fail_backlog(reply, now)
        elif run.closed_loop:
            if run.may_issue(now):
                self.issue_next(now)
        else:
            if self.backlog:
                self.transmit(*self.backlog.popleft())
            if now >= run.next_intended_start:
                run.dispatch_due(now)
        if run.outstanding == 0:
            run.finish_if_idle()


class _TargetRun:
    """The state of measuring one target; all counters are touched from the event loop only."""

    def __init__(
        self,
        config: BenchConfig,
        connections: Sequence[RespConnection],
        routing: _SmartRouting | None = None,
    ) -> None:
        self.config = config
        self.routing = routing
        self.closed_loop = config.mode == "closed"
        self.pipeline = config.pipeline
        self.request_limit = config.request_limit
        self.operations = OperationStream(config.workload)
        templates = CommandTemplates(
            make_value(config.workload.value_size_bytes, config.workload.seed)
        )
        self.get_template = templates.get
        self.set_template = templates.set
        self.read_histogram = new_latency_histogram()
        self.write_histogram = new_latency_histogram()
        self.lag_histogram = new_latency_histogram()
        self._record_read = self.read_histogram.record_value
        self._record_write = self.write_histogram.record_value
        self.start_time = 0.0
        self.measure_start = math.inf
        self.deadline = math.inf
        self.measured_issued = 0
        self.completed = 0
        self.errors = 0
        self.read_misses = 0
        self.first_error: str | None = None
        self.last_completion = 0.0
        self.outstanding = 0
        self.stopping = False
        self.schedule_finished = False
        self.schedule_index = 0
        self.next_intended_start = math.inf
        rate_per_second = config.rate_per_second
        self.interval_seconds = 1.0 / rate_per_second if rate_per_second else math.inf
        self._record_lag = self.lag_histogram.record_value
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.clients = [
            _Client(self, connection, index % routing.node_count if routing else -1)
            for index, connection in enumerate(connections)
        ]

    def next_operation(self, node_index: int) -> tuple[bool, int]:
        """The next operation; under smart routing, one whose key `node_index` owns."""
        routing = self.routing
        if routing is None or node_index < 0:
            return self.operations.next_operation()
        owners = routing.key_owners
        for _ in range(ROUTING_DRAWS_MAX):
            is_read, key_index = self.operations.next_operation()
            if owners[key_index] == node_index:
                return is_read, key_index
        return is_read, key_index

    def complete(self, start_time: float, is_read: bool, reply: object, now: float) -> None:
        """Account for one finished request (reply, error reply, or failure)."""
        self.outstanding -= 1
        if start_time < self.measure_start:
            return
        self.completed += 1
        self.last_completion = now
        if isinstance(reply, Exception):
            self.errors += 1
            if self.first_error is None:
                self.first_error = f"{type(reply).__name__}: {reply}"
            return
        microseconds = int((now - start_time) * 1_000_000)
        if microseconds > HIGHEST_LATENCY_MICROSECONDS:
            microseconds = HIGHEST_LATENCY_MICROSECONDS
        if is_read:
            self._record_read(microseconds)
            if reply is None:
                self.read_misses += 1
        else:
            self._record_write(microseconds)

    def may_issue(self, now: float) -> bool:
        """Closed loop: whether another request may start now; latches `stopping` once false."""
        if self.stopping:
            return False
        if now >= self.deadline or self.measured_issued >= self.request_limit:
            self.stopping = True
            return False
        return True

    def finish_if_idle(self) -> None:
        if self.outstanding == 0 and (self.closed_loop or self.schedule_finished):
            if not self.done.done():
                self.done.set_result(None)

    async def execute(self, progress: ProgressListener | None) -> None:
        config = self.config
        self.start_time = time.perf_counter()
        self.measure_start = self.start_time + config.warmup_seconds
        self.deadline = self.measure_start + config.time_limit_seconds
        progress_task = None
        if progress is not None:
            progress_task = asyncio.create_task(self._report_progress(progress))
        try:
            if self.closed_loop:
                now = time.perf_counter()
                for _ in range(self.pipeline):
                    for client in self.clients:
                        if self.may_issue(now):
                            client.issue_next(now)
                await asyncio.wait({self.done}, timeout=max(0.0, self.deadline - now))
                self.stopping = True
            else:
                self.next_intended_start = self.start_time
                await self._run_schedule()
            self.finish_if_idle()
            await self._drain()
        finally:
            if progress_task is not None:
                progress_task.cancel()

    def dispatch_due(self, now: float) -> None:
        """Open loop: hand out every request whose intended start is <= now.

        Called by the schedule timer and also from reply callbacks: while replies flow, that
        dispatches with sub-millisecond precision without a busy-waiting timer.
        """
        if self.schedule_finished:
            return
        clients = self.clients
        client_count = len(clients)
        schedule_index = self.schedule_index
        intended_start = self.next_intended_start
        while intended_start <= now:
            if intended_start >= self.deadline:
                self.schedule_finished = True
                break
            if intended_start >= self.measure_start:
                if self.measured_issued >= self.request_limit:
                    self.schedule_finished = True
                    break
                self.measured_issued += 1
                lag_microseconds = int((now - intended_start) * 1_000_000)
                self._record_lag(min(lag_microseconds, HIGHEST_LATENCY_MICROSECONDS))
            client = clients[schedule_index % client_count]
            is_read, key_index = self.next_operation(client.node_index)
            client.submit(intended_start, is_read, key_index)
            schedule_index += 1
            intended_start = self.start_time + schedule_index * self.interval_seconds
        self.schedule_index = schedule_index
        self.next_intended_start = intended_start

    async def _run_schedule(self) -> None:
        """Open loop: wake up for the next intended start until time or count runs out."""
        while True:
            self.dispatch_due(time.perf_counter())
            if self.schedule_finished or self.next_intended_start >= self.deadline:
                self.schedule_finished = True
                return
            delay_seconds = self.next_intended_start - time.perf_counter()
            await asyncio.sleep(max(delay_seconds, MINIMUM_TIMER_SECONDS))

    async def _drain(self) -> None:
        """Wait for replies still in flight; abort connections whose replies never come."""
        if self.done.done():
            return
        await asyncio.wait({self.done}, timeout=self.config.drain_timeout_seconds)
        if self.done.done():
            return
        reason = f"no reply within the {self.config.drain_timeout_seconds:g} s drain timeout"
        for client in self.clients:
            client.connection.abort(reason)
        # Aborting fails every pending callback, which counts the requests as errors.
        await asyncio.wait({self.done}, timeout=1.0)

    async def _report_progress(self, progress: ProgressListener) -> None:
        while True:
            progress.target_progress(time.perf_counter() - self.start_time, self.completed)
            await asyncio.sleep(PROGRESS_INTERVAL_SECONDS)

    def report(self, target: str, preload_errors: int) -> BenchReport:
        total_histogram = new_latency_histogram()
        total_histogram.add(self.read_histogram)
        total_histogram.add(self.write_histogram)
        if self.completed:
            elapsed_seconds = self.last_completion - self.measure_start
        else:
            elapsed_seconds = time.perf_counter() - self.measure_start
        elapsed_seconds = max(elapsed_seconds, 1e-9)
        successes = self.completed - self.errors
        return BenchReport(
            target=target,
            count=self.completed,
            errors=self.errors,
            elapsed_seconds=elapsed_seconds,
            throughput_ops_per_second=successes / elapsed_seconds,
            latency=LatencySummary.from_histogram(total_histogram),
            reads=LatencySummary.from_histogram(self.read_histogram),
            writes=LatencySummary.from_histogram(self.write_histogram),
            read_misses=self.read_misses,
            scheduler_lag=(
                None if self.closed_loop else LatencySummary.from_histogram(self.lag_histogram)
            ),
            preload_errors=preload_errors,
            first_error=self.first_error,
        )


ROUTING_DRAWS_MAX = 256
"""Draws per operation before a smart client gives up finding a key its node owns."""


@dataclass(frozen=True, slots=True)
class _SmartRouting:
    """Which node owns each workload key, from a quorumdb node's partition map.

    Client i is bound to node i mod N and draws only keys that node owns (rejection
    sampling keeps the workload's distribution within each node's keys), so every request
    reaches its owner directly, as `quorumdb.client.Client` does.
    """

    endpoints: tuple[Endpoint, ...]
    key_owners: list[int]

    @property
    def node_count(self) -> int:
        return len(self.endpoints)


async def _smart_routing(endpoint: Endpoint, config: BenchConfig) -> _SmartRouting:
    from quorumdb.client._routing import ClientMap

    connection = await RespConnection.open(
        endpoint.host, endpoint.port, config.connect_timeout_seconds
    )
    try:
        document = await connection.execute("QUORUMDB.MAP")
    finally:
        connection.close()
    if not isinstance(document, bytes):
        raise ValueError(f"{endpoint} did not return a partition map: {document!r}")
    partition_map = ClientMap.parse(document)
    node_ids = sorted(partition_map.nodes)
    endpoints = tuple(
        Endpoint(partition_map.nodes[node_id].host, partition_map.nodes[node_id].port)
        for node_id in node_ids
    )
    position = {node_id: index for index, node_id in enumerate(node_ids)}
    keyspace = config.keyspace or "default"
    key_owners = [
        position[partition_map.owner(keyspace, (KEY_FORMAT % index).encode()).node_id]  # type: ignore[union-attr]
        for index in range(config.workload.key_count)
    ]
    return _SmartRouting(endpoints, key_owners)


async def _open_connections(
    endpoints: Sequence[Endpoint], count: int, timeout_seconds: float
) -> list[RespConnection]:
    """`count` connections dealt round-robin over the endpoints; all or none."""
    results = await asyncio.gather(
        *(
            RespConnection.open(endpoint.host, endpoint.port, timeout_seconds)
            for endpoint in (endpoints[index % len(endpoints)] for index in range(count))
        ),
        return_exceptions=True,
    )
    connections = [result for result in results if isinstance(result, RespConnection)]
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        for connection in connections:
            connection.close()
        raise failures[0]
    return connections


async def _select_keyspace(keyspace: str, connections: Sequence[RespConnection]) -> str | None:
    """Send `QUORUMDB.KEYSPACE keyspace` on every connection; the first refusal, or None."""
    payload = encode_command("QUORUMDB.KEYSPACE", keyspace)
    replies = await asyncio.gather(
        *(connection.execute_encoded(payload) for connection in connections)
    )
    for reply in replies:
        if isinstance(reply, Exception):
            return f"cannot select keyspace {keyspace!r}: {reply}"
    return None


async def _preload(config: BenchConfig, connections: Sequence[RespConnection]) -> int:
    """Write every key once, pipelined in batches over all connections; returns error replies."""
    workload = config.workload
    set_template = CommandTemplates(make_value(workload.value_size_bytes, workload.seed)).set
    stride = PRELOAD_BATCH_SIZE * len(connections)

    async def load(connection_index: int) -> int:
        connection = connections[connection_index]
        errors = 0
        for batch_start in range(connection_index * PRELOAD_BATCH_SIZE, workload.key_count, stride):
            batch_end = min(batch_start + PRELOAD_BATCH_SIZE, workload.key_count)
            replies = await connection.execute_pipeline(
                [set_template % key_index for key_index in range(batch_start, batch_end)]
            )
            errors += sum(1 for reply in replies if isinstance(reply, Exception))
        return errors

    error_counts = await asyncio.gather(*(load(index) for index in range(len(connections))))
    return sum(error_counts)


def _planned_work(config: BenchConfig) -> tuple[float | None, int | None]:
    """(planned seconds, planned requests) for progress: time when a duration bounds the run."""
    if config.duration_seconds is None and config.request_count is not None:
        return None, config.request_count
    return config.warmup_seconds + config.time_limit_seconds, None


async def _run_target(
    config: BenchConfig, target: str, progress: ProgressListener | None
) -> BenchReport:
    endpoints = parse_target(target)
    routing: _SmartRouting | None = None
    if target.strip().startswith("quorumdb://"):
        try:
            routing = await _smart_routing(endpoints[0], config)
        except (OSError, TimeoutError, RespConnectionError, ValueError, KeyError) as error:
            return BenchReport.failed(target, f"cannot fetch the partition map: {error!r}")
        endpoints = list(routing.endpoints)
    try:
        connections = await _open_connections(
            endpoints, config.clients, config.connect_timeout_seconds
        )
    except (OSError, TimeoutError) as error:
        return BenchReport.failed(target, f"cannot connect: {error or type(error).__name__}")
    try:
        if config.keyspace is not None:
            try:
                refusal = await _select_keyspace(config.keyspace, connections)
            except RespConnectionError as error:
                refusal = f"cannot select keyspace {config.keyspace!r}: {error}"
            if refusal is not None:
                return BenchReport.failed(target, refusal)
        preload_errors = 0
        if config.preload:
            try:
                preload_errors = await asyncio.wait_for(
                    _preload(config, connections), config.max_duration_seconds
                )
            except (RespConnectionError, TimeoutError) as error:
                return BenchReport.failed(target, f"preload failed: {error!r}")
        run = _TargetRun(config, connections, routing)
        if progress is not None:
            progress.target_started(target, *_planned_work(config))
        try:
            await run.execute(progress)
        finally:
            if progress is not None:
                progress.target_finished()
        return run.report(target, preload_errors)
    finally:
        for connection in connections:
            connection.close()
        await asyncio.wait(
            [asyncio.ensure_future(connection.wait_closed()) for connection in connections],
            timeout=1.0,
        )


async def run_bench_async(
    config: BenchConfig, progress: ProgressListener | None = None
) -> list[BenchReport]:
    """Measure each target in turn on the running event loop; one report per target."""
    return [await _run_target(config, target, progress) for target in config.targets]


def run_bench(config: BenchConfig, progress: ProgressListener | None = None) -> list[BenchReport]:
    """Measure each target in turn (on uvloop when installed); one report per target."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_bench_async(config, progress))
    return uvloop.run(run_bench_async(config, progress))
