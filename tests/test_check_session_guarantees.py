"""Read-your-writes and monotonic reads against hand-written histories, good and bad."""

from __future__ import annotations

from history_script import Script
from quorumdb.check.monotonic_reads import check_monotonic_reads
from quorumdb.check.read_your_writes import SessionReport, check_read_your_writes

WRITER, READER, OTHER = 0, 1, 2


def ryw(script: Script) -> SessionReport:
    return check_read_your_writes(script.events)


def monotonic(script: Script) -> SessionReport:
    return check_monotonic_reads(script.events)


def counts(report: SessionReport) -> tuple[int, int, int]:
    return report.judged, report.skipped, len(report.violations)


# --- read-your-writes: must pass ------------------------------------------------------------


def test_reading_back_the_own_write_or_a_later_one_passes() -> None:
    script = Script().put(WRITER, "k", "a").get(WRITER, "k", "a").put(WRITER, "k", "b")
    script.get(WRITER, "k", "b").delete(WRITER, "k").get(WRITER, "k", None)
    assert counts(ryw(script)) == (3, 0, 0)


def test_an_earlier_info_write_may_land_after_the_acknowledged_one() -> None:
    script = Script().put(WRITER, "k", "a", outcome="info").put(WRITER, "k", "b")
    assert counts(ryw(script.get(WRITER, "k", "a"))) == (1, 0, 0)


def test_other_sessions_and_reads_before_any_write_are_not_held_to_it() -> None:
    script = Script().get(WRITER, "k", None).put(WRITER, "k", "a").get(READER, "k", None)
    assert counts(ryw(script)) == (0, 0, 0)


def test_a_positioned_read_at_or_after_the_write_passes_on_a_shared_key() -> None:
    script = Script().put(WRITER, "k", "a", at=(1, 5)).put(OTHER, "k", "x", at=(1, 6))
    script.get(WRITER, "k", "x", at=(1, 6)).get(WRITER, "k", "a", at=(1, 5))
    assert counts(ryw(script)) == (2, 0, 0)


def test_shared_keys_without_positions_are_skipped() -> None:
    script = Script().put(WRITER, "k", "a").put(OTHER, "k", "x").get(WRITER, "k", "zzz")
    assert counts(ryw(script)) == (0, 1, 0)
    counter = Script().increment(WRITER, "c", 1, 1).get(WRITER, "c", "0")
    assert counts(ryw(counter)) == (0, 1, 0)


def test_a_value_no_write_could_produce_is_skipped_not_reported() -> None:
    script = Script().put(WRITER, "k", "a").put(WRITER, "k", "b", outcome="fail")
    assert counts(ryw(script.get(WRITER, "k", "b"))) == (0, 1, 0)


# --- read-your-writes: must fail ------------------------------------------------------------


def test_reading_an_older_value_after_the_own_write_is_reported() -> None:
    script = Script().put(WRITER, "k", "a").put(WRITER, "k", "b").get(WRITER, "k", "a")
    report = ryw(script)
    assert counts(report) == (1, 0, 1)
    [violation] = report.violations
    assert (violation.process, violation.key, violation.read_index) == (WRITER, "k", 5)
    assert "'a'" in str(violation) and "'b'" in str(violation)


def test_the_key_missing_after_the_own_write_is_reported() -> None:
    script = Script().put(WRITER, "k", "a").get(WRITER, "k", None)
    assert counts(ryw(script)) == (1, 0, 1)
    resurrected = Script().put(WRITER, "k", "a").delete(WRITER, "k").get(WRITER, "k", "a")
    assert counts(ryw(resurrected)) == (1, 0, 1)


def test_a_positioned_read_below_the_own_write_is_reported() -> None:
    # A follower still at (1, 4) served the session that wrote at (1, 5).
    script = Script().put(WRITER, "k", "a", at=(1, 5)).put(OTHER, "k", "x", at=(1, 6))
    script.get(WRITER, "k", "x", at=(1, 4))
    report = ryw(script)
    assert counts(report) == (1, 0, 1)
    assert "[1, 4]" in str(report.violations[0]) and "[1, 5]" in str(report.violations[0])


def test_positions_compare_epoch_first() -> None:
    script = Script().put(WRITER, "k", "a", at=(2, 1)).get(WRITER, "k", "a", at=(1, 9))
    assert counts(ryw(script)) == (1, 0, 1)


def test_a_deposed_leaders_read_below_the_own_increment_is_reported() -> None:
    # A shared counter: the successor (epoch 2) acknowledged the session's increment,
    # then the cut-off leader of epoch 1, its lease stretched by a slow clock, served the
    # session's read from before it. Without positions a shared key cannot be judged.
    script = Script().increment(OTHER, "c", 2, 2, at=(1, 7))
    script.increment(WRITER, "c", 3, 5, at=(2, 8)).get(WRITER, "c", "2", at=(1, 7))
    report = ryw(script)
    assert counts(report) == (1, 0, 1)
    [violation] = report.violations
    assert (violation.process, violation.key, violation.read_index) == (WRITER, "c", 5)
    assert "served at [1, 7], before its own write at [2, 8]" in str(violation)
    unplaced = Script().increment(OTHER, "c", 2, 2).increment(WRITER, "c", 3, 5)
    assert counts(ryw(unplaced.get(WRITER, "c", "2"))) == (0, 1, 0)


