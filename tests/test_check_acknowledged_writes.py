"""The lost-acknowledged-write checker against hand-written histories, good and bad."""

from __future__ import annotations

from pathlib import Path

import pytest

from quorumdb.check.acknowledged_writes import check_acknowledged_writes
from quorumdb.check.history import (
    HistoryEvent,
    HistoryFormatError,
    HistoryValue,
    load_history,
    loads,
    pair_operations,
    save_history,
)

WRITER = 0
READER = 9


class Script:
    """Builds a history one event at a time, with increasing index and time."""

    def __init__(self) -> None:
        self.events: list[HistoryEvent] = []

    def add(
        self,
        process: int,
        kind: str,
        f: str,
        key: str,
        value: HistoryValue = None,
        error: str | None = None,
    ) -> Script:
        index = len(self.events)
        self.events.append(HistoryEvent(index, index * 10, process, kind, f, key, value, error))
        return self

    def put(self, value: str, outcome: str, key: str = "k") -> Script:
        self.add(WRITER, "invoke", "put", key, value)
        error = {"ok": None, "fail": "too-large", "info": "timeout"}[outcome]
        return self.add(WRITER, outcome, "put", key, value, error)

    def delete(self, outcome: str, key: str = "k") -> Script:
        self.add(WRITER, "invoke", "delete", key)
        error = {"ok": None, "fail": "too-large", "info": "timeout"}[outcome]
        return self.add(WRITER, outcome, "delete", key, True if outcome == "ok" else None, error)

    def read(self, got: str | None, key: str = "k", process: int = READER) -> Script:
        self.add(process, "invoke", "get", key)
        return self.add(process, "ok", "get", key, got)


def messages(script: Script) -> list[str]:
    return [violation.message for violation in check_acknowledged_writes(script.events)]


# --- histories that must pass ---------------------------------------------------------------


def test_final_read_of_the_last_acknowledged_value_passes() -> None:
    script = Script().put("a", "ok").put("b", "ok").read("b")
    assert messages(script) == []


def test_a_later_write_with_unknown_outcome_may_be_seen_or_not() -> None:
    assert messages(Script().put("a", "ok").put("b", "info").read("b")) == []
    assert messages(Script().put("a", "ok").put("b", "info").read("a")) == []


def test_an_earlier_unknown_write_may_land_last() -> None:
    # Its forward can still reach the owner after "b" was acknowledged.
    assert messages(Script().put("a", "info").put("b", "ok").read("a")) == []


def test_an_acknowledged_delete_leaves_the_key_absent() -> None:
    assert messages(Script().put("a", "ok").delete("ok").read(None)) == []


def test_a_key_never_acknowledged_may_be_absent() -> None:
    assert messages(Script().put("a", "fail").read(None)) == []


def test_an_unfinished_write_counts_as_unknown() -> None:
    script = Script().put("a", "ok").add(WRITER, "invoke", "put", "k", "b").read("b")
    assert messages(script) == []


def test_keys_with_several_writers_or_other_writes_are_skipped() -> None:
    script = Script().put("a", "ok").add(1, "invoke", "put", "k", "x").add(1, "ok", "put", "k", "x")
    assert messages(script.read("nonsense")) == []
    counter = Script().add(1, "invoke", "increment", "c", 1).add(1, "ok", "increment", "c", 1)
    assert messages(counter.read("7", key="c")) == []


def test_reads_during_the_run_see_the_latest_acknowledged_write() -> None:
    script = Script().read(None).put("a", "ok").read("a").put("b", "ok").read("b").read("b")
    assert messages(script) == []


def test_a_read_overlapping_a_write_may_see_either_value() -> None:
    for seen in ("a", "b"):
        script = Script().put("a", "ok")
        script.add(WRITER, "invoke", "put", "k", "b")
        script.add(READER, "invoke", "get", "k")
        script.add(READER, "ok", "get", "k", seen)
        script.add(WRITER, "ok", "put", "k", "b")
        assert messages(script.read("b")) == []


# --- histories that must fail ---------------------------------------------------------------


