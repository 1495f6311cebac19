"""The `quorumdb check HISTORY` verb: every applicable history checker on one file.

A checker applies when the file holds what it judges: linearizability whenever there
are operations; acknowledged writes, read-your-writes and monotonic reads when some
key's write order can be inferred or some event carries a position; lost+found when
the file has `lost+found` records; convergence when it has `replica` records.
`--only` runs the named checkers even when nothing marks them applicable (an async
run that lost writes but recorded no lost+found must still be judged), `--skip`
leaves some out (e.g. linearizability for a mode that does not promise it).

Exit status: 0 when no checker found a violation, 1 otherwise, 2 when the file is
not a valid history. "Unknown" verdicts (the linearizability search's step limit)
are reported but are not violations.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from quorumdb.check.acknowledged_writes import check_acknowledged_writes, judged_keys
from quorumdb.check.convergence import check_convergence
from quorumdb.check.history import (
    HistoryFile,
    HistoryFormatError,
    check_values,
    load_history_file,
    pair_operations,
)
from quorumdb.check.kv_linearizability import check_history_linearizable
from quorumdb.check.linearizability import DEFAULT_STEP_LIMIT, Verdict
from quorumdb.check.lost_found import check_lost_found
from quorumdb.check.monotonic_reads import check_monotonic_reads
from quorumdb.check.read_your_writes import SessionReport, check_read_your_writes
from quorumdb.check.write_order import inferred_orders

SHOWN_VIOLATIONS_DEFAULT = 5


@dataclass(slots=True)
class CheckerSummary:
    """One checker's outcome, the same shape for every checker."""

    name: str
    applicable: bool
    unit: str = ""  # what `judged` counts: keys, reads, partitions
    judged: int = 0
    unknown: int = 0
    skipped: int = 0
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # unknown verdicts, extra counts
    reason: str = ""  # why it did not apply

    def to_dict(self) -> dict[str, object]:
        return {
            "applicable": self.applicable,
            "reason": self.reason,
            "unit": self.unit,
            "judged": self.judged,
            "violation_count": len(self.violations),
            "unknown": self.unknown,
            "skipped": self.skipped,
            "violations": self.violations,
            "notes": self.notes,
        }


@dataclass(frozen=True, slots=True)
class _Options:
    step_limit: int


def _linearizability(history: HistoryFile, options: _Options) -> CheckerSummary:
    report = check_history_linearizable(history.events, options.step_limit)
    unknown = report.keys_with(Verdict.UNKNOWN)
    judged = len(report.results) - len(unknown)
    summary = CheckerSummary("linearizability", True, "keys", judged)
    summary.unknown = len(unknown)
    summary.violations = report.violations
    summary.notes = [f"unknown: key {key!r}: {report.results[key].detail}" for key in unknown]
    return summary


def _acknowledged_writes(history: HistoryFile, options: _Options) -> CheckerSummary:
    keys = judged_keys(history.events)
    summary = CheckerSummary("acknowledged-writes", True, "keys", len(keys))
    summary.violations = [str(item) for item in check_acknowledged_writes(history.events)]
    return summary


def _session(name: str, report: SessionReport) -> CheckerSummary:
    summary = CheckerSummary(name, True, "reads", report.judged, skipped=report.skipped)
    summary.violations = [str(item) for item in report.violations]
    return summary


def _read_your_writes(history: HistoryFile, options: _Options) -> CheckerSummary:
    return _session("read-your-writes", check_read_your_writes(history.events))


def _monotonic_reads(history: HistoryFile, options: _Options) -> CheckerSummary:
    return _session("monotonic-reads", check_monotonic_reads(history.events))


def _lost_found(history: HistoryFile, options: _Options) -> CheckerSummary:
    report = check_lost_found(history.events, history.lost_found)
    summary = CheckerSummary("lost+found", True, "keys", report.judged_keys)
    summary.skipped = report.skipped_keys
    summary.violations = [str(item) for item in report.violations]
    summary.notes = [
        f"lost={report.lost} accounted={report.accounted}"
        f" listed-unacknowledged={report.unacknowledged_listed}"
        f" listed-still-present={report.present_listed}"
        f" listed-unmatched={report.unmatched_listed}"
    ]
    return summary


def _convergence(history: HistoryFile, options: _Options) -> CheckerSummary:
    report = check_convergence(history.replicas)
    summary = CheckerSummary("convergence", True, "partitions", report.judged)
    summary.violations = [str(item) for item in report.violations]
    summary.notes = [f"single-replica partitions={report.single_replica}"]
    return summary


def _has_orderable_keys(history: HistoryFile) -> str:
    """Empty when the session checkers have something to judge, else why not."""
    if any(event.position is not None for event in history.events):
        return ""
    if inferred_orders(pair_operations(history.events)):
        return ""
    return "no single-writer keys and no positions"


_Run = Callable[[HistoryFile, _Options], CheckerSummary]
_Applies = Callable[[HistoryFile], str]  # empty: applicable; else the reason it is not


