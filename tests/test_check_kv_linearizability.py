"""Linearizability of history files with the key-value model: hand-written histories."""

from __future__ import annotations

from history_script import Script
from quorumdb.check.kv_linearizability import check_history_linearizable
from quorumdb.check.linearizability import Verdict


def verdicts(script: Script, step_limit: int = 100_000) -> dict[str, Verdict]:
    report = check_history_linearizable(script.events, step_limit)
    return {key: result.verdict for key, result in report.results.items()}


LINEARIZABLE = Verdict.LINEARIZABLE
VIOLATION = Verdict.VIOLATION

# --- histories that must pass ---------------------------------------------------------------


def test_puts_deletes_and_reads_in_order_pass() -> None:
    script = Script().get(1, "k", None).put(0, "k", "a").get(1, "k", "a")
    script.delete(0, "k", existed=True).get(1, "k", None).delete(0, "k", existed=False)
    assert verdicts(script) == {"k": LINEARIZABLE}


def test_increments_and_appends_follow_the_model() -> None:
    script = Script().increment(0, "c", 2, 2).increment(1, "c", 3, 5).get(2, "c", "5")
    script.append(0, "l", "ab", 2).append(1, "l", "c", 3).get(2, "l", "abc")
    assert verdicts(script) == {"c": LINEARIZABLE, "l": LINEARIZABLE}


def test_an_info_write_may_take_effect_late_or_never() -> None:
    for seen in ("a", "b"):
        script = Script().put(0, "k", "b", outcome="info").put(0, "k", "a").get(1, "k", seen)
        assert verdicts(script) == {"k": LINEARIZABLE}, seen
    never = Script().increment(0, "c", 5, None).increment(1, "c", 1, 1).get(2, "c", "1")
    assert verdicts(never) == {"c": LINEARIZABLE}


def test_a_failed_write_is_left_out() -> None:
    script = Script().put(0, "k", "a").put(0, "k", "b", outcome="fail").get(1, "k", "a")
    assert verdicts(script) == {"k": LINEARIZABLE}


def test_an_unfinished_operation_counts_as_info() -> None:
    script = Script().put(0, "k", "a").invoke(0, "put", "k", "b").get(1, "k", "b")
    assert verdicts(script) == {"k": LINEARIZABLE}


def test_unobserved_info_appends_are_pruned_without_changing_the_verdict() -> None:
    script = Script()
    for index in range(30):  # 2^30 subsets without the pruning
        script.append(index % 3, "l", f"x{index};", None)
    script.append(0, "l", "ok;", 3).get(1, "l", "ok;")
    assert verdicts(script, step_limit=1_000) == {"l": LINEARIZABLE}


# --- histories that must fail ---------------------------------------------------------------


def test_a_stale_read_is_a_violation() -> None:
    script = Script().put(0, "k", "a").put(0, "k", "b").get(1, "k", "a")
    report = check_history_linearizable(script.events)
    assert report.keys_with(VIOLATION) == ["k"]
    [message] = report.violations
    assert "'k'" in message and "not linearizable" in message
    assert "(events 4..5) cannot take effect" in message  # event indices, not ms


def test_a_failed_write_that_is_visible_is_a_violation() -> None:
    script = Script().put(0, "k", "a", outcome="fail").get(1, "k", "a")
    assert verdicts(script) == {"k": VIOLATION}


def test_wrong_increment_totals_and_append_lengths_are_violations() -> None:
    counter = Script().increment(0, "c", 2, 2).increment(1, "c", 3, 4)
    assert verdicts(counter) == {"c": VIOLATION}
    log = Script().append(0, "l", "ab", 2).append(1, "l", "c", 2)
    assert verdicts(log) == {"l": VIOLATION}
    refused = Script().put(0, "c", "text").increment(1, "c", 1, 1)
    assert verdicts(refused) == {"c": VIOLATION}


def test_a_delete_must_report_whether_the_key_existed() -> None:
    assert verdicts(Script().delete(0, "k", existed=True)) == {"k": VIOLATION}


def test_an_observed_info_append_is_kept() -> None:
    # x; was seen, so it took effect before the read: the later length must count it.
    script = Script().append(0, "l", "x;", None).get(1, "l", "x;").append(2, "l", "y;", 2)
    assert verdicts(script) == {"l": VIOLATION}


def test_the_step_budget_reports_unknown_not_a_violation() -> None:
    script = Script()
    for index in range(16):
        script.invoke(index, "increment", "c", 1)
    for index in range(16):
        script.complete(index, "info", "increment", "c", 1)
    script.get(99, "c", "-1")
    report = check_history_linearizable(script.events, step_limit=500)
    assert report.keys_with(Verdict.UNKNOWN) == ["c"] and report.violations == []