def test_a_lost_acknowledged_write_is_reported_with_key_expected_and_got() -> None:
    script = Script().put("a", "ok").put("b", "ok").read("a")
    [violation] = check_acknowledged_writes(script.events)
    assert (violation.key, violation.expected, violation.got) == ("k", "b", "a")
    assert "lost acknowledged write" in violation.message
    assert "'k'" in str(violation)


def test_an_acknowledged_write_that_vanished_is_reported() -> None:
    assert messages(Script().put("a", "ok").read(None)) == ["lost acknowledged write (key missing)"]


def test_a_value_resurrected_after_an_acknowledged_delete_is_reported() -> None:
    assert messages(Script().put("a", "ok").delete("ok").read("a")) == [
        "lost acknowledged write (older value seen)"
    ]


def test_a_failed_write_must_never_be_visible() -> None:
    assert messages(Script().put("a", "ok").put("b", "fail").read("b")) == [
        "a failed write is visible"
    ]


def test_a_value_no_one_wrote_is_reported() -> None:
    assert messages(Script().put("a", "ok").read("zzz")) == ["a value no one wrote is visible"]


def test_a_stale_read_during_the_run_is_reported_even_if_the_end_looks_right() -> None:
    # A duplicated old forward overwrote "b"; "c" later hid the loss from the final read.
    script = Script().put("a", "ok").put("b", "ok").read("a").put("c", "ok").read("c")
    [violation] = check_acknowledged_writes(script.events)
    assert (violation.expected, violation.got) == ("b", "a")
    assert violation.message == "lost acknowledged write (older value seen)"
    assert "read at event 5" in str(violation)


def test_a_value_read_before_its_write_was_invoked_is_reported() -> None:
    assert messages(Script().read("a").put("a", "ok").read("a")) == [
        "a write is visible before it was invoked"
    ]


def test_a_missing_final_read_is_reported() -> None:
    script = Script().read(None).put("a", "ok")
    assert messages(script) == ["no successful read after the last write"]


def test_a_read_overlapping_the_last_write_is_not_final() -> None:
    script = Script()
    script.add(WRITER, "invoke", "put", "k", "a")
    script.add(READER, "invoke", "get", "k")
    script.add(WRITER, "ok", "put", "k", "a")
    script.add(READER, "ok", "get", "k", None)
    assert messages(script) == ["no successful read after the last write"]


def test_each_bad_key_is_reported_in_key_order() -> None:
    script = Script().put("a", "ok", key="y").put("b", "ok", key="x")
    script.read(None, key="y").read(None, key="x")
    assert [violation.key for violation in check_acknowledged_writes(script.events)] == ["x", "y"]


# --- the JSON Lines format ------------------------------------------------------------------


def test_history_round_trips_through_a_file(tmp_path: Path) -> None:
    script = Script().put("a", "ok").put("b", "info").read("b")
    path = tmp_path / "history.jsonl"
    save_history(path, script.events)
    assert load_history(path) == script.events
    first = path.read_text().splitlines()[0]
    assert first == (
        '{"index": 0, "time_ms": 0, "process": 0, "type": "invoke", "f": "put",'
        ' "key": "k", "value": "a"}'
    )


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        '{"index": 0}',
        '{"index": 0, "time_ms": 0, "process": 0, "type": "begin", "f": "get", "key": "k"}',
        '{"index": 0, "time_ms": 0, "process": 0, "type": "ok", "f": "cas", "key": "k"}',
        '{"index": "0", "time_ms": 0, "process": 0, "type": "ok", "f": "get", "key": "k"}',
        '{"index": 0, "time_ms": 0, "process": 0, "type": "ok", "f": "get", "key": "k",'
        ' "error": "timeout"}',
    ],
)
def test_malformed_lines_raise_the_format_error(line: str) -> None:
    with pytest.raises(HistoryFormatError):
        loads(line)


def test_completions_must_pair_with_an_open_invoke() -> None:
    with pytest.raises(HistoryFormatError):
        pair_operations(Script().add(1, "ok", "get", "k").events)
    with pytest.raises(HistoryFormatError):
        pair_operations(Script().add(1, "invoke", "get", "k").add(1, "invoke", "get", "k").events)
