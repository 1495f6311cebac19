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

A `quorumdb://` target is routed like the Python client routes (`routing.py`): every request
goes to its key's owner by the partition map, and a request that meets a stale map (REDIRECT:
the partition moved or its leader failed over), an owner the node could not reach
(UNAVAILABLE) or a lost or refused connection is retried, after the map is fetched again from
any live node, at its key's owner by that map: up to `retries` times, with a short backoff.
Only a request that still fails counts as an error; its latency, like a retried request's,
runs from its (intended) start through every attempt. A client whose node went away connects
to another owner. `redis://` targets are never retried: a plain Redis has no map.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections import Counter, deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol
from urllib.parse import urlsplit

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

from quorumdb.bench.resp_client import RespConnection, RespConnectionError, encode_command
from quorumdb.bench.routing import (
    DEFAULT_RETRIES,
    DEFAULT_RETRY_BACKOFF_SECONDS,
    MAP_REFRESH_INTERVAL_SECONDS,
    NO_OWNER,
    ClusterRouting,
    is_retryable,
    retry_delay,
)
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
    request goes straight to its key's owner, following map changes (see `_cluster_routing`).
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
    retries: int = DEFAULT_RETRIES
    """`quorumdb://` targets: times a request is retried (redirect, unavailable owner, lost
    connection) before it counts as an error; 0 never retries."""
    retry_backoff_seconds: float = DEFAULT_RETRY_BACKOFF_SECONDS
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
        if self.retries < 0 or self.retry_backoff_seconds < 0:
            raise ValueError("retries and retry_backoff_seconds must be >= 0")
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
    an error reply, lost their connection or timed out (after their retries, for
    `quorumdb://` targets). Throughput counts successes only, over the time from the end of
    warmup to the last measured reply. `retries` counts the attempts after a first one of
    measured requests; `map_refreshes` how often the partition map was fetched during the run.
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
    retries: int = 0
    map_refreshes: int = 0
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


@dataclass(eq=False, slots=True)
class _Retry:
    """A request on its way to another attempt (identity-hashed: one object per request)."""

    client: _Client
    start_time: float
    is_read: bool
    key_index: int
    error: Exception
    node_index: int
    """Where the last attempt went (NO_OWNER when unknown)."""
    attempts: int = 0


