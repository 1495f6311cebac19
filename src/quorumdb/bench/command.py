"""The `quorumdb bench` command line: flags -> BenchConfig -> run -> table or JSON."""

from __future__ import annotations

import argparse
import contextlib
import sys

from quorumdb.bench.report import TerminalProgress, print_table, render_json
from quorumdb.bench.routing import DEFAULT_RETRIES
from quorumdb.bench.runner import DEFAULT_DURATION_SECONDS, DEFAULT_TARGET, BenchConfig, run_bench
from quorumdb.bench.workload import DISTRIBUTIONS, WorkloadConfig

DESCRIPTION = """\
Measure throughput and latency of RESP servers (a real Redis or quorumdb nodes) with the same
client, one target after another. Closed loop measures what a server sustains; open loop sends
at a fixed rate and measures latency from each request's intended start, so queueing behind a
slow server is not hidden (coordinated omission). A quorumdb:// target is routed by the
cluster's partition map, which the bench follows when a partition moves or its leader fails
over: such requests are retried at the new owner.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bench flags to `parser` (the `quorumdb bench` subcommand or a standalone one)."""
    parser.add_argument(
        "--target",
        dest="targets",
        action="append",
        metavar="URL",
        help=(
            "server to measure, e.g. redis://127.0.0.1:6379; repeat to compare several targets "
            "in one run; join URLs with commas to spread clients over a cluster's nodes; "
            "quorumdb://HOST:PORT[,...] sends each request to its key's owner by the partition "
            f"map, following map changes (default: {DEFAULT_TARGET})"
        ),
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=50,
        help="concurrent connections per target (default: 50)",
    )
    parser.add_argument(
        "--mode",
        choices=("closed", "open"),
        default="closed",
        help=(
            "closed: each client sends its next request when a reply arrives; open: requests "
            "are sent at --rate regardless, latency counted from the intended send time "
            "(default: closed)"
        ),
    )
    parser.add_argument(
        "--rate",
        type=float,
        metavar="REQUESTS_PER_SECOND",
        help="open loop only: offered load in requests per second over all clients",
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help=(
            "measured time per target after warmup; with --requests the run stops at whichever "
            f"comes first (default: {DEFAULT_DURATION_SECONDS:g} s when neither is given)"
        ),
    )
    parser.add_argument(
        "--requests",
        type=int,
        metavar="COUNT",
        help="measured requests per target (the run is still capped at 600 s)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="traffic sent before measuring starts, not counted (default: 0)",
    )
    parser.add_argument(
        "--read-ratio",
        type=float,
        default=0.5,
        metavar="FRACTION",
        help="share of GETs, 0..1; the rest are SETs (default: 0.5)",
    )
    parser.add_argument(
        "--keys",
        type=int,
        default=100_000,
        metavar="COUNT",
        help="number of distinct keys key:000000000000.. (default: 100000)",
    )
    parser.add_argument(
        "--distribution",
        choices=DISTRIBUTIONS,
        default="uniform",
        help="key popularity: uniform, or zipfian with a few hot keys (default: uniform)",
    )
    parser.add_argument(
        "--zipf-exponent",
        type=float,
        default=0.99,
        help="skew of the zipfian distribution; higher is hotter (default: 0.99)",
    )
    parser.add_argument(
        "--value-size",
        type=int,
        default=100,
        metavar="BYTES",
        help="size of every written value (default: 100)",
    )
    parser.add_argument(
        "--pipeline",
        type=int,
        default=1,
        metavar="DEPTH",
        help="requests each client keeps in flight on its connection (default: 1)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the operation sequence; every target gets the same one (default: 0)",
    )
    parser.add_argument(
        "--preload",
        action="store_true",
        help="write every key once before measuring so that reads hit",
    )
    parser.add_argument(
        "--keyspace",
        metavar="NAME",
        help=(
            "quorumdb keyspace to address: QUORUMDB.KEYSPACE NAME is sent on every connection "
            "before any traffic (default: send nothing, the node's default keyspace)"
        ),
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        metavar="COUNT",
        help=(
            "quorumdb:// targets: times a request is retried at its key's owner after a "
            "REDIRECT (partition moved, leader failed over), UNAVAILABLE or a lost connection, "
            "the partition map fetched again first; only then is it an error "
            f"(default: {DEFAULT_RETRIES}; 0: never)"
        ),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout instead of the table",
    )


def config_from_arguments(args: argparse.Namespace) -> BenchConfig:
    """Build the config; raises ValueError with a readable message on bad combinations."""
    if args.rate is not None and args.mode != "open":
        raise ValueError("--rate applies to --mode open only")
    workload = WorkloadConfig(
        key_count=args.keys,
        read_ratio=args.read_ratio,
        value_size_bytes=args.value_size,
        distribution=args.distribution,
        zipf_exponent=args.zipf_exponent,
        seed=args.seed,
    )
    return BenchConfig(
        targets=args.targets or [DEFAULT_TARGET],
        clients=args.clients,
        mode=args.mode,
        rate_per_second=args.rate,
        duration_seconds=args.duration,
        request_count=args.requests,
        pipeline=args.pipeline,
        workload=workload,
        warmup_seconds=args.warmup,
        preload=args.preload,
        keyspace=args.keyspace,
        retries=args.retries,
    )


def run(args: argparse.Namespace) -> int:
    """Run the bench; 0 when every target was measured, 1 if one could not be, 2 on bad flags.

    Error replies do not change the exit code: they are in the report.
    """
    try:
        config = config_from_arguments(args)
    except ValueError as error:
        print(f"quorumdb bench: {error}", file=sys.stderr)
        return 2
    progress = TerminalProgress.for_stream(sys.stderr)
    with progress if progress is not None else contextlib.nullcontext():
        reports = run_bench(config, progress)
    if args.json:
        print(render_json(reports, config))
    else:
        print_table(reports, config)
    return 1 if any(report.failure is not None for report in reports) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quorumdb bench", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