def test_a_read_below_the_last_of_several_own_appends_is_reported() -> None:
    script = Script().append(WRITER, "log", "a;", 2, at=(1, 3))
    script.append(WRITER, "log", "b;", 4, at=(1, 6)).get(WRITER, "log", "a;", at=(1, 5))
    assert counts(ryw(script)) == (1, 0, 1)


def test_positions_of_different_keys_are_not_compared() -> None:
    # Read-your-writes is per key: a session's write of one key does not hold its read
    # of another key to that position (the keys may live in different partitions,
    # whose positions do not compare; the history does not say).
    script = Script().put(WRITER, "k", "a", at=(1, 9)).get(WRITER, "other", None, at=(1, 3))
    assert counts(ryw(script)) == (0, 0, 0)


# --- monotonic reads: must pass -------------------------------------------------------------


def test_reads_moving_forward_or_standing_still_pass() -> None:
    script = Script().get(READER, "k", None).put(WRITER, "k", "a").get(READER, "k", "a")
    script.get(READER, "k", "a").put(WRITER, "k", "b").get(READER, "k", "b")
    script.delete(WRITER, "k").get(READER, "k", None)
    assert counts(monotonic(script)) == (4, 0, 0)


def test_an_absent_key_may_be_the_initial_state_or_a_later_delete() -> None:
    script = Script().put(WRITER, "k", "a").delete(WRITER, "k").put(WRITER, "k", "b")
    script.get(READER, "k", None).get(READER, "k", "a").get(READER, "k", None)
    script.get(READER, "k", "b")
    assert counts(monotonic(script)) == (3, 0, 0)


def test_an_info_write_seen_first_may_land_after_a_later_one() -> None:
    script = Script().put(WRITER, "k", "b").put(WRITER, "k", "a", outcome="info")
    script.put(WRITER, "k", "c").get(READER, "k", "c").get(READER, "k", "a")
    assert counts(monotonic(script)) == (1, 0, 0)


def test_positioned_reads_of_a_shared_key_may_repeat_a_position() -> None:
    script = Script().put(WRITER, "k", "a").put(OTHER, "k", "x")
    script.get(READER, "k", "a", at=(1, 3)).get(READER, "k", "x", at=(1, 3))
    script.get(READER, "k", "x", at=(2, 0))
    assert counts(monotonic(script)) == (2, 0, 0)


def test_shared_keys_without_positions_are_skipped_after_the_first_read() -> None:
    script = Script().put(WRITER, "k", "a").put(OTHER, "k", "x")
    script.get(READER, "k", "x").get(READER, "k", "a").get(READER, "k", "x")
    assert counts(monotonic(script)) == (0, 2, 0)


# --- monotonic reads: must fail -------------------------------------------------------------


def test_going_back_to_an_older_value_is_reported() -> None:
    script = Script().put(WRITER, "k", "a").put(WRITER, "k", "b")
    script.get(READER, "k", "b").get(READER, "k", "a")
    report = monotonic(script)
    assert counts(report) == (1, 0, 1)
    [violation] = report.violations
    assert (violation.process, violation.read_index) == (READER, 7)
    assert "'a'" in violation.message


def test_back_to_absent_after_a_value_with_no_delete_is_reported() -> None:
    script = Script().put(WRITER, "k", "a").get(READER, "k", "a").get(READER, "k", None)
    assert counts(monotonic(script)) == (1, 0, 1)


def test_a_value_seen_again_after_its_delete_is_reported() -> None:
    script = Script().put(WRITER, "k", "a").delete(WRITER, "k").put(WRITER, "k", "b")
    script.get(READER, "k", "b").get(READER, "k", None)
    assert counts(monotonic(script)) == (1, 0, 1)


def test_a_positioned_read_below_an_earlier_one_is_reported() -> None:
    script = Script().put(WRITER, "k", "a").put(OTHER, "k", "x")
    script.get(READER, "k", "x", at=(1, 7)).get(READER, "k", "a", at=(1, 2))
    report = monotonic(script)
    assert counts(report) == (1, 0, 1)
    assert "[1, 2]" in str(report.violations[0])


def test_a_read_at_a_deposed_leader_after_one_at_its_successor_is_reported() -> None:
    # A reader routing by a stale map: first the successor, then the cut-off old leader.
    script = Script().increment(WRITER, "c", 1, 1, at=(1, 4))
    script.increment(OTHER, "c", 1, 2, at=(2, 5))
    script.get(READER, "c", "2", at=(2, 5)).get(READER, "c", "1", at=(1, 4))
    report = monotonic(script)
    assert counts(report) == (1, 0, 1)
    assert "served at [1, 4], after a read at [2, 5]" in str(report.violations[0])


def test_one_regression_is_reported_once() -> None:
    script = Script().put(WRITER, "k", "a").put(WRITER, "k", "b")
    script.get(READER, "k", "b").get(READER, "k", "a").get(READER, "k", "a")
    assert counts(monotonic(script)) == (2, 0, 1)