class _Client:
    """One connection's share of the load; callbacks are bound once to avoid per-request work.

    Under smart routing (`run.routing` set) a client belongs to one node (`node_index`)
    and draws keys that node owns, so its requests reach their owner directly. A request
    that fails in a way a newer map may fix goes to `_TargetRun.retry` instead of being
    counted. While the client has no usable connection (`paused`: it was lost, or the node
    owns no key any more) it keeps drawing the same keys and sends each one straight to its
    owner by the current map (`_TargetRun.send_direct`), as a client of a failed node would,
    until `_TargetRun.reconnect` gets it a connection again: to its node when that is back,
    or to another owner once the map gives its node's partitions away.
    """

    __slots__ = (
        "run",
        "connection",
        "start_times",
        "read_flags",
        "key_indexes",
        "backlog",
        "on_reply",
        "alive",
        "paused",
        "moving",
        "node_index",
    )

    def __init__(self, run: _TargetRun, connection: RespConnection, node_index: int = -1) -> None:
        self.run = run
        self.node_index = node_index
        self.connection = connection
        self.start_times: deque[float] = deque()
        self.read_flags: deque[bool] = deque()
        self.key_indexes: deque[int] = deque()
        self.backlog: deque[tuple[float, bool, int]] = deque()
        self.on_reply = self._on_reply
        self.alive = True
        """False once the connection is gone for good: later requests fail at once."""
        self.paused = False
        """Smart routing: `connection` is not to be used; requests go straight to owners."""
        self.moving = False
        """Smart routing: paused because the node owns no key any more; the connection is
        retired once its pending replies are in."""

    def transmit(self, start_time: float, is_read: bool, key_index: int) -> None:
        """Write one request now; `start_time` is when its latency clock started."""
        run = self.run
        if self.paused:
            run.send_direct(self, start_time, is_read, key_index)
            return
        payload = (run.get_template if is_read else run.set_template) % key_index
        try:
            self.connection.send_encoded(payload, self.on_reply)
        except RespConnectionError as error:
            if run.routing is not None:
                self.lose_connection()
                run.send_direct(self, start_time, is_read, key_index)
                return
            now = time.perf_counter()
            run.complete(start_time, is_read, error, now)
            self.fail_backlog(error, now)
            return
        self.start_times.append(start_time)
        self.read_flags.append(is_read)
        self.key_indexes.append(key_index)

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
        elif self.paused:
            self.run.send_direct(self, intended_start, is_read, key_index)
        elif len(self.start_times) < self.run.pipeline and not self.backlog:
            self.transmit(intended_start, is_read, key_index)
        else:
            self.backlog.append((intended_start, is_read, key_index))

    def fail_backlog(self, error: Exception, now: float) -> None:
        """The connection is gone: count every queued request as failed, accept no more."""
        self.alive = False
        while self.backlog:
            start_time, is_read, _ = self.backlog.popleft()
            self.run.complete(start_time, is_read, error, now)

    def _on_reply(self, reply: object) -> None:
        now = time.perf_counter()
        run = self.run
        start_time = self.start_times.popleft()
        is_read = self.read_flags.popleft()
        key_index = self.key_indexes.popleft()
        if run.routing is not None and isinstance(reply, Exception) and is_retryable(reply):
            self._retry(start_time, is_read, key_index, reply, now)
            return
        run.complete(start_time, is_read, reply, now)
        if isinstance(reply, RespConnectionError):
            self.fail_backlog(reply, now)
        elif run.closed_loop:
            if run.may_issue(now):
                self.issue_next(now)
        else:
            self._send_next_open_loop(now)
        self._after_reply(now)

    def _retry(
        self, start_time: float, is_read: bool, key_index: int, error: Exception, now: float
    ) -> None:
        """Smart routing: a reply that a newer map may fix (off the hot path)."""
        run = self.run
        failed_at = self.node_index
        if isinstance(error, RespConnectionError):
            self.lose_connection()
        run.retry(_Retry(self, start_time, is_read, key_index, error, failed_at), now)
        # Closed loop: the request keeps its slot until its retries end. Open loop: the
        # connection has room for what waits, or the schedule's next request.
        if not run.closed_loop:
            self._send_next_open_loop(now)
        self._after_reply(now)

    def _send_next_open_loop(self, now: float) -> None:
        """Open loop, a slot freed: what waits on this connection, or what is due."""
        if self.backlog:
            self.transmit(*self.backlog.popleft())
        if now >= self.run.next_intended_start:
            self.run.dispatch_due(now)

    def _after_reply(self, now: float) -> None:
        """A connection leaving its node reconnects once drained; an idle run ends."""
        run = self.run
        if self.moving and not self.start_times:
            run.reconnect(self)
        if run.outstanding == 0:
            run.finish_if_idle()

    def request_finished(self, now: float) -> None:
        """A request sent by the run (a retry, or a direct send) ended: closed loop, its
        slot is free."""
        run = self.run
        if run.closed_loop and run.may_issue(now):
            self.issue_next(now)
        if run.outstanding == 0:
            run.finish_if_idle()

    def set_node(self, node_index: int) -> None:
        """Belong to another node (-1: none, draw any key); `run.homed` counts per node."""
        homed = self.run.homed
        if self.node_index >= 0:
            homed[self.node_index] -= 1
        self.node_index = node_index
        if node_index >= 0:
            homed[node_index] += 1

    def pause(self) -> None:
        """Stop using the connection: what waited for it goes straight to the owners."""
        self.paused = True
        run = self.run
        while self.backlog:
            run.send_direct(self, *self.backlog.popleft())

    def lose_connection(self) -> None:
        """Smart routing: the connection broke; get another one (once)."""
        if self.paused and not self.moving:
            return
        self.run.reconnect(self)

    def move(self) -> None:
        """Smart routing: the node owns no key by the new map: draw any key meanwhile, and
        connect to another owner once the replies pending here are in."""
        self.set_node(-1)
        if self.paused:
            return  # reconnecting already; it will pick another node
        self.moving = True
        self.pause()
        if not self.start_times:
            self.run.reconnect(self)

    def attach(self, connection: RespConnection, node_index: int) -> None:
        """Smart routing: a new connection to `node_index`; requests use it again."""
        self.connection = connection
        self.set_node(node_index)
        self.paused = False
        self.moving = False