def _has_events(history: HistoryFile) -> str:
    return "" if history.events else "no operations"


def _has_single_writer_keys(history: HistoryFile) -> str:
    return "" if judged_keys(history.events) else "no single-writer put/delete keys"


def _has_lost_found(history: HistoryFile) -> str:
    return "" if history.lost_found else "no lost+found records"


def _has_replicas(history: HistoryFile) -> str:
    return "" if history.replicas else "no replica records"


CHECKERS: dict[str, tuple[_Applies, _Run]] = {
    "linearizability": (_has_events, _linearizability),
    "acknowledged-writes": (_has_single_writer_keys, _acknowledged_writes),
    "read-your-writes": (_has_orderable_keys, _read_your_writes),
    "monotonic-reads": (_has_orderable_keys, _monotonic_reads),
    "lost+found": (_has_lost_found, _lost_found),
    "convergence": (_has_replicas, _convergence),
}


def run_checkers(
    history: HistoryFile,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    step_limit: int = DEFAULT_STEP_LIMIT,
) -> list[CheckerSummary]:
    """Each checker's summary, in `CHECKERS` order; `only` forces, `skip` leaves out."""
    options = _Options(step_limit)
    summaries: list[CheckerSummary] = []
    for name, (applies, run_checker) in CHECKERS.items():
        if name in skip or (only and name not in only):
            summaries.append(CheckerSummary(name, False, reason="not selected"))
            continue
        reason = "" if name in only else applies(history)
        if reason:
            summaries.append(CheckerSummary(name, False, reason=reason))
            continue
        summaries.append(run_checker(history, options))
    return summaries


# --- printing -------------------------------------------------------------------------------


def _table(summaries: Sequence[CheckerSummary]) -> list[str]:
    header = f"{'checker':<20} {'judged':>16} {'violations':>10} {'unknown':>8} {'skipped':>8}"
    lines = [header]
    for item in summaries:
        if not item.applicable:
            lines.append(f"{item.name:<20} {'-':>16}  not applicable: {item.reason}")
            continue
        judged = f"{item.judged} {item.unit}"
        lines.append(
            f"{item.name:<20} {judged:>16} {len(item.violations):>10}"
            f" {item.unknown:>8} {item.skipped:>8}"
        )
    return lines


def render_text(
    path: str, history: HistoryFile, summaries: Sequence[CheckerSummary], shown: int
) -> str:
    lines = [
        f"history: {path}: {len(history.events)} events,"
        f" {len(history.lost_found)} lost+found records, {len(history.replicas)} replica records",
        *_table(summaries),
    ]
    for item in summaries:
        for note in item.notes:
            lines.append(f"{item.name}: {note}")
        for violation in item.violations[:shown]:
            lines.append(f"{item.name}: violation: {violation}")
        hidden = len(item.violations) - shown
        if hidden > 0:
            lines.append(f"{item.name}: {hidden} more violations (--json lists all)")
    total = sum(len(item.violations) for item in summaries)
    lines.append(f"violations: {total}")
    return "\n".join(lines) + "\n"


def render_json(path: str, history: HistoryFile, summaries: Sequence[CheckerSummary]) -> str:
    document = {
        "history": path,
        "events": len(history.events),
        "lost_found_records": len(history.lost_found),
        "replica_records": len(history.replicas),
        "checkers": {item.name: item.to_dict() for item in summaries},
        "violations": sum(len(item.violations) for item in summaries),
    }
    return json.dumps(document, indent=2) + "\n"


# --- the verb -------------------------------------------------------------------------------


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CHECKERS]
    if unknown:
        choices = ", ".join(CHECKERS)
        raise argparse.ArgumentTypeError(f"unknown checker {unknown[0]!r} (choose from {choices})")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("history", metavar="HISTORY", type=Path, help="a JSON Lines history file")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--only",
        type=_names,
        default=[],
        metavar="NAMES",
        help="comma-separated checkers to run, even where nothing marks them applicable: "
        + ", ".join(CHECKERS),
    )
    parser.add_argument(
        "--skip",
        type=_names,
        default=[],
        metavar="NAMES",
        help="comma-separated checkers to leave out",
    )
    parser.add_argument(
        "--step-limit",
        type=int,
        default=DEFAULT_STEP_LIMIT,
        help="linearizability search steps per key before it says unknown (default %(default)s)",
    )
    parser.add_argument(
        "--show",
        type=int,
        default=SHOWN_VIOLATIONS_DEFAULT,
        help="violations printed per checker (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    path = str(args.history)
    try:
        history = load_history_file(args.history)
        check_values(history.events)
        summaries = run_checkers(history, args.only, args.skip, args.step_limit)
    except (OSError, HistoryFormatError) as error:
        print(f"error: {path}: {error}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(render_json(path, history, summaries))
    else:
        sys.stdout.write(render_text(path, history, summaries, args.show))
    return 1 if any(item.violations for item in summaries) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="quorumdb check", description="Run the history checkers on a recorded history."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
