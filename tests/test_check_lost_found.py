"""Lost+found accounting against hand-written histories, good and bad."""

from __future__ import annotations

from history_script import Script
from quorumdb.check.history import LostFoundEntry
from quorumdb.check.lost_found import LostFoundReport, check_lost_found

WRITER, READER = 0, 9


def check(script: Script, *entries: tuple[str, str | None]) -> LostFoundReport:
    listed = [LostFoundEntry(key, value, 1) for key, value in entries]
    return check_lost_found(script.events, listed)


def tally(report: LostFoundReport) -> tuple[int, int, int]:
    """(lost, accounted, violations)"""
    return report.lost, report.accounted, len(report.violations)


# --- histories that must pass ---------------------------------------------------------------


def test_nothing_lost_nothing_to_account() -> None:
    report = check(Script().put(WRITER, "k", "a").put(WRITER, "k", "b").get(READER, "k", "b"))
    assert tally(report) == (0, 0, 0) and report.judged_keys == 1


def test_every_gone_acknowledged_write_listed_passes() -> None:
    script = Script().put(WRITER, "k", "a").put(WRITER, "k", "b").put(WRITER, "k", "c")
    report = check(script.get(READER, "k", "a"), ("k", "b"), ("k", "c"))
    assert tally(report) == (2, 2, 0)


def test_a_discarded_delete_is_listed_with_a_null_value() -> None:
    script = Script().put(WRITER, "k", "a").delete(WRITER, "k").get(READER, "k", "a")
    assert tally(check(script, ("k", None))) == (1, 1, 0)


def test_a_delete_that_found_nothing_changed_nothing_and_cannot_be_gone() -> None:
    """`a` was lost before the delete ran (so it found nothing: `existed` false), then a
    replica that still held `a` was made leader: `a` is back, `b` gone and listed. The
    delete wrote nothing, so nothing of it is missing (replication simulation, seed
    30137, mode async, faults partition,one-way,skew)."""
    script = Script().put(WRITER, "k", "a").delete(WRITER, "k", existed=False)
    script = script.put(WRITER, "k", "b").get(READER, "k", "a")
    assert tally(check(script, ("k", "a"), ("k", "b"))) == (1, 1, 0)


def test_listed_writes_never_acknowledged_are_fine_and_counted_apart() -> None:
    script = Script().put(WRITER, "k", "a").put(WRITER, "k", "b", outcome="info")
    script.put(WRITER, "k", "c", outcome="fail").get(READER, "k", "a")
    report = check(script, ("k", "b"), ("k", "c"))
    assert tally(report) == (0, 0, 0) and report.unacknowledged_listed == 2


def test_entries_for_present_or_unknown_writes_are_counted() -> None:
    script = Script().put(WRITER, "k", "a").get(READER, "k", "a")
    report = check(script, ("k", "a"), ("k", "zzz"), ("elsewhere", "v"))
    assert tally(report) == (0, 0, 0)
    assert (report.present_listed, report.unmatched_listed) == (1, 2)


def test_a_final_value_from_an_info_write_may_be_the_newest() -> None:
    script = Script().put(WRITER, "k", "a", outcome="info").put(WRITER, "k", "b")
    assert tally(check(script.get(READER, "k", "a"))) == (0, 0, 0)


def test_keys_that_do_not_fit_or_have_no_final_read_are_skipped() -> None:
    script = Script().put(WRITER, "k", "a").put(1, "k", "b").get(READER, "k", None)
    script.put(WRITER, "unread", "a").increment(WRITER, "c", 1, 1)
    script.increment(WRITER, "mixed", 1, 1).append(1, "mixed", "x;", 2).get(READER, "mixed", None)
    report = check(script)
    assert (report.judged_keys, report.skipped_keys) == (0, 4) and tally(report) == (0, 0, 0)


def test_a_gone_increment_is_listed_with_the_total_it_wrote() -> None:
    """Two writers; the second's increment (total 3) was on a discarded branch: the
    final total is 1, and lost+found holds the 3 the old leader had stored."""
    script = Script().increment(WRITER, "c", 1, 1).increment(1, "c", 2, 3).get(READER, "c", "1")
    report = check(script, ("c", "3"))
    assert tally(report) == (1, 1, 0) and report.judged_keys == 1


def test_increments_at_or_below_the_final_total_are_not_judged() -> None:
    script = Script().increment(WRITER, "c", 3, 3).increment(1, "c", 2, 5).get(READER, "c", "5")
    assert tally(check(script)) == (0, 0, 0)


def test_a_gone_append_is_listed_with_its_whole_value() -> None:
    script = Script().append(WRITER, "log", "0.1;", 4).append(1, "log", "1.1;", 8)
    report = check(script.get(READER, "log", "0.1;"), ("log", "0.1;1.1;"))
    assert tally(report) == (1, 1, 0) and report.judged_keys == 1


# --- histories that must fail ---------------------------------------------------------------


def test_a_gone_increment_missing_from_lost_found_is_reported() -> None:
    script = Script().increment(WRITER, "c", 1, 1).increment(1, "c", 2, 3).get(READER, "c", "1")
    report = check(script, ("c", "2"))  # another total: not this write's
    assert tally(report) == (1, 0, 1)
    [violation] = report.violations
    assert (violation.key, violation.value, violation.final_value) == ("c", "3", "1")


def test_a_gone_append_missing_or_listed_with_another_value_is_reported() -> None:
    script = Script().append(WRITER, "log", "0.1;", 4).append(1, "log", "1.1;", 8)
    script.get(READER, "log", "0.1;")
    assert tally(check(script)) == (1, 0, 1)
    assert tally(check(script, ("log", "1.1;"))) == (1, 0, 1)  # not the value it made


def test_a_gone_acknowledged_write_missing_from_lost_found_is_reported() -> None:
    script = Script().put(WRITER, "k", "a").put(WRITER, "k", "b").put(WRITER, "k", "c")
    report = check(script.get(READER, "k", "a"), ("k", "b"))
    assert tally(report) == (2, 1, 1)
    [violation] = report.violations
    assert (violation.key, violation.value, violation.write_index) == ("k", "c", 5)
    assert "not in lost+found" in str(violation) and "'a'" in str(violation)


def test_a_vanished_key_with_an_empty_lost_found_is_reported() -> None:
    script = Script().put(WRITER, "k", "a").get(READER, "k", None)
    assert tally(check(script)) == (1, 0, 1)


def test_an_entry_for_another_key_does_not_account() -> None:
    script = Script().put(WRITER, "k", "a").get(READER, "k", None)
    assert tally(check(script, ("other", "a"))) == (1, 0, 1)
