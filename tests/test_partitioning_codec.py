"""Layout dictionaries from the metadata log: damaged ones raise only PartitioningError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioning_support import ALL_SPECS, layout_for
from quorumdb.core.partitioning import PartitioningError, layout_from_dict, plan_rebalance

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=4),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ALL_SPECS), st.data())
def test_damaged_layouts_raise_only_the_declared_error(spec: str, data: st.DataObject) -> None:
    layout = layout_for(spec, {"a": 1, "b": 2, "c": 1}, seed=3)
    document = json.loads(json.dumps(layout.to_dict()))
    field = data.draw(st.sampled_from(sorted(document)))
    if data.draw(st.booleans()):
        del document[field]
    else:
        document[field] = data.draw(JSON_VALUES)
    try:
        decoded = layout_from_dict(document)
    except PartitioningError:
        return
    decoded.locate(b"still works")


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(PartitioningError, match="unknown layout strategy 'hash'"):
        layout_from_dict({"strategy": "hash"})


def test_plans_between_strategies_are_refused() -> None:
    fixed = layout_for("fixed:8", {"a": 1}, seed=1)
    ring = layout_for("ring:vnodes=4", {"a": 1}, seed=1)
    with pytest.raises(PartitioningError, match="changing a keyspace's strategy is a migration"):
        plan_rebalance(fixed, ring, {})
    bigger = layout_for("fixed:16", {"a": 1}, seed=1)
    with pytest.raises(PartitioningError, match="create a new keyspace"):
        plan_rebalance(fixed, bigger, {})