class _TargetRun:
    """The state of measuring one target; all counters are touched from the event loop only."""

    def __init__(
        self,
        config: BenchConfig,
        connections: Sequence[RespConnection],
        routing: ClusterRouting | None = None,
        homes: Sequence[int] = (),
    ) -> None:
        """`homes`: under smart routing, the node index each connection goes to."""
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
            _Client(self, connection, homes[index] if routing is not None else -1)
            for index, connection in enumerate(connections)
        ]
        # Smart routing only: retries, reconnections and map refreshes, all off the hot path.
        self.homed: Counter[int] = Counter(client.node_index for client in self.clients)
        self.retries = 0
        self.map_refreshes = 0
        self.abandoned = False
        self.finished = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._pending_retries: set[_Retry] = set()
        self._side: dict[int, RespConnection] = {}
        self._side_opening: dict[int, asyncio.Future[RespConnection]] = {}
        self._refreshing: asyncio.Future[None] | None = None
        self._last_refresh = -math.inf
        self._suspects: dict[int, float] = {}
        self._setup_payloads = _setup_payloads(config, redirects=True)

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
            self.finished = True
            if progress_task is not None:
                progress_task.cancel()
            for task in list(self._tasks):
                task.cancel()

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
        self._abandon(reason)
        # Aborting fails every pending callback, which counts the requests as errors.
        await asyncio.wait({self.done}, timeout=1.0)

    def _abandon(self, reason: str) -> None:
        """Stop waiting: every request still pending, retrying or queued is an error."""
        self.abandoned = True
        error = RespConnectionError(reason)
        now = time.perf_counter()
        for task in list(self._tasks):
            task.cancel()
        for client in self.clients:
            client.connection.abort(reason)
        for connection in self._side.values():
            connection.abort(reason)
        for request in list(self._pending_retries):
            self._give_up(request, now, error)
        for client in self.clients:
            client.fail_backlog(error, now)
        self.finish_if_idle()

    def connections(self) -> list[RespConnection]:
        """Every connection the run holds now (clients may have replaced theirs)."""
        return [client.connection for client in self.clients] + list(self._side.values())

    # --- smart routing: retries, reconnections, map refreshes -----------------------------

    def _spawn(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def retry(self, request: _Retry, now: float) -> None:
        """`request` failed in a way a newer map may fix: try again at its key's owner
        (after a map refresh and a backoff), or count it as an error once out of retries."""
        if self.abandoned or request.attempts >= self.config.retries:
            self._give_up(request, now)
            return
        request.attempts += 1
        if request.start_time >= self.measure_start:
            self.retries += 1
        self._pending_retries.add(request)
        self._spawn(self._resend(request))

    def send_direct(
        self, client: _Client, start_time: float, is_read: bool, key_index: int
    ) -> None:
        """A request of a client without a usable connection: to its key's owner by the
        current map, over the run's own connection there (a first attempt, not a retry)."""
        error = RespConnectionError("no connection to the client's node")
        request = _Retry(client, start_time, is_read, key_index, error, NO_OWNER)
        if self.abandoned:
            self._give_up(request, time.perf_counter())
            return
        self._pending_retries.add(request)
        self._spawn(self._resend(request))

    def _give_up(self, request: _Retry, now: float, error: Exception | None = None) -> None:
        self._pending_retries.discard(request)
        self.complete(request.start_time, request.is_read, error or request.error, now)
        request.client.request_finished(now)

    async def _resend(self, request: _Retry) -> None:
        routing = self.routing
        assert routing is not None
        owner = NO_OWNER
        try:
            if request.attempts > 0:
                # A node that answered REDIRECT has the newer map; one that failed is
                # asked last.
                prefer: int | None = request.node_index
                if isinstance(request.error, OSError):
                    self._suspect(request.node_index)
                    prefer = None
                delay = retry_delay(request.attempts, self.config.retry_backoff_seconds)
                if delay > 0:
                    await asyncio.sleep(delay)
                await asyncio.shield(self.refresh_map(prefer))
            owner = routing.key_owners[request.key_index]
            if owner == NO_OWNER:  # the map names no address for it: any owner forwards
                fallback = routing.choose_home(self.homed, self._current_suspects())
                if fallback is None:
                    raise RespConnectionError("no reachable node owns keys")
                owner = fallback
            request.node_index = owner
            connection = await self._side_connection(owner)
        except (OSError, TimeoutError) as failure:
            request.error = failure
            self._suspect(owner)
            self.retry(request, time.perf_counter())
            return
        except Exception as failure:  # a bug here must not hang the run: count the request
            self._give_up(request, time.perf_counter(), failure)
            return
        if request not in self._pending_retries:
            return  # given up meanwhile (the run was abandoned)
        payload = (self.get_template if request.is_read else self.set_template) % request.key_index
        on_reply = functools.partial(self._on_retry_reply, request, connection)
        try:
            connection.send_encoded(payload, on_reply)
        except RespConnectionError as failure:
            self._on_retry_reply(request, connection, failure)

    def _on_retry_reply(self, request: _Retry, connection: RespConnection, reply: object) -> None:
        if request not in self._pending_retries:
            return
        now = time.perf_counter()
        if isinstance(reply, Exception) and is_retryable(reply):
            request.error = reply
            if isinstance(reply, OSError) and self._side.get(request.node_index) is connection:
                del self._side[request.node_index]
            self.retry(request, now)
            return
        self._pending_retries.discard(request)
        self.complete(request.start_time, request.is_read, reply, now)
        request.client.request_finished(now)

    def _suspect(self, node_index: int) -> None:
        """A node whose connection failed: asked for the map last, no home for a while."""
        if node_index != NO_OWNER:
            self._suspects[node_index] = time.perf_counter()

    def _current_suspects(self) -> set[int]:
        now = time.perf_counter()
        return {node for node, at in self._suspects.items() if now - at < SUSPECT_SECONDS}

    def refresh_map(self, prefer: int | None = None) -> asyncio.Future[None]:
        """Fetch the map again (one fetch at a time, at most one per interval); callers
        await the returned future through `asyncio.shield`, since it is shared."""
        if self._refreshing is not None:
            return self._refreshing
        if time.perf_counter() - self._last_refresh < MAP_REFRESH_INTERVAL_SECONDS:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        refreshing = asyncio.ensure_future(self._refresh(prefer))
        self._refreshing = refreshing
        self._tasks.add(refreshing)
        refreshing.add_done_callback(self._tasks.discard)
        return refreshing

    async def _refresh(self, prefer: int | None) -> None:
        routing = self.routing
        assert routing is not None
        try:
            self.map_refreshes += 1
            order = routing.refresh_order(prefer, self._current_suspects())
            candidate = await routing.fetch(order, self.config.connect_timeout_seconds)
            if candidate is None or candidate.version == routing.version:
                return
            if await routing.adopt(candidate):
                self._spread_clients()
        finally:
            self._refreshing = None
            self._last_refresh = time.perf_counter()

    def _spread_clients(self) -> None:
        """After a map change, keep the clients spread over the owners by the keys they
        own, so every key is still drawn as often as before: a node's clients beyond its
        share (rounded up), all of them if it owns nothing, move to the owners with the
        fewest clients per key (a node that just took partitions over has none)."""
        routing = self.routing
        assert routing is not None
        owned = routing.owned_keys
        total = sum(owned)
        if not total:
            return
        share = len(self.clients) / total
        for node, count in list(self.homed.items()):
            if node < 0 or count <= 0:
                continue
            excess = count - math.ceil(owned[node] * share)
            for client in self.clients:
                if excess <= 0:
                    break
                if client.node_index == node and not client.paused:
                    client.move()
                    excess -= 1

    def reconnect(self, client: _Client) -> None:
        """Retire `client`'s connection and get it a new one in the background; its
        requests go straight to their owners meanwhile."""
        client.pause()
        client.moving = False
        old = client.connection
        if client.start_times:
            old.abort("connection lost")  # its pending replies fail at once
        else:
            old.close()
        if not (self.abandoned or self.finished):
            self._spawn(self._reconnect(client, old))

    async def _reconnect(self, client: _Client, old: RespConnection) -> None:
        """Back to the client's node once it answers, as long as the map says it owns
        keys; once it owns none (its partitions failed over or moved), to the owner with
        the fewest clients per key. The map is fetched again before each round, so a
        failover is noticed even when no request fails meanwhile."""
        routing = self.routing
        assert routing is not None
        # The old connection's pending replies pop the client's queues: let them all
        # arrive (abort delivers them on the next loop turn) before sending elsewhere.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(old.wait_closed(), 1.0)
        attempt = 0
        while not (self.abandoned or self.finished):
            await asyncio.shield(self.refresh_map())
            node = client.node_index
            if node >= 0 and not routing.owned_keys[node]:
                client.set_node(-1)
                node = -1
            tried = self._current_suspects()
            candidates = [node] if node >= 0 and node not in tried else []
            while node < 0 and (choice := routing.choose_home(self.homed, tried)) is not None:
                tried.add(choice)
                candidates.append(choice)
                if len(candidates) >= 3:
                    break
            for candidate in candidates:
                try:
                    connection = await self._connect(candidate)
                except (OSError, TimeoutError):
                    self._suspect(candidate)
                    continue
                if self.abandoned or self.finished:
                    connection.close()
                    return
                client.attach(connection, candidate)
                return
            attempt += 1
            await asyncio.sleep(retry_delay(attempt + 1, self.config.retry_backoff_seconds))

    async def _side_connection(self, node: int) -> RespConnection:
        """The run's connection to `node` for retries (opened once, shared)."""
        connection = self._side.get(node)
        if connection is not None and connection.is_open:
            return connection
        opening = self._side_opening.get(node)
        if opening is None:
            opening = asyncio.ensure_future(self._connect(node))
            self._side_opening[node] = opening
            opening.add_done_callback(functools.partial(self._side_opened, node))
        return await asyncio.shield(opening)

    def _side_opened(self, node: int, opening: asyncio.Future[RespConnection]) -> None:
        if self._side_opening.get(node) is opening:
            del self._side_opening[node]
        if opening.cancelled() or opening.exception() is not None:
            return
        connection = opening.result()
        if self.abandoned or self.finished:
            connection.close()
        else:
            self._side[node] = connection

    async def _connect(self, node: int) -> RespConnection:
        """A connection to `node` that gets REDIRECT and is in the configured keyspace."""
        assert self.routing is not None
        host, port = self.routing.endpoints[node]
        timeout_seconds = min(self.config.connect_timeout_seconds, RECONNECT_TIMEOUT_SECONDS)
        connection = await RespConnection.open(host, port, timeout_seconds)
        try:
            replies = await asyncio.wait_for(
                connection.execute_pipeline(self._setup_payloads), timeout_seconds
            )
        except BaseException:
            connection.close()
            raise
        refusals = [reply for reply in replies if isinstance(reply, Exception)]
        if refusals:
            connection.close()
            raise RespConnectionError(f"{host}:{port} refused the session setup: {refusals[0]}")
        return connection

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
            retries=self.retries,
            map_refreshes=self.map_refreshes,
        )


