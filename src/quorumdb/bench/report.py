"""Show bench results: a rich table for people, one JSON object for scripts, a progress bar.

The table puts every target on one row with a throughput ratio against the first target, since
the usual question is "how does quorumdb compare with the Redis measured in the same run".
"""

from __future__ import annotations

import dataclasses
import json
import sys
from types import TracebackType
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from quorumdb.bench.runner import BenchConfig, BenchReport, LatencySummary


def latency_to_json(summary: LatencySummary) -> dict[str, float | int]:
    return {
        "p50": summary.p50_ms,
        "p90": summary.p90_ms,
        "p99": summary.p99_ms,
        "p99_9": summary.p99_9_ms,
        "max": summary.max_ms,
        "count": summary.count,
    }


def config_to_json(config: BenchConfig) -> dict[str, Any]:
    """The run's settings, so a JSON result says what produced it."""
    return {
        "targets": list(config.targets),
        "clients": config.clients,
        "mode": config.mode,
        "rate_per_second": config.rate_per_second,
        "duration_seconds": config.duration_seconds,
        "request_count": config.request_count,
        "pipeline": config.pipeline,
        "warmup_seconds": config.warmup_seconds,
        "preload": config.preload,
        "keyspace": config.keyspace,
        "retries": config.retries,
        "workload": dataclasses.asdict(config.workload),
    }


def report_to_json(report: BenchReport) -> dict[str, Any]:
    """One target's result; latencies are in milliseconds."""
    result: dict[str, Any] = {
        "target": report.target,
        "throughput_ops_per_second": report.throughput_ops_per_second,
        "latency_ms": latency_to_json(report.latency),
        "reads": latency_to_json(report.reads),
        "writes": latency_to_json(report.writes),
        "errors": report.errors,
        "count": report.count,
        "elapsed_seconds": report.elapsed_seconds,
        "read_misses": report.read_misses,
        "preload_errors": report.preload_errors,
        "first_error": report.first_error,
        "retries": report.retries,
        "map_refreshes": report.map_refreshes,
        "failure": report.failure,
    }
    if report.scheduler_lag is not None:
        result["scheduler_lag_ms"] = latency_to_json(report.scheduler_lag)
    return result


def reports_to_json(reports: list[BenchReport], config: BenchConfig) -> dict[str, Any]:
    """The whole run as ONE JSON-ready object: `{"targets": [...], "config": {...}}`."""
    return {
        "targets": [report_to_json(report) for report in reports],
        "config": config_to_json(config),
    }


def render_json(reports: list[BenchReport], config: BenchConfig) -> str:
    return json.dumps(reports_to_json(reports, config), indent=2)


def _milliseconds(value: float) -> str:
    """Four significant digits at most, so latency columns stay narrow."""
    if value < 10:
        return f"{value:.3f}"
    if value < 100:
        return f"{value:.2f}"
    if value < 1000:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def build_table(reports: list[BenchReport], config: BenchConfig) -> Table:
    """One row per target; `ratio` is throughput divided by the first target's."""
    clients = f"{config.clients} client" + ("s" if config.clients != 1 else "")
    title = f"quorumdb bench: {config.mode} loop, {clients}"
    if config.mode == "open":
        title += f", {config.rate_per_second:g} req/s offered"
    if config.pipeline > 1:
        title += f", pipeline {config.pipeline}"
    workload = config.workload
    caption = (
        f"{workload.key_count} keys {workload.distribution}, reads {workload.read_ratio:.0%}, "
        f"values {workload.value_size_bytes} B; latency in ms"
    )
    if config.mode == "open":
        caption += " from intended start (coordinated omission corrected)"
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD)
    table.add_column("target", overflow="fold")
    for name in ("ops/s", "ratio", "count", "errors", "p50", "p90", "p99", "p99.9", "max"):
        table.add_column(name, justify="right")
    table.add_column("read p99", justify="right")
    table.add_column("write p99", justify="right")
    baseline = reports[0].throughput_ops_per_second if reports else 0.0
    for report in reports:
        if report.failure is not None:
            table.add_row(report.target, f"[red]{report.failure}[/red]", *[""] * 10)
            continue
        ratio = f"{report.throughput_ops_per_second / baseline:.2f}x" if baseline > 0 else "-"
        latency = report.latency
        errors = f"[red]{report.errors}[/red]" if report.errors else "0"
        table.add_row(
            report.target,
            f"{report.throughput_ops_per_second:,.0f}",
            ratio,
            f"{report.count:,}",
            errors,
            _milliseconds(latency.p50_ms),
            _milliseconds(latency.p90_ms),
            _milliseconds(latency.p99_ms),
            _milliseconds(latency.p99_9_ms),
            _milliseconds(latency.max_ms),
            _milliseconds(report.reads.p99_ms),
            _milliseconds(report.writes.p99_ms),
        )
    return table


def print_table(
    reports: list[BenchReport], config: BenchConfig, console: Console | None = None
) -> None:
    """Print the table, then the first error of any target that had errors, and the
    retries of any target that followed a map change."""
    if console is None:
        console = Console()
        if not console.is_terminal:
            # Pipes and logs default to 80 columns, which would squash the table.
            console = Console(width=max(console.width, 160))
    console.print(build_table(reports, config))
    for report in reports:
        if report.first_error:
            console.print(f"{report.target}: {report.errors} errors, first: {report.first_error}")
        if report.retries:
            console.print(
                f"{report.target}: {report.retries} retries after redirects, unavailable owners "
                f"or lost connections; partition map fetched {report.map_refreshes} times"
            )
        lag = report.scheduler_lag
        if lag is not None and lag.p99_ms > 5.0:
            console.print(
                f"{report.target}: the load generator fell behind its schedule "
                f"(p99 lag {lag.p99_ms:.1f} ms); latencies include that lag"
            )


class TerminalProgress:
    """A rich progress bar on stderr showing elapsed / planned time (or requests) per target.

    Use `TerminalProgress.for_stream()`: it gives None when the stream is not a terminal, so
    logs and pipes stay clean.
    """

    def __init__(self, stream: TextIO) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[done]}"),
            TimeElapsedColumn(),
            console=Console(file=stream),
            transient=True,
        )
        self._task: TaskID | None = None
        self._planned_seconds: float | None = None
        self._planned_requests: int | None = None

    @classmethod
    def for_stream(cls, stream: TextIO | None = None) -> TerminalProgress | None:
        stream = stream if stream is not None else sys.stderr
        return cls(stream) if stream.isatty() else None

    def __enter__(self) -> TerminalProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def target_started(
        self, target: str, planned_seconds: float | None, planned_requests: int | None
    ) -> None:
        self._planned_seconds = planned_seconds
        self._planned_requests = planned_requests
        total = planned_seconds if planned_seconds is not None else planned_requests
        self._task = self._progress.add_task(target, total=total, done="")

    def target_progress(self, elapsed_seconds: float, completed_requests: int) -> None:
        if self._task is None:
            return
        if self._planned_seconds is not None:
            self._progress.update(
                self._task,
                completed=min(elapsed_seconds, self._planned_seconds),
                done=f"{elapsed_seconds:.1f} / {self._planned_seconds:.1f} s",
            )
        else:
            self._progress.update(
                self._task,
                completed=completed_requests,
                done=f"{completed_requests:,} / {self._planned_requests or 0:,} requests",
            )

    def target_finished(self) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
