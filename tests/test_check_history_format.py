"""The history file's optional `position` field and its non-operation records."""

from __future__ import annotations

from pathlib import Path

import pytest

from quorumdb.check.history import (
    HistoryEvent,
    HistoryFormatError,
    LostFoundEntry,
    ReplicaRecord,
    load_history,
    load_history_file,
    loads,
    pair_operations,
    save_history,
)

EVENTS = [
    HistoryEvent(0, 0, 1, "invoke", "put", "k", "a"),
    HistoryEvent(1, 5, 1, "ok", "put", "k", "a", position=(1, 7)),
]
LOST = LostFoundEntry("k", "b", 1, (1, 8))
REPLICA = ReplicaRecord("node0", "default", 3, "ab12", (2, 4))


def test_positions_and_records_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    save_history(path, [*EVENTS, LOST, REPLICA])
    lines = path.read_text().splitlines()
    assert lines[1].endswith('"value": "a", "position": [1, 7]}')
    assert (
        lines[2]
        == '{"type": "lost+found", "key": "k", "value": "b", "epoch": 1, "position": [1, 8]}'
    )
    history = load_history_file(path)
    assert (history.events, history.lost_found, history.replicas) == (EVENTS, [LOST], [REPLICA])


def test_the_event_loader_skips_records_so_old_callers_still_pair(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    save_history(path, [EVENTS[0], LOST, EVENTS[1], REPLICA])
    events = load_history(path)
    assert events == EVENTS
    [operation] = pair_operations(events)
    assert operation.position == (1, 7)


def test_events_without_position_still_load_as_before() -> None:
    line = '{"index": 0, "time_ms": 0, "process": 0, "type": "ok", "f": "get", "key": "k"}'
    [event] = loads(line)
    assert event.position is None and "position" not in event.to_dict()


@pytest.mark.parametrize(
    "line",
    [
        '{"index": 0, "time_ms": 0, "process": 0, "type": "invoke", "f": "get", "key": "k",'
        ' "position": [1, 2]}',
        '{"index": 0, "time_ms": 0, "process": 0, "type": "ok", "f": "get", "key": "k",'
        ' "position": [1]}',
        '{"index": 0, "time_ms": 0, "process": 0, "type": "ok", "f": "get", "key": "k",'
        ' "position": [-1, 2]}',
        '{"type": "lost+found", "key": "k", "value": 3, "epoch": 1}',
        '{"type": "lost+found", "key": "k", "value": "v"}',
        '{"type": "replica", "node": "n", "keyspace": "d", "partition": 0, "digest": "XYZ"}',
        '{"type": "replica", "node": "n", "keyspace": "d", "digest": "ab"}',
        '{"type": "replica", "node": "n", "keyspace": "d", "partition": "0", "digest": "ab"}',
    ],
)
def test_malformed_positions_and_records_raise_the_format_error(line: str) -> None:
    with pytest.raises(HistoryFormatError):
        loads(line)
