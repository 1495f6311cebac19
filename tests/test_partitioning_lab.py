"""The rebalance-cost lab runs from the CLI registry and reproduces the notes' claims."""

from __future__ import annotations

import argparse
import json

import pytest

from quorumdb.lab import command


def run_lab(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["rebalance-cost", *extra])
    status = command.run(args)
    return status, capsys.readouterr().out


def test_json_rows_show_mod_n_moving_most_keys(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run_lab(capsys, "--json", "--keys", "4000", "--seed", "7")
    assert status == 0
    document = json.loads(out)
    rows = {(row["strategy"].split(":")[0], row["nodes"]): row for row in document["rows"]}
    assert {nodes for _, nodes in rows} == {4, 8, 16, 64}
    assert {name for name, _ in rows} == {"mod-n", "fixed", "per-node", "ring", "range"}
    for (name, _), row in rows.items():
        if name == "mod-n":
            assert row["join_moved"] > 0.7
        else:
            assert row["join_moved"] < 0.3
        assert row["join_plan_estimate"] == pytest.approx(row["join_moved"], abs=0.05), name
        assert row["size_skew"] >= 1.0 and row["load_skew"] >= 1.0


def test_table_and_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run_lab(capsys, "--keys", "500")
    assert status == 0 and "join moved" in out and "ring:vnodes=128" in out
    status, _ = run_lab(capsys, "--keys", "5")
    assert status == 2