ROUTING_DRAWS_MAX = 256
"""Draws per operation before a smart client gives up finding a key its node owns."""

SUSPECT_SECONDS = 1.0
"""A node whose connection failed is asked for the map last, and not reconnected to, for
this long."""

RECONNECT_TIMEOUT_SECONDS = 1.0
"""Connection timeout (at most) of retries and reconnections: a host that is down must
not hold a retry for the whole `connect_timeout_seconds`."""


def _setup_payloads(config: BenchConfig, redirects: bool) -> list[bytes]:
    """What every connection sends before traffic: REDIRECT instead of forwarding (smart
    routing: a stale map must be noticed, as the Python client does), then the keyspace."""
    payloads = [encode_command("QUORUMDB.REDIRECTS", "ON")] if redirects else []
    if config.keyspace is not None:
        payloads.append(encode_command("QUORUMDB.KEYSPACE", config.keyspace))
    return payloads


async def _cluster_routing(
    endpoints: Sequence[Endpoint], config: BenchConfig
) -> ClusterRouting | str:
    """The partition map from the first target node that answers, or why there is none.

    Client i is then bound to owner i mod N (node-id order) and draws only keys that node
    owns (rejection sampling keeps the workload's distribution within each node's keys),
    so every request reaches its owner directly, as `quorumdb.client.Client` does."""
    keyspace = config.keyspace or "default"
    seeds = [(endpoint.host, endpoint.port) for endpoint in endpoints]
    routing = ClusterRouting(seeds, keyspace, config.workload.key_count)
    candidate = await routing.fetch(seeds, config.connect_timeout_seconds)
    if candidate is None:
        listed = ", ".join(str(endpoint) for endpoint in endpoints)
        return f"no node of {listed} answered with a map holding keyspace {keyspace!r}"
    try:
        await routing.adopt(candidate)
    except (ValueError, KeyError) as error:
        return f"unusable map: {error!r}"
    if not routing.owners():
        return f"the map names no reachable owner of keyspace {keyspace!r}"
    return routing


async def _open_connections(
    endpoints: Sequence[Endpoint], timeout_seconds: float
) -> list[RespConnection]:
    """One connection to each of `endpoints` (repeats allowed); all or none."""
    results = await asyncio.gather(
        *(
            RespConnection.open(endpoint.host, endpoint.port, timeout_seconds)
            for endpoint in endpoints
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


async def _send_setup(
    payloads: Sequence[bytes], connections: Sequence[RespConnection]
) -> str | None:
    """Send the setup commands on every connection; the first refusal, or None."""
    if not payloads:
        return None
    replies = await asyncio.gather(
        *(connection.execute_pipeline(payloads) for connection in connections)
    )
    for per_connection in replies:
        for reply in per_connection:
            if isinstance(reply, Exception):
                return str(reply)
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
    routing: ClusterRouting | None = None
    homes: list[int] = []
    if target.strip().startswith("quorumdb://"):
        found = await _cluster_routing(endpoints, config)
        if isinstance(found, str):
            return BenchReport.failed(target, f"cannot fetch the partition map: {found}")
        routing = found
        owners = routing.owners()
        homes = [owners[index % len(owners)] for index in range(config.clients)]
        addresses = [routing.endpoints[home] for home in homes]
        per_connection = [Endpoint(host, port) for host, port in addresses]
    else:
        per_connection = [endpoints[index % len(endpoints)] for index in range(config.clients)]
    try:
        connections = await _open_connections(per_connection, config.connect_timeout_seconds)
    except (OSError, TimeoutError) as error:
        return BenchReport.failed(target, f"cannot connect: {error or type(error).__name__}")
    run: _TargetRun | None = None
    try:
        try:
            refusal = await _send_setup(_setup_payloads(config, redirects=False), connections)
        except RespConnectionError as error:
            refusal = str(error)
        if refusal is not None:
            return BenchReport.failed(
                target, f"cannot select keyspace {config.keyspace!r}: {refusal}"
            )
        preload_errors = 0
        if config.preload:
            try:
                preload_errors = await asyncio.wait_for(
                    _preload(config, connections), config.max_duration_seconds
                )
            except (RespConnectionError, TimeoutError) as error:
                return BenchReport.failed(target, f"preload failed: {error!r}")
        if routing is not None:
            # After the preload, which writes every key through whichever node it reaches.
            redirects = [encode_command("QUORUMDB.REDIRECTS", "ON")]
            try:
                refusal = await _send_setup(redirects, connections)
            except RespConnectionError as error:
                refusal = str(error)
            if refusal is not None:
                return BenchReport.failed(target, f"cannot turn on redirects: {refusal}")
        run = _TargetRun(config, connections, routing, homes)
        if progress is not None:
            progress.target_started(target, *_planned_work(config))
        try:
            await run.execute(progress)
        finally:
            if progress is not None:
                progress.target_finished()
        return run.report(target, preload_errors)
    finally:
        to_close = set(connections) | set(run.connections() if run is not None else ())
        for connection in to_close:
            connection.close()
        await asyncio.wait(
            [asyncio.ensure_future(connection.wait_closed()) for connection in to_close],
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
